"""A served index can be refreshed (issue 14, finding 9): an authenticated HTTP route, and `codesift index`
and `search` beside the server that has the SQLite store open (never through a URL read from the index folder:
issue 23, finding 3)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("fastapi")

from test_model_hardening import run_main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def indexed(tmp_path, tiny_qwen_dir):
    from codesift.index import IndexConfig, build_index
    from codesift.model.embedder import Embedder

    root = tmp_path / "repo"
    root.mkdir()
    (root / "conf.py").write_text("def parse_config(path):\n    return open(path).read()\n")
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=Embedder(str(tiny_qwen_dir)))
    return root


def test_refresh_route_reindexes_and_needs_the_key(indexed, tiny_qwen_dir):
    from codesift.model.embedder import Embedder
    from codesift.serve.app import create_app
    from codesift.serve.config import ServeConfig
    from codesift.serve.local import background_server

    config = ServeConfig(model=str(tiny_qwen_dir), index_dir=indexed / ".codesift", api_keys=["k1"])
    app = create_app(config, embedder=Embedder(str(tiny_qwen_dir)))
    with background_server(app) as (url, _):
        (indexed / "later.py").write_text("def tokenize_later_words(text):\n    return text.split()\n")
        assert httpx.post(f"{url}/v1/index/refresh", trust_env=False).status_code == 401
        r = httpx.post(f"{url}/v1/index/refresh", headers={"Authorization": "Bearer k1"}, timeout=60,
                       trust_env=False)
        assert r.status_code == 200, r.text
        assert r.json()["report"]["files_changed"] == 1
        r = httpx.post(f"{url}/v1/search", json={"query": "tokenize later words", "mode": "bm25"},
                       headers={"Authorization": "Bearer k1"}, timeout=60, trust_env=False)
        assert r.json()["results"][0]["path"] == "later.py"


def test_index_and_search_work_beside_a_running_server(indexed, tiny_qwen_dir, monkeypatch, capsys):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "codesift.cli", "serve", "--model", str(tiny_qwen_dir),
                             "--index", str(indexed / ".codesift"), "--port", str(port), "--log-level", "warning"],
                            env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # generous: a busy machine loads slowly
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        r = httpx.post(f"{url}/v1/search", json={"query": "parse config"}, timeout=60, trust_env=False)
        assert r.status_code == 200  # the server has the store open now
        assert not (indexed / ".codesift" / "serving.json").exists()  # nothing in the index names a URL

        (indexed / "later.py").write_text("def tokenize_later_words(text):\n    return text.split()\n")
        code, out, err = run_main(["index", str(indexed), "--json"], monkeypatch, capsys)
        assert code == 0, err
        assert json.loads(out)["files_changed"] == 1  # SQLite in WAL mode: a writer beside the server
        code, out, err = run_main(["search", "tokenize later words", str(indexed), "--json", "--mode", "bm25"],
                                  monkeypatch, capsys)
        assert code == 0, err
        assert json.loads(out)[0]["path"] == "later.py"
        (indexed / "third.py").write_text("def third_helper():\n    return 3\n")
        code, out, err = run_main(["index", str(indexed), "--json"], monkeypatch, capsys)
        assert code == 0, err
        r = httpx.post(f"{url}/v1/search", json={"query": "third_helper", "mode": "bm25"}, timeout=60, trust_env=False)
        assert r.status_code == 200 and r.json()["results"][0]["path"] == "third.py"  # the server saw the new rows
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_served_index_deleted_or_restored_under_the_server(indexed, tiny_qwen_dir):
    import shutil

    from codesift.index import IndexConfig, build_index
    from codesift.model.embedder import Embedder
    from codesift.serve.app import create_app
    from codesift.serve.config import ServeConfig
    from codesift.serve.local import background_server

    embedder = Embedder(str(tiny_qwen_dir))
    app = create_app(ServeConfig(model=str(tiny_qwen_dir), index_dir=indexed / ".codesift"), embedder=embedder)
    with background_server(app) as (url, _):
        assert httpx.post(f"{url}/v1/search", json={"query": "parse config"}, trust_env=False,
                          timeout=60).status_code == 200
        shutil.rmtree(indexed / ".codesift")  # git clean -fdx
        r = httpx.post(f"{url}/v1/index/refresh", timeout=60, trust_env=False)
        assert r.status_code == 409 and r.json()["error"]["code"] == "index_gone", r.text
        assert not (indexed / ".codesift").exists()  # nothing written into a deleted file or a new folder
        (indexed / "later.py").write_text("def tokenize_later_words(text):\n    return text.split()\n")
        build_index(indexed, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=embedder)
        r = httpx.post(f"{url}/v1/search", json={"query": "tokenize_later_words", "mode": "bm25"}, timeout=60,
                       trust_env=False)
        assert r.status_code == 200 and r.json()["results"][0]["path"] == "later.py", r.text


def test_serve_takes_the_model_recorded_in_the_index(indexed, tiny_qwen_dir, monkeypatch, capsys):
    import codesift.serve.app

    seen = {}

    def record(config, **kwargs):
        seen["model"] = config.model
        raise ValueError("stop here")

    monkeypatch.setattr(codesift.serve.app, "create_app", record)
    monkeypatch.delenv("CODESIFT_MODEL", raising=False)
    code, _, err = run_main(["serve", "--index", str(indexed / ".codesift")], monkeypatch, capsys)
    assert code == 2 and seen["model"] == str(tiny_qwen_dir), err
