"""Regression tests of the adversarial run against `codesift serve` (issue 14): hostile or careless
clients get one clear 4xx, never a 500, a leak of local paths, or a server that hangs on them."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")

from codesift.serve.app import create_app
from codesift.serve.config import ServeConfig
from codesift.serve.local import background_server
from codesift.testing import ForwardingEncoder


@pytest.fixture(scope="module")
def emb(tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    return Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", max_length=256)


@pytest.fixture(scope="module")
def live(emb, tiny_qwen_dir):
    config = ServeConfig(model=str(tiny_qwen_dir), served_model_name="tiny", max_length=256, body_timeout_s=1.0,
                         big_request_chars=10_000)
    app = create_app(config, embedder=emb)
    with background_server(app) as (url, _):
        yield url, app


def post(url: str, body: bytes | str | dict, timeout: float = 30) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{url}/v1/embeddings", content=content, headers={"content-type": "application/json"},
                      timeout=timeout, trust_env=False)


def metric(url: str, route: str, status: str) -> float:
    text = httpx.get(f"{url}/metrics", trust_env=False).text
    m = re.search(rf'codesift_requests_total{{route="{re.escape(route)}",status="{status}"}} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


# -- finding 1: text that is not valid Unicode -----------------------------------------------------------
@pytest.mark.parametrize("raw, param", [
    (b'{"input": "\\ud800abc"}', "input"),
    (b'{"input": ["fine", "cut emoji \\ud83d"]}', "input[1]"),
    (b'{"input": ["\\udfff"]}', "input[0]"),
])
def test_lone_surrogates_are_a_400_naming_the_item(live, raw, param):
    url, _ = live
    r = post(url, raw)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == "invalid_text" and "surrogate" in err["message"]


def test_invalid_utf8_bytes_in_the_body_are_a_400(live):
    url, _ = live
    r = post(url, b'{"input": "caf\xe9"}')
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_an_error_quoting_a_surrogate_is_still_json(live):
    url, _ = live
    r = post(url, b'{"input": "x", "task": "\\ud800.query"}')
    assert r.status_code == 400
    assert "unknown task" in r.json()["error"]["message"]


# -- finding 12: empty input is rejected, as OpenAI and TEI do ---------------------------------------------
@pytest.mark.parametrize("body, param", [({"input": ""}, "input"), ({"input": ["a", ""]}, "input[1]")])
def test_empty_strings_are_a_400(live, body, param):
    url, _ = live
    r = post(url, body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert r.json()["error"]["code"] == "empty_input"


def test_whitespace_is_text(live):
    url, _ = live
    assert post(url, {"input": " "}).status_code == 200


# -- finding 6: a client that goes away is a 499 in /metrics, not a 500 -------------------------------------
def test_client_closing_mid_body_counts_as_499(live):
    url, _ = live
    before_500, before_499 = metric(url, "/v1/embeddings", "500"), metric(url, "/v1/embeddings", "499")
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{")
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while metric(url, "/v1/embeddings", "499") == before_499 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(url, "/v1/embeddings", "499") == before_499 + 1
    assert metric(url, "/v1/embeddings", "500") == before_500


# -- finding 12: a body that never arrives ends in a 408 --------------------------------------------------
def test_a_stalled_body_gets_408(live):
    url, _ = live
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"inp")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"body_timeout" in reply


# -- finding 7: a huge input is refused without tokenizing it whole; small requests do not wait -----------
def test_a_5mb_input_is_refused_or_truncated_like_a_short_one(live, emb):
    url, _ = live
    huge = "def f(x):\n    return x + 1\n" * 200_000  # 5.4 MB, under the body limit
    r = post(url, {"input": huge})
    assert r.status_code == 400 and r.json()["error"]["code"] == "input_too_long"
    r = post(url, {"input": huge, "truncate": True, "encoding_format": "float"})
    assert r.status_code == 200, r.text
    head = huge[: 256 * 16]  # holds far more than max_length tokens: truncation keeps the same tokens
    want = emb.encode([head], task="nl2code", role="document", truncate=True)[0]
    np.testing.assert_allclose(np.array(r.json()["data"][0]["embedding"], dtype=np.float32), want, atol=1e-5)
    assert r.json()["usage"]["prompt_tokens"] == 256


def test_small_requests_do_not_wait_behind_a_big_ones_token_count(live):
    url, app = live
    state = app.state.codesift
    entered, release = threading.Event(), threading.Event()
    real = state.count_tokens_big

    def stuck(texts, **kw):  # the big lane is busy for as long as the test wants
        entered.set()
        release.wait(30)
        return real(texts, **kw)

    state.count_tokens_big = stuck
    try:
        big = threading.Thread(target=post, args=(url, {"input": "y = 2\n" * 5000}))
        big.start()
        assert entered.wait(10)
        r = post(url, {"input": "x = 1"}, timeout=10)
        assert r.status_code == 200  # answered while the big request is still being counted
        assert big.is_alive()
    finally:
        release.set()
        state.count_tokens_big = real
    big.join(30)


# -- finding 8: a failed load exits; unauthenticated answers never show paths or exception text -----------
def test_a_failed_load_is_reported_without_paths_and_calls_the_stop_hook(tmp_path):
    from fastapi.testclient import TestClient

    secret = tmp_path / "secret-models" / "mine"
    stopped = threading.Event()
    app = create_app(ServeConfig(model=str(secret)), on_load_failure=stopped.set)
    with TestClient(app) as c:
        assert stopped.wait(30)
        r = c.get("/health")
        assert r.status_code == 503 and r.json() == {"status": "failed"}
        r = c.post("/v1/embeddings", json={"input": "x"})
        assert r.status_code == 503
        for body in (c.get("/health").text, r.text, c.get("/info").text):
            assert "secret-models" not in body and str(tmp_path) not in body and "Error" not in body


def test_serve_exits_non_zero_when_the_model_cannot_load(tmp_path, monkeypatch, capsys):
    from codesift.cli import main

    monkeypatch.setattr("sys.argv", ["codesift", "serve", "--model", str(tmp_path / "no-such-model"),
                                     "--port", str(_free_port()), "--log-level", "critical"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_engine_failures_do_not_leak_exception_text(emb, tiny_qwen_dir):
    class Broken(ForwardingEncoder):
        def encode(self, texts, *args, **kw):
            raise RuntimeError("/home/someone/private/weights.bin is corrupt")

    app = create_app(ServeConfig(model=str(tiny_qwen_dir), max_length=256), embedder=Broken(emb))
    with background_server(app) as (url, _):
        r = post(url, {"input": "x"})
    assert r.status_code == 500 and "private" not in r.text and "RuntimeError" not in r.text
    assert r.json()["error"]["code"] == "engine_error"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- issue 23: headers are read against a deadline and a size limit, before any auth ----------------------
def _recv_all(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return out
        if not chunk:
            return out
        out += chunk


def test_slow_headers_are_cut_off(emb, tiny_qwen_dir, monkeypatch):
    from codesift.serve import http

    monkeypatch.setattr(http, "HEADER_TIMEOUT_S", 1.0)
    app = create_app(ServeConfig(model=str(tiny_qwen_dir)), embedder=emb)
    with background_server(app) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and a header line now and then, never the end
        t0 = time.monotonic()
        for _ in range(3):
            time.sleep(0.5)
            for sock in slow:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
        for sock in slow:
            _recv_all(sock)  # returns when the server closed it
            sock.close()
        assert time.monotonic() - t0 < 5.0
        assert httpx.get(f"{url}/health", trust_env=False).status_code == 200


def test_huge_headers_are_refused(live):
    url, _ = live
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n")
        except OSError:
            pass  # the server closed the connection before the whole header arrived
        answer = _recv_all(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]
