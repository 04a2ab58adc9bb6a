"""One search, four doors: the CLI (in-process), the query server's wire format, POST /v1/search and the MCP
search tool all build the same ``SearchRequest`` and so answer a query with the same hits."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from typer.testing import CliRunner

from codesift.index import IndexConfig, build_index
from codesift.index.request import SearchRequest
from test_index_ranking import REPO, BagOfWords, make_repo

QUERY = {"query": "parse config", "limit": 3, "mode": "bm25", "path_globs": ["!docs/"]}


@pytest.fixture
def tiny_index(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIFT_QUERY_SERVER", "0")
    root = tmp_path / "repo"
    make_repo(root, REPO)
    build_index(root, config=IndexConfig(model="bag-of-words"), embedder=BagOfWords())
    return root


def cli_paths(root) -> list[str]:
    from codesift.cli import app

    args = ["search", QUERY["query"], str(root), "--json", "-k", str(QUERY["limit"]), "--mode", QUERY["mode"]]
    for glob in QUERY["path_globs"]:
        args += ["--path", glob]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return [h["path"] for h in json.loads(res.stdout)]


def http_paths(root) -> list[str]:
    from fastapi.testclient import TestClient

    from codesift.serve.app import create_app
    from codesift.serve.config import ServeConfig

    app = create_app(ServeConfig(model="bag-of-words", index_dir=root), embedder=BagOfWords())
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = client.post("/v1/search", json=QUERY)
        assert r.status_code == 200, r.text
        bad = client.post("/v1/search", json={**QUERY, "path_globs": ["[z-a]"]})
        assert bad.status_code == 400 and "[z-a]" in bad.json()["error"]["message"]
        return [h["path"] for h in r.json()["results"]]


def mcp_paths(root) -> list[str]:
    pytest.importorskip("mcp")
    from codesift.serve.mcp import build_server

    server = build_server([root], embedder=BagOfWords())
    try:
        args = {"query": QUERY["query"], "limit": QUERY["limit"], "mode": QUERY["mode"],
                "path_glob": QUERY["path_globs"][0]}
        res = anyio.run(server.call_tool, "search_code", args)
        return [h["path"] for h in res.structured_content["results"]]
    finally:
        server._codesift_roots.close()


def test_the_same_query_gets_the_same_hits_through_every_door(tiny_index):
    from codesift.index import open_index

    with open_index(tiny_index, embedder=BagOfWords()) as ix:
        want = [r.path for r in ix.run(SearchRequest(**QUERY))]
        wire = SearchRequest.model_validate_json(json.dumps(SearchRequest(**QUERY).model_dump()))
        assert [r.path for r in ix.run(wire)] == want  # what the query server receives
    assert want and all(not p.startswith("docs/") for p in want)
    assert cli_paths(tiny_index) == want
    assert http_paths(tiny_index) == want
    assert mcp_paths(tiny_index) == want


@pytest.mark.parametrize("fields, needle", [
    ({"query": "  \u200b"}, "empty"), ({}, "empty"), ({"query": "x", "like": "a.py:1"}, "not both"),
    ({"query": "x", "limit": 0}, "limit"), ({"query": "x", "limit": 1001}, "limit"),
    ({"query": "x", "mode": "fuzzy"}, "unknown search mode"), ({"query": "x", "task": "summarize"}, "task"),
    ({"query": "x", "path_globs": ["[z-a]"]}, "[z-a]"), ({"query": "x", "path_globs": [" "]}, "empty path glob"),
    ({"query": "x", "budget": 0}, "budget"), ({"query": "x", "rrf_k": float("nan")}, "--rrf-k"),
    ({"like": "a.py"}, "FILE:LINE"), ({"like": "a.py:0"}, "positive"), ({"query": "x", "index_dir": "/"}, "index_dir"),
])
def test_a_bad_request_is_one_named_error(fields, needle):
    with pytest.raises(ValueError, match=None) as err:
        SearchRequest.of(**fields)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_like_has_its_own_defaults_unless_told():
    like = SearchRequest.of(like="src/a.py:3")
    assert (like.task, like.mode, like.rerank, like.like_target) == ("code2code", "dense", False, ("src/a.py", 3))
    told = SearchRequest.of(like="src/a.py:3", task="code2nl", mode="hybrid", rerank=True)
    assert (told.task, told.mode, told.rerank) == ("code2nl", "hybrid", True)
    assert SearchRequest.of(query="x", language=" Python ", path_globs="src/").model_dump()["path_globs"] == ["src/"]
    assert SearchRequest.of(query="x", language=" Python ").language == "python"
