"""The per-index query server behind a cold `codesift search`: reuse, stale sockets, changed indexes, writes
by another process, idle exit, and imports kept light."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codesift.index import IndexConfig, build_index, daemon_client, query_server
from codesift.index.manifest import Manifest
from test_index_ranking import REPO, BagOfWords, make_repo

SRC = str(Path(__file__).resolve().parents[1] / "src")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def bm25(index_dir: Path, query: str = "parse_config") -> list[dict]:
    return daemon_client.request(index_dir, "search", {"query": query, "mode": "bm25", "limit": 3})["results"]


def test_server_is_reused_and_survives_a_stale_socket(bm25_index):
    _root, index_dir = bm25_index
    path = daemon_client.socket_path(index_dir)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket file nobody listens on: what a killed server leaves behind
    stale.close()
    assert path.exists()
    hits = bm25(index_dir)
    assert hits[0]["path"] == "src/parse.py" and hits[0]["symbol"] == "parse_config"
    pid = daemon_client.request(index_dir, "ping")["pid"]
    assert daemon_client.request(index_dir, "ping")["pid"] == pid
    with pytest.raises(ValueError, match="limit"):
        daemon_client.request(index_dir, "search", {"query": "x", "limit": 0})
    with pytest.raises(ValueError, match="refresh must be true or false"):
        daemon_client.request(index_dir, "search", {"query": "x", "refresh": "yes"})
    assert daemon_client.request(index_dir, "ping")["pid"] == pid  # a user error does not kill the server
    assert daemon_client.stop(index_dir) and wait_dead(pid) and not path.exists()


def test_changed_index_gets_a_fresh_server(bm25_index):
    _root, index_dir = bm25_index
    pid = daemon_client.request(index_dir, "ping")["pid"]
    m = Manifest(index_dir / "manifest.sqlite")
    m.set_meta(fingerprint="another-model")
    m.close()
    new = daemon_client.request(index_dir, "ping")["pid"]
    assert new != pid and wait_dead(pid)
    assert bm25(index_dir)[0]["path"] == "src/parse.py"


def test_indexing_beside_the_server_and_new_files_are_found(bm25_index):
    root, index_dir = bm25_index
    pid = daemon_client.request(index_dir, "ping")["pid"]
    (root / "src/fresh.py").write_text("def brand_new_helper():\n    return 1\n")
    report = build_index(root, embedder=BagOfWords())  # the SQLite store (WAL) admits the server and a writer
    assert report.files_changed == 1
    assert bm25(index_dir, "brand_new_helper")[0]["path"] == "src/fresh.py"
    assert daemon_client.request(index_dir, "ping")["pid"] == pid  # the same server saw the new rows


def test_idle_server_exits(bm25_index, monkeypatch):
    _root, index_dir = bm25_index
    monkeypatch.setenv(query_server.IDLE_ENV, "1")
    pid = daemon_client.request(index_dir, "ping")["pid"]
    assert wait_dead(pid, 30.0) and not daemon_client.socket_path(index_dir).exists()


def test_long_index_paths_use_a_private_socket_folder(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = daemon_client.socket_path(deep)
    assert len(str(path)) <= 100 and path.parent != deep and oct(path.parent.stat().st_mode)[-3:] == "700"
    assert daemon_client.socket_path(deep) == path


def test_cli_search_through_the_server_matches_in_process(tmp_path, tiny_qwen_dir, monkeypatch):
    from codesift.cli import app

    root = tmp_path / "repo"
    make_repo(root, REPO)
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir)))
    run = CliRunner().invoke
    monkeypatch.setenv(daemon_client.ENABLE_ENV, "0")
    args = ["search", "parse config", str(root), "--json", "-k", "5"]
    here = run(app, args)
    assert here.exit_code == 0, here.output
    long = run(app, ["search", "parse config\n" * 3000, str(root), "--json", "--no-rerank", "-k", "3"])
    assert long.exit_code == 0, long.output  # over the model's limit: windows, not an error
    assert len(json.loads(long.stdout)) == 3
    monkeypatch.setenv(daemon_client.ENABLE_ENV, "1")
    try:
        served = run(app, args)
        assert served.exit_code == 0, served.output
        assert json.loads(served.stdout) == json.loads(here.stdout)
        pid = daemon_client.request(root / ".codesift", "ping")["pid"]
        files = run(app, ["search", "parse_config", str(root), "--files", "--json", "--budget", "20"])
        hits = json.loads(files.stdout)
        assert hits[0]["path"] == "src/parse.py" and hits[0]["chunks"]
        bad = run(app, ["search", "x", str(root), "--mode", "fuzzy"])
        assert bad.exit_code != 0 and "unknown search mode" in str(bad.exception)
        assert daemon_client.request(root / ".codesift", "ping")["pid"] == pid
    finally:
        daemon_client.stop(root / ".codesift")


@pytest.mark.parametrize("fields", [
    {"query": "parse config", "limit": 5},
    {"like": "src/parse.py:1"},
    # explain's request: a `like` request with values that are the fields' defaults but not a `like` request's own
    {"like": "src/parse.py:1", "task": "code2nl", "mode": "hybrid", "rerank": True},
])
def test_the_server_is_sent_the_request_the_cli_built_in_one_round_trip(fields, tmp_path, monkeypatch):
    from codesift.index import cli as index_cli
    from codesift.index.request import SearchRequest

    sent = []

    def request(index_dir, op, args=None, start=True):
        sent.append((op, json.loads(json.dumps(args))))  # as it crosses the socket
        return {"results": [], "staleness": None}

    monkeypatch.setenv(daemon_client.ENABLE_ENV, "1")
    monkeypatch.setattr(daemon_client, "request", request)
    want = SearchRequest.of(**fields)
    for refresh in (False, True):
        index_cli._search(tmp_path, want, refresh, use_server=True)
    assert [op for op, _ in sent] == ["search", "search"]  # --refresh re-indexes in the same request
    plain, refreshed = sent[0][1], sent[1][1]
    assert "refresh" not in plain and refreshed.pop("refresh") is True
    assert SearchRequest.of(**plain) == want == SearchRequest.of(**refreshed)


def test_bm25_search_and_the_cli_client_stay_light(bm25_index):
    _root, index_dir = bm25_index
    code = (f"import sys\nsys.path.insert(0, {SRC!r})\n"
            "import codesift.cli, codesift.index.cli, codesift.index.daemon_client\n"
            "assert 'numpy' not in sys.modules and 'torch' not in sys.modules, 'client imports too much'\n"
            "from codesift.index.search import CodeIndex\n"
            f"with CodeIndex({str(index_dir)!r}) as ix:\n"
            "    assert ix.search('parse_config', mode='bm25')[0].path == 'src/parse.py'\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'bm25 loaded the model'\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
