"""What codesift takes from a repository or a shared folder and must not trust (issue 23): the query server's
socket folder, planted symlinks for its socket, lock and log, and a committed ``.codesift/serving.json``."""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import threading
from typing import ClassVar

import pytest

from codesift.index import IndexConfig, build_index, daemon_client, query_server
from test_index_query_server import wait_dead
from test_index_ranking import REPO, BagOfWords, make_repo
from test_model_hardening import run_main


def _long_index_dir(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    return deep


# -- the per-user socket folder (finding 2) -----------------------------------------------------------------
def test_a_socket_folder_open_to_others_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    planted = tmp_path / "run" / f"codesift-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)  # what another user leaves for us to use
    with pytest.raises(daemon_client.QueryServerUnavailable, match="mode 0777"):
        daemon_client.socket_path(_long_index_dir(tmp_path))


def test_a_socket_folder_of_another_owner_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    deep = _long_index_dir(tmp_path)
    daemon_client.socket_path(deep)  # made by this process, 0700 ...
    monkeypatch.setattr(os, "getuid", lambda: os.geteuid() + 4242)
    (tmp_path / f"codesift-{os.getuid()}").mkdir(mode=0o700)  # ... but this one is not the "user"'s
    with pytest.raises(daemon_client.QueryServerUnavailable, match="owned by"):
        daemon_client.socket_path(deep)


def test_a_socket_folder_that_is_a_symlink_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / f"codesift-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(daemon_client.QueryServerUnavailable, match="symbolic link"):
        daemon_client.socket_path(_long_index_dir(tmp_path))


def test_search_falls_back_in_process_when_the_socket_folder_is_not_private(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(daemon_client.ENABLE_ENV, "1")
    root = _long_index_dir(tmp_path) / "repo"  # too long a path for a socket in the index: the per-user folder
    make_repo(root, REPO)
    build_index(root, config=IndexConfig(model="bag-of-words"), embedder=BagOfWords())
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    planted = tmp_path / f"codesift-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    code, out, err = run_main(["search", "parse_config", str(root), "--json", "--mode", "bm25"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)[0]["path"] == "src/parse.py"
    assert "searching in this process" in err and "mode 0777" in err
    assert list(planted.iterdir()) == []  # nothing was created in it


def test_planted_lock_and_log_symlinks_are_not_followed(bm25_index, tmp_path, monkeypatch):
    _root, index_dir = bm25_index
    victim = tmp_path / "bashrc"
    victim.write_text("# mine\n")
    (index_dir / daemon_client.LOG_NAME).symlink_to(victim)
    lock = daemon_client.socket_path(index_dir).with_suffix(".lock")
    created = tmp_path / "created-by-victim"
    lock.symlink_to(created)
    with pytest.raises(daemon_client.QueryServerUnavailable, match="symbolic link"):
        daemon_client.request(index_dir, "ping")
    assert victim.read_text() == "# mine\n" and not created.exists()


def test_a_planted_socket_symlink_is_never_dialled(bm25_index, tmp_path, monkeypatch):
    _root, index_dir = bm25_index
    monkeypatch.setattr(daemon_client, "REQUEST_TIMEOUT_S", 5.0)  # the fake never answers
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # someone else's server, answering anything
    fake.bind(str(tmp_path / "fake.sock"))
    fake.listen(8)
    fake.setblocking(False)
    (index_dir / daemon_client.SOCKET_NAME).symlink_to(tmp_path / "fake.sock")
    try:
        pid = daemon_client.request(index_dir, "ping")["pid"]
        with pytest.raises(BlockingIOError):
            fake.accept()  # no client ever connected to it
        path = daemon_client.socket_path(index_dir)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # our own server replaced the link
        assert daemon_client.stop(index_dir) and wait_dead(pid)
    finally:
        fake.close()


# -- a committed .codesift/serving.json (finding 3) ---------------------------------------------------------
class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list] = []

    def do_POST(self):  # the stdlib's name
        self.seen.append((self.path, self.headers.get("Authorization"),
                          self.rfile.read(int(self.headers.get("Content-Length") or 0))))
        body = json.dumps({"results": [], "report": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_committed_serving_json_never_gets_the_key_or_the_query(tmp_path, tiny_qwen_dir, monkeypatch, capsys):
    root = tmp_path / "repo"
    make_repo(root, REPO)
    (root / ".codesift").mkdir()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        (root / ".codesift" / "serving.json").write_text(json.dumps({"url": url, "pid": os.getpid()}))
        monkeypatch.setenv("CODESIFT_API_KEY", "secret-key")
        code, out, err = run_main(["index", str(root), "--model", str(tiny_qwen_dir), "--json"], monkeypatch, capsys)
        assert code == 0, err
        assert json.loads(out)["files_changed"] == len(REPO)  # indexed here, not "through the server"
        code, out, err = run_main(["search", "secret query words", str(root), "--json"], monkeypatch, capsys)
        assert code == 0, err
        assert _Recorder.seen == []
    finally:
        server.shutdown()
        server.server_close()


# -- severe 4: the index file restored from a backup while the query server runs ---------------------------
def test_the_query_server_notices_a_manifest_restored_from_a_backup(bm25_index, tmp_path):
    import shutil
    import sqlite3

    root, index_dir = bm25_index
    backup = tmp_path / "backup.sqlite"
    src, dst = sqlite3.connect(index_dir / "manifest.sqlite"), sqlite3.connect(backup)
    src.backup(dst)
    src.close(), dst.close()
    pid = daemon_client.request(index_dir, "ping")["pid"]  # the server holds the file open
    for p in index_dir.glob("manifest.sqlite*"):
        p.unlink()
    shutil.copy2(backup, index_dir / "manifest.sqlite")  # the documented restore: a new file at the same name
    (root / "src/fresh.py").write_text("def brand_new_helper():\n    return 1\n")
    build_index(root, embedder=BagOfWords())
    hits = daemon_client.request(index_dir, "search", {"query": "brand_new_helper", "mode": "bm25", "limit": 3})
    assert hits["results"] and hits["results"][0]["path"] == "src/fresh.py"
    assert wait_dead(pid)  # the server that read the deleted file made way for a fresh one


# -- the query-server socket (same user): bad messages, floods and stalls ---------------------------------
def _raw(path, payload: bytes, timeout: float = 10.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server stopped reading (a flood): what it answered is below
            pass
        try:
            return sock.recv(1 << 16)
        except OSError:
            return b""


def test_the_query_server_survives_bad_messages(bm25_index):
    _root, index_dir = bm25_index
    pid = daemon_client.request(index_dir, "ping")["pid"]
    path = daemon_client.socket_path(index_dir)
    for payload in (b"", b"[1,2,3]\n", b"null\n", b'"op"\n', b"[" * 100_000 + b"\n", b'{"op": 5, "args": []}\n'):
        answer = _raw(path, payload)
        if payload:
            assert json.loads(answer)["ok"] is False, (payload[:20], answer)
        assert daemon_client.request(index_dir, "ping")["pid"] == pid, payload[:20]
    answer = _raw(path, b"x" * (daemon_client.MAX_REQUEST_BYTES + (1 << 20)))  # no newline, ever
    assert answer == b"" or "too long" in json.loads(answer)["error"]
    assert daemon_client.request(index_dir, "ping")["pid"] == pid


def test_a_stalled_client_does_not_hold_up_others(bm25_index):
    import time

    _root, index_dir = bm25_index
    pid = daemon_client.request(index_dir, "ping")["pid"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.connect(str(daemon_client.socket_path(index_dir)))
        stalled.sendall(b'{"op": "pi')  # and then nothing
        t0 = time.monotonic()
        assert daemon_client.request(index_dir, "ping")["pid"] == pid
        assert time.monotonic() - t0 < 5.0


@pytest.mark.parametrize("idle", ["-5", "nan", "abc"])
def test_a_bad_idle_setting_falls_back_to_the_default(bm25_index, monkeypatch, idle):
    _root, index_dir = bm25_index
    monkeypatch.setenv(query_server.IDLE_ENV, idle)
    assert bm25_query(index_dir)[0]["path"] == "src/parse.py"


def bm25_query(index_dir):
    return daemon_client.request(index_dir, "search", {"query": "parse_config", "mode": "bm25", "limit": 3})["results"]


def test_a_directory_at_the_socket_path_falls_back_in_process(bm25_index, monkeypatch, capsys):
    root, index_dir = bm25_index
    (index_dir / daemon_client.SOCKET_NAME).mkdir()
    code, out, err = run_main(["search", "parse_config", str(root), "--json", "--mode", "bm25"], monkeypatch, capsys)
    assert code == 0, err
    assert "searching in this process" in err and json.loads(out)[0]["path"] == "src/parse.py"
