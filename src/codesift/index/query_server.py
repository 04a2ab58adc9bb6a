"""A per-index background query process: how a cold `codesift search` answers in well under a second.

A fresh `codesift search` process would spend seconds importing torch and transformers and loading the model
before its first query. So the CLI asks a small server instead: one
process per index directory, listening on a unix socket (``<index>/query.sock``, or a per-user folder when
that path is too long or not writable). The CLI starts it on demand, then every later `codesift search`
on that index reuses it; it exits after ``CODESIFT_QUERY_SERVER_IDLE_S`` seconds without a request
(default 600).

It is safe to rely on:
- several repositories: one server per index directory, keyed by its resolved path;
- a stale socket (the server was killed): connect fails, the client removes it and starts a new server,
  under a file lock so that two clients never start two servers;
- a changed index: the server re-reads the manifest on every request and refuses to answer (and exits)
  when the model, fingerprint, root or store changed, or when the client runs other codesift code or
  another ``CODESIFT_MODEL``; the client then starts a fresh one. New chunks from `codesift index` (another
  process, writing the same SQLite file in WAL mode) are picked up on the next request: the store's
  generation moved, so it reads the rows added since;
- a Milvus Lite store (``--store-uri x.db``) lets one process hold it, so any other process that opens it
  (`codesift index`, `watch`, `mcp`, `serve`) first asks the server to exit (the Milvus store's rule,
  ``engines.open_store``).

This module is the server; the client (``daemon_client.py``) imports only the standard library, so a search
through the server never loads numpy, torch or pymilvus in the CLI process. A request is a ``SearchRequest`` as
JSON, run by ``CodeIndex.run`` as every other door runs it. BM25-only queries never load torch in the server
either (the model is loaded on the first dense query).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from codesift.index.daemon_client import (
    LOG_NAME,
    MAX_REQUEST_BYTES,
    QueryServerUnavailable,
    identity,
    read_line,
    socket_path,
)
from codesift.index.request import SearchRequest
from codesift.index.search import CodeIndex

log = logging.getLogger(__name__)

IDLE_ENV = "CODESIFT_QUERY_SERVER_IDLE_S"
DEFAULT_IDLE_S = 600.0
READ_TIMEOUT_S = 30.0         # a client sends its whole request at once; each is read in its own thread


def idle_seconds() -> float:
    """``CODESIFT_QUERY_SERVER_IDLE_S`` as a positive number of seconds, else the default (with a warning)."""
    raw = os.environ.get(IDLE_ENV)
    if raw is None:
        return DEFAULT_IDLE_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if value > 0 and value != float("inf"):
        return value
    log.warning("%s=%r is not a positive number of seconds; using %.0f", IDLE_ENV, raw, DEFAULT_IDLE_S)
    return DEFAULT_IDLE_S



# ---------------------------------------------------------------- server
class QueryServer:
    """Answers search requests for one index over a unix socket, one at a time, until idle."""

    def __init__(self, index_dir: str | Path, idle_s: float | None = None) -> None:
        self.index_dir = Path(index_dir).resolve()
        self.idle_s = idle_s if idle_s is not None else idle_seconds()
        self.index = CodeIndex(self.index_dir, release_holder=False)  # it is the holder
        self.loaded = self._index_identity()
        self.identity = identity()
        self.path = socket_path(self.index_dir)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.inode = os.stat(self.path).st_ino
        self.sock.listen(64)
        self.sock.settimeout(0.25)  # how soon a shutdown, an idle exit or a replaced socket is noticed
        self.lock = threading.Lock()  # one request at a time on the index; reading requests is done in parallel
        self.stopping = threading.Event()
        self.busy, self.last = 0, time.monotonic()

    def _index_identity(self) -> dict:
        meta = self.index.manifest.get_meta()
        cfg = meta.get("config", {})
        return {"root": meta.get("root"), "fingerprint": meta.get("fingerprint"), "model": cfg.get("model"),
                "store_uri": cfg.get("store_uri"), "collection": cfg.get("collection"), "vectors": cfg.get("vectors")}

    def _still_ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except FileNotFoundError:
            return False

    def serve_forever(self) -> None:
        """Answer requests until idle, shut down, or no longer the index's server."""
        try:
            while not self.stopping.is_set():
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    idle = not self.busy and time.monotonic() - self.last > self.idle_s
                    if idle or not self._still_ours():
                        return
                    continue
                self.last = time.monotonic()
                threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()
        finally:
            self.stopping.set()
            with self.lock:  # a request in flight finishes first
                self.close()

    def _serve_connection(self, conn: socket.socket) -> None:
        """Read one request (a stalled or flooding client holds up only itself), then answer it under the lock."""
        with conn:
            conn.settimeout(READ_TIMEOUT_S)
            try:
                data = read_line(conn, MAX_REQUEST_BYTES)
            except OSError:
                return
            except ValueError as exc:  # over the size limit
                self._reply(conn, {"ok": False, "type": "user", "error": str(exc)})
                return
            if not data.strip():
                return  # a connection that only checked the socket (or gave up)
            conn.settimeout(None)
            with self.lock:
                if self.stopping.is_set():
                    return
                self.busy += 1
                try:
                    if not self._handle(conn, data):
                        self.stopping.set()
                finally:
                    self.busy -= 1
                    self.last = time.monotonic()

    def close(self) -> None:
        """Release the socket (if it is still ours) and the index (store lock included)."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._still_ours():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.index.close()

    def _handle(self, conn: socket.socket, data: bytes) -> bool:
        """Answer one request; False when the server should exit."""
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: a line nested 100,000 deep
            self._reply(conn, {"ok": False, "type": "user", "error": f"the request is not JSON ({type(exc).__name__})"})
            return True
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str) or not isinstance(msg.get("args", {}), dict):
            self._reply(conn, {"ok": False, "type": "user", "error": 'a request is {"op": str, "args": {...}}'})
            return True
        op = msg.get("op")
        if op == "shutdown":
            self._reply(conn, {"ok": True, "result": None, "pid": os.getpid()})
            return False
        why = None
        if msg.get("identity") != self.identity:
            why = "the client runs other codesift code or model settings"
        elif self.index.replaced():
            why = "the index file was deleted or replaced (restored from a backup?)"
        else:
            try:
                now = self._index_identity()
            except Exception as exc:  # noqa: BLE001 (the index directory was deleted or replaced)
                now = {"error": str(exc)}
            if now != self.loaded:
                why = "the index changed (model, fingerprint, root, store or vector layout)"
        if why:
            log.info("exiting: %s", why)
            self._reply(conn, {"restart": True, "reason": why, "pid": os.getpid()})
            return False
        try:
            from codesift.index.manifest import sqlite_errors

            with sqlite_errors(self.index.manifest.path):  # a damaged, full or read-only index: named, not internal
                result = self._dispatch(op, msg.get("args") or {})
            reply = {"ok": True, "result": result}
        except (ValueError, OSError) as exc:
            reply = {"ok": False, "type": "user", "error": str(exc)}
        except Exception as exc:
            from codesift.model.loading import ModelNotAvailableError

            if isinstance(exc, ModelNotAvailableError):
                reply = {"ok": False, "type": "user", "error": str(exc)}
            else:
                log.exception("request %s failed", op)
                reply = {"ok": False, "type": "internal", "error": f"{type(exc).__name__}: {exc}",
                         "log": str(self.index_dir / LOG_NAME)}
        self._reply(conn, reply)
        return True

    @staticmethod
    def _reply(conn: socket.socket, reply: dict) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def _dispatch(self, op: str, args: dict):
        if op == "ping":
            return {"pid": os.getpid(), "index_dir": str(self.index_dir)}
        if op == "search":  # args: a SearchRequest as JSON, and "refresh": true to re-index what changed first
            fields = dict(args)
            refresh = fields.pop("refresh", False)
            if not isinstance(refresh, bool):
                raise ValueError(f"refresh must be true or false, got {refresh!r}")
            return answer(self.index, SearchRequest.of(**fields), refresh)
        raise ValueError(f"unknown query server request {op!r}")


def answer(ix: CodeIndex, request: SearchRequest, refresh: bool = False) -> dict:
    """One `codesift search` against an open index: results as dicts, plus the staleness seen first (None after
    ``refresh``, which re-indexes what changed first)."""
    stale = None
    if refresh:
        ix.refresh()
    else:
        stale = ix.staleness()
    return {"results": [r.to_dict() for r in ix.run(request)], "staleness": stale}


def main() -> None:
    """``python -m codesift.index.query_server INDEX_DIR``: serve until idle (started by the CLI)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        server = QueryServer(sys.argv[1])
    except (OSError, QueryServerUnavailable) as exc:  # another server bound the socket first
        log.info("not starting: %s", exc)
        sys.exit(1)
    log.info("serving %s on %s (pid %d, idle exit after %.0f s)", server.index_dir, server.path, os.getpid(),
             server.idle_s)
    server.serve_forever()


if __name__ == "__main__":
    main()
