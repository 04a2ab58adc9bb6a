"""The HTTP API against a live uvicorn server on 127.0.0.1, with the real Embedder on a tiny random model.

Vectors are compared with ``Embedder.encode`` of the same texts in float32; batch composition
changes padding, so the tolerance is 1e-5 absolute (unit vectors).
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
from codesift.serve.app import create_app
from codesift.serve.config import ServeConfig
from codesift.serve.local import background_server as live_server

ATOL = 1e-5
CODE = ["def add(a, b):\n    return a + b\n", "print('Hello World!')", "SELECT name FROM users;",
        "class Stack:\n    def push(self, item):\n        self.items.append(item)\n"]


@pytest.fixture(scope="module")
def emb(tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    return Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", max_length=256)


@pytest.fixture(scope="module")
def server(emb, tiny_qwen_dir):
    config = ServeConfig(model=str(tiny_qwen_dir), served_model_name="tiny", max_inputs_per_request=64,
                         max_body_bytes=64 * 1024, max_length=256)
    with live_server(create_app(config, embedder=emb)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=30,
                         http_client=httpx.Client(trust_env=False))


def post(url: str, body, **kw) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{url}/v1/embeddings", content=content, headers={"content-type": "application/json"},
                      timeout=30, trust_env=False, **kw)


# -- OpenAI client --------------------------------------------------------------------------------
def test_openai_client_float(client, emb):
    res = client.embeddings.create(model="tiny", input=CODE, encoding_format="float")
    got = np.array([d.embedding for d in res.data], dtype=np.float32)
    np.testing.assert_allclose(got, emb.encode(CODE, task="nl2code", role="document"), atol=ATOL)
    assert [d.index for d in res.data] == list(range(len(CODE)))
    assert res.usage.prompt_tokens == sum(emb.count_tokens(CODE, task="nl2code", role="document"))
    assert res.model == "tiny"


def test_openai_client_base64_is_its_default_and_decodes_to_the_same_vectors(client, emb):
    res = client.embeddings.create(model="tiny", input="print hello world in python")  # client asks for base64
    got = np.array(res.data[0].embedding, dtype=np.float32)
    np.testing.assert_allclose(got, emb.encode(["print hello world in python"], task="nl2code", role="document")[0],
                               atol=ATOL)


def test_openai_client_dimensions_truncate_then_renormalise(client, emb):
    res = client.embeddings.create(model="tiny", input=CODE[:2], dimensions=16, encoding_format="float")
    got = np.array([d.embedding for d in res.data], dtype=np.float32)
    assert got.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, emb.encode(CODE[:2], task="nl2code", role="document", dim=16), atol=ATOL)


def test_openai_client_sees_errors_as_exceptions(client):
    with pytest.raises(openai.BadRequestError, match="empty list"):
        client.embeddings.create(model="tiny", input=[])
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.embeddings.create(model="/etc/passwd", input="x")


# -- hosted code-embedding API fields -------------------------------------------------------------
def test_task_field_picks_the_query_or_passage_prefix(server, emb):
    texts = ["initialize array of 5 zeros in c++"]
    for task, (name, role) in {"nl2code.query": ("nl2code", "query"), "qa.passage": ("qa", "document"),
                               "code2code_query": ("code2code", "query")}.items():
        r = post(server, {"model": "tiny", "input": texts, "task": task, "embedding_type": "float"})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["data"][0]["embedding"], emb.encode(texts, task=name, role=role)[0],
                                   atol=ATOL)
    q = post(server, {"input": texts, "task": "nl2code.query"}).json()["data"][0]["embedding"]
    p = post(server, {"input": texts, "task": "nl2code.passage"}).json()["data"][0]["embedding"]
    assert not np.allclose(q, p)  # the two sides really use different prefixes


def test_embedding_types_base64_binary_ubinary(server, emb):
    ref = emb.encode(CODE, task="nl2code", role="query")
    body = {"model": "tiny", "input": CODE, "task": "nl2code.query"}
    b64 = post(server, {**body, "embedding_type": "base64"}).json()["data"]
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64])
    np.testing.assert_allclose(got, ref, atol=ATOL)

    bits = np.packbits(ref > 0, axis=1)  # 64 dims -> 8 bytes
    ub = post(server, {**body, "embedding_type": "ubinary"}).json()["data"]
    b = post(server, {**body, "embedding_type": "binary"}).json()["data"]
    assert np.array([d["embedding"] for d in ub]).shape == (len(CODE), 8)
    # a sign flip exactly at 0 cannot happen on these vectors; bits must match exactly
    np.testing.assert_array_equal(np.array([d["embedding"] for d in ub]), bits)
    np.testing.assert_array_equal(np.array([d["embedding"] for d in b]), bits.astype(np.int16) - 128)
    assert min(min(d["embedding"]) for d in b) >= -128 and max(max(d["embedding"]) for d in b) <= 127

    bin16 = post(server, {**body, "embedding_type": "ubinary", "dimensions": 16}).json()["data"]
    assert len(bin16[0]["embedding"]) == 2


def test_over_long_input_is_a_400_naming_it_unless_truncate(server, emb):
    long_text = "x = 1\n" * 400  # well over max_length=256 tokens
    r = post(server, {"input": ["short", long_text], "task": "nl2code.passage"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert "input[1]" in err["message"] and err["param"] == "input[1]" and "truncate" in err["message"]
    r = post(server, {"input": ["short", long_text], "task": "nl2code.passage", "truncate": True,
                      "encoding_format": "float"})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, emb.encode(["short", long_text], task="nl2code", role="document", truncate=True),
                               atol=ATOL)
    assert r.json()["usage"]["prompt_tokens"] <= 2 * 256


# -- every limit and error ------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, needle", [
    (b'{"input": ["a",', 400, "not valid JSON"),
    (b'["a", "b"]', 400, "body"),
    ({"input": 5}, 400, "input"),
    ({"input": ["a", 3]}, 400, "input"),
    ({"input": [[1, 2, 3]]}, 400, "input"),
    ({}, 400, "input"),
    ({"input": "a", "dimensions": "8"}, 400, "dimensions"),
    ({"input": "a", "dimensions": 0}, 400, "dimensions"),
    ({"input": "a", "dimensions": 65}, 400, "larger than"),
    ({"input": "a", "truncate": "yes"}, 400, "truncate"),
    ({"input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": "a", "embedding_type": "int4"}, 400, "embedding_type"),
    ({"input": "a", "encoding_format": "float", "embedding_type": "binary"}, 400, "disagree"),
    ({"input": "a", "task": "poetry.query"}, 400, "unknown task"),
    ({"input": "a", "model": "other-model"}, 404, "not served"),
    ({"input": []}, 400, "empty"),
    ({"input": ["a"] * 65}, 413, "limit of 64"),
])
def test_errors_are_clear_openai_shaped_answers(server, body, status, needle):
    r = post(server, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]


def test_body_over_the_limit_is_413(server):
    r = post(server, {"input": ["y" * 70_000]})
    assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]


def test_unknown_route_is_a_json_404(server):
    r = httpx.get(f"{server}/v1/nope", trust_env=False)
    assert r.status_code == 404 and "error" in r.json()


def test_no_index_means_search_is_404(server):
    r = httpx.post(f"{server}/v1/search", json={"query": "add two numbers"}, trust_env=False)
    assert r.status_code == 404 and "--index" in r.json()["error"]["message"]


# -- other routes ---------------------------------------------------------------------------------
def test_models_info_health_metrics(server, emb):
    models = httpx.get(f"{server}/v1/models", trust_env=False).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    info = httpx.get(f"{server}/info", trust_env=False).json()
    assert info["dimension"] == emb.dimension and info["limits"]["max_inputs_per_request"] == 64
    assert "nl2code.query" in info["tasks"] and "/" not in json.dumps(info["model"])  # no local path leaks
    assert httpx.get(f"{server}/health", trust_env=False).json() == {"status": "ok"}
    post(server, {"input": ["metrics please"]})
    text = httpx.get(f"{server}/metrics", trust_env=False).text
    for name in ("codesift_requests_total", "codesift_request_duration_seconds_bucket", "codesift_batch_tokens_bucket",
                 "codesift_embedded_tokens_total", "codesift_queue_requests", "codesift_queue_tokens"):
        assert name in text
    assert 'codesift_requests_total{route="/v1/embeddings",status="200"}' in text


def test_cors_is_off_by_default(server):
    r = httpx.options(f"{server}/v1/embeddings", headers={"Origin": "https://evil.example",
                                                          "Access-Control-Request-Method": "POST"}, trust_env=False)
    assert "access-control-allow-origin" not in r.headers


# -- concurrency ----------------------------------------------------------------------------------
def test_concurrent_requests_get_exactly_the_vectors_of_encode(server, emb):
    rng = np.random.default_rng(0)
    words = ["def", "return", "class", "import", "for", "while", "if", "else", "print", "self", "value", "list", "dict", "numpy", "zeros"]
    jobs = []
    for i in range(24):
        n = int(rng.choice([1, 2, 5, 12]))
        texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(n)]
        task = ["nl2code.query", "nl2code.passage", "qa.query"][i % 3]
        dims = [None, 32][i % 2]
        jobs.append((texts, task, dims))

    def call(job):
        texts, task, dims = job
        body = {"input": texts, "task": task, "encoding_format": "base64"}
        if dims:
            body["dimensions"] = dims
        r = post(server, body)
        assert r.status_code == 200, r.text
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]])

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, jobs))
    for (texts, task, dims), got in zip(jobs, results):
        name, _, side = task.partition(".")
        want = emb.encode(texts, task=name, role=side, dim=dims)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=ATOL)


# -- security -------------------------------------------------------------------------------------
def test_bearer_keys_guard_everything_but_health(emb, tiny_qwen_dir):
    config = ServeConfig(model=str(tiny_qwen_dir), served_model_name="tiny", api_keys=["s3cret", "other"])
    with live_server(create_app(config, embedder=emb)) as (url, _):
        assert httpx.get(f"{url}/health", trust_env=False).status_code == 200
        for path in ("/v1/models", "/info", "/metrics"):
            assert httpx.get(f"{url}{path}", trust_env=False).status_code == 401
        r = httpx.post(f"{url}/v1/embeddings", json={"input": "x"}, trust_env=False)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = httpx.post(f"{url}/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer wrong"},
                       trust_env=False)
        assert r.status_code == 401
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="other", max_retries=0,
                             http_client=httpx.Client(trust_env=False))
        assert len(good.embeddings.create(model="tiny", input="x").data[0].embedding) == emb.dimension
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0,
                            http_client=httpx.Client(trust_env=False))
        with pytest.raises(openai.AuthenticationError):
            bad.embeddings.create(model="tiny", input="x")


def test_non_loopback_bind_requires_a_key():
    with pytest.raises(ValueError, match="API key"):
        ServeConfig(host="0.0.0.0")
    ServeConfig(host="0.0.0.0", api_keys=["k"])
    ServeConfig(host="::1")


def test_cors_on_when_origins_are_given(emb, tiny_qwen_dir):
    from fastapi.testclient import TestClient

    app = create_app(ServeConfig(model=str(tiny_qwen_dir), cors_origins=["https://ok.example"]), embedder=emb)
    with TestClient(app) as c:
        r = c.options("/v1/embeddings", headers={"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"})
        assert r.headers.get("access-control-allow-origin") == "https://ok.example"


def test_health_is_503_while_the_model_loads(emb, tiny_qwen_dir, monkeypatch):
    from fastapi.testclient import TestClient

    import codesift.serve.app as serve_app

    release = threading.Event()

    def slow_load(config):
        release.wait(20)
        return emb

    monkeypatch.setattr(serve_app, "_load_engine", slow_load)
    app = create_app(ServeConfig(model=str(tiny_qwen_dir)))
    with TestClient(app) as c:
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading" and "retry-after" in r.headers
        r = c.post("/v1/embeddings", json={"input": "x"})
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
        release.set()
        deadline = time.monotonic() + 10
        while c.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.post("/v1/embeddings", json={"input": "x"}).status_code == 200


# -- search ---------------------------------------------------------------------------------------
def test_search_over_http_matches_the_library(emb, tiny_qwen_dir, tmp_path):
    from codesift.index import IndexConfig, build_index, open_index

    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "config.py").write_text('def parse_config(path):\n    """Read a config file."""\n'
                                            "    with open(path) as fh:\n        return fh.read()\n")
    (root / "pkg" / "stack.py").write_text("class Stack:\n    def push(self, item):\n        self.items.append(item)\n")
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=emb)
    with open_index(root, embedder=emb) as ix:
        want = [r.to_dict() for r in ix.search("read a config file", limit=5, path_globs=["pkg/*.py"])]
    assert want
    app = create_app(ServeConfig(model=str(tiny_qwen_dir), index_dir=root), embedder=emb)
    with live_server(app) as (url, _):
        r = httpx.post(f"{url}/v1/search", json={"query": "read a config file", "limit": 5, "path_globs": ["pkg/*.py"]},
                       timeout=30, trust_env=False)
        assert r.status_code == 200, r.text
        assert r.json()["results"] == want
        assert {"path", "start_line", "end_line", "score", "snippet"} <= set(r.json()["results"][0])
        long_query = "Traceback (most recent call last):\n" + "  File \"pkg/config.py\", in parse_config\n" * 500
        r = httpx.post(f"{url}/v1/search", json={"query": long_query, "files": True, "budget": 10}, timeout=60,
                       trust_env=False)
        assert r.status_code == 200, r.text
        files = r.json()["results"]
        assert files[0]["path"] == "pkg/config.py" and files[0]["chunks"] and len(files[0]["snippet"].split()) <= 10
        for body, needle in [({"query": ""}, "query"), ({"query": "x", "limit": 0}, "limit"),
                             ({"query": "x", "budget": 0}, "budget"),
                             ({"query": "x", "limit": 101}, "maximum"), ({"query": "x", "mode": "magic"}, "mode"),
                             ({"query": "x", "index_dir": "/etc"}, "index_dir")]:
            r = httpx.post(f"{url}/v1/search", json=body, timeout=30, trust_env=False)
            assert r.status_code == 400 and needle in r.json()["error"]["message"], (body, r.text)
