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
  (`codesift index`, `watch`, `mcp`, `serve`) first asks the server to exit (``stop``).

The client side imports only the standard library: a search through the server never loads numpy,
torch or pymilvus in the CLI process. BM25-only queries never load torch in the server either (the model
is loaded on the first dense query).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "query.sock"
LOG_NAME = "query-server.log"
ENABLE_ENV = "CODESIFT_QUERY_SERVER"        # "0": the CLI searches in-process
IDLE_ENV = "CODESIFT_QUERY_SERVER_IDLE_S"
DEFAULT_IDLE_S = 600.0
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 600.0   # a first dense query loads the model; a --refresh may embed many files
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
MAX_REQUEST_BYTES = 64 << 20  # a request is one JSON line: a query of a whole issue text fits many times over
READ_TIMEOUT_S = 30.0         # a client sends its whole request at once; each is read in its own thread


class QueryServerUnavailable(RuntimeError):
    """No server could be reached or started (the caller may search in-process instead)."""


class QueryServerError(RuntimeError):
    """The server failed on a request for a reason that is not the user's."""


def enabled() -> bool:
    """Whether the CLI should use a query server (``CODESIFT_QUERY_SERVER=0`` turns it off)."""
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off") and hasattr(socket, "AF_UNIX")


def socket_path(index_dir: str | Path) -> Path:
    """Where the server of ``index_dir`` listens: in the index dir, else a private per-user folder."""
    index_dir = Path(index_dir).resolve()
    inside = index_dir / SOCKET_NAME
    if len(str(inside).encode()) <= _MAX_SOCKET_PATH and os.access(index_dir, os.W_OK):
        return inside
    base = private_dir(Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"codesift-{os.getuid()}")
    return base / (hashlib.sha256(str(index_dir).encode()).hexdigest()[:24] + ".sock")


def private_dir(path: Path) -> Path:
    """``path`` as a folder only this user can enter: made here with mode 0700, or checked to be one (owner, mode,
    not a symbolic link); else QueryServerUnavailable. A folder in /tmp may have been made by another user first,
    who could then read the queries, answer them, or plant links for the lock and log files."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise QueryServerUnavailable(f"cannot create the socket folder {path}: {exc.strerror}") from None
    st = os.lstat(path)
    fix = "; remove it, or set XDG_RUNTIME_DIR to a folder of your own"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise QueryServerUnavailable(f"the socket folder {path} is {what}{fix}")
    if st.st_uid != os.getuid():
        raise QueryServerUnavailable(f"the socket folder {path} is owned by uid {st.st_uid}, not by you{fix}")
    if st.st_mode & 0o077:
        raise QueryServerUnavailable(f"the socket folder {path} has mode {stat.S_IMODE(st.st_mode):04o}, "
                                     f"not 0700 (others can use it){fix}")
    return path


def _open_nofollow(path: Path, flags: int) -> int:
    """A file descriptor of ``path`` (created 0600), never through a symbolic link planted at that name."""
    try:
        return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise QueryServerUnavailable(f"{path} is a symbolic link; remove it") from None
        raise QueryServerUnavailable(f"cannot open {path}: {exc.strerror}") from None


def identity() -> dict:
    """What must match between a client and the server it talks to: the code (its path, version and newest
    source file, so an upgrade or an edit restarts the server) and the model settings."""
    import codesift

    code = Path(codesift.__file__).resolve().parent
    newest = max((e.stat().st_mtime_ns for d in (code, *(p for p in code.iterdir() if p.is_dir()))
                  for e in os.scandir(d) if e.name.endswith(".py")), default=0)
    return {"code": str(code), "version": codesift.__version__, "code_mtime_ns": newest,
            "model_env": os.environ.get("CODESIFT_MODEL"), "fallback_env": os.environ.get("CODESIFT_ALLOW_FALLBACK")}


# ---------------------------------------------------------------- client
def request(index_dir: str | Path, op: str, args: dict | None = None, start: bool = True) -> dict:
    """Send one request to the server of ``index_dir`` (starting it if needed); returns its result.

    User mistakes come back as ``ValueError`` with the server's message; a server that cannot be reached
    or started raises ``QueryServerUnavailable``; an internal failure ``QueryServerError``.
    """
    index_dir = Path(index_dir).resolve()
    msg = {"op": op, "args": args or {}, "identity": identity()}
    for _ in range(3):
        sock = _connect(index_dir, start)
        sock.settimeout(REQUEST_TIMEOUT_S)
        try:
            reply = _exchange(sock, msg)
        except TimeoutError:
            raise QueryServerUnavailable(f"the query server did not answer within {REQUEST_TIMEOUT_S:.0f} s") from None
        finally:
            sock.close()
        if reply.get("restart"):  # the server saw that the index or the client differ from what it loaded
            _wait_gone(socket_path(index_dir), reply.get("pid"), 10.0)
            continue
        if reply.get("ok"):
            return reply["result"]
        if reply.get("type") == "user":
            raise ValueError(reply.get("error", "bad request"))
        raise QueryServerError(f"{reply.get('error')} (log: {reply.get('log')})")
    raise QueryServerUnavailable("the query server kept asking for a restart")


def stop(index_dir: str | Path, timeout: float = 10.0) -> bool:
    """Ask the server of ``index_dir`` to exit (it releases the store); True if one was running."""
    try:
        path = socket_path(index_dir)
        sock = _dial(path, timeout=2.0)
    except (OSError, QueryServerUnavailable):
        return False
    sock.settimeout(timeout)  # a server busy with a long request answers after it
    try:
        reply = _exchange(sock, {"op": "shutdown", "args": {}, "identity": identity()})
    except (OSError, ValueError, QueryServerUnavailable):
        reply = {}
    finally:
        sock.close()
    _wait_gone(path, reply.get("pid"), timeout)
    return True


def _dial(path: Path, timeout: float | None) -> socket.socket:
    """A connection to this user's server at ``path``: a socket file of ours (not a link someone planted) whose
    listening process runs as this user; else OSError."""
    st = os.lstat(path)
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
        raise ConnectionRefusedError(f"{path} is not a socket of this user")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        if hasattr(socket, "SO_PEERCRED"):  # Linux: the uid of the process that listens
            _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if uid != os.getuid():
                raise ConnectionRefusedError(f"the server at {path} runs as uid {uid}")
    except OSError:
        sock.close()
        raise
    return sock


def _connect(index_dir: Path, start: bool) -> socket.socket:
    path = socket_path(index_dir)
    with contextlib.suppress(OSError):
        return _dial(path, 2.0)
    if not start:
        raise QueryServerUnavailable(f"no query server for {index_dir}")
    from codesift.index.config import DB_NAME

    if not (index_dir / DB_NAME).is_file():
        raise FileNotFoundError(f"no codesift index at {index_dir}; build one with `codesift index PATH`")
    import fcntl

    lock = _open_nofollow(path.with_suffix(".lock"), os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one client starts the server, the others wait and connect
        with contextlib.suppress(OSError):
            return _dial(path, 2.0)
        try:
            path.unlink()  # a stale socket from a server that died (or a link planted there)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise QueryServerUnavailable(f"cannot remove {path} to start a query server: {exc.strerror}") from None
        log_path = index_dir / LOG_NAME if os.access(index_dir, os.W_OK) else path.with_suffix(".log")
        import codesift

        # the server must run this very code (its identity is checked on every request)
        code_root = str(Path(codesift.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH")) if p))
        log_fd = _open_nofollow(log_path, os.O_WRONLY | os.O_APPEND)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "codesift.index.query_server", str(index_dir)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_fd,
                                    start_new_session=True, close_fds=True, env=env)
        finally:
            os.close(log_fd)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                return _dial(path, 2.0)
            if proc.poll() is not None:
                raise QueryServerUnavailable(f"the query server exited with status {proc.returncode}: "
                                             + " | ".join(_tail(log_path)))
            time.sleep(0.01)
        raise QueryServerUnavailable(f"the query server did not start within {START_TIMEOUT_S:.0f} s (log: {log_path})")
    finally:
        os.close(lock)


def _tail(log_path: Path, lines: int = 3) -> list[str]:
    fd = _open_nofollow(log_path, os.O_RDONLY)
    with open(fd, "rb") as fh:
        return fh.read().decode(errors="replace").strip().splitlines()[-lines:]


def _exchange(sock: socket.socket, msg: dict) -> dict:
    sock.sendall(json.dumps(msg).encode() + b"\n")
    data = _read_line(sock)
    if not data:
        raise QueryServerUnavailable("the query server closed the connection without answering")
    return json.loads(data)


def _read_line(sock: socket.socket, limit: int | None = None) -> bytes:
    """One message: bytes up to a newline or the end of the stream; ValueError past ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            break
        if limit is not None and size > limit:
            raise ValueError(f"the request is too long (over {limit >> 20} MiB without a newline)")
    return b"".join(chunks)


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


def _wait_gone(path: Path, pid: int | None, timeout: float) -> None:
    """Wait until the server process ``pid`` has exited (else until its socket is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
        elif not path.exists():
            return
        time.sleep(0.02)


# ---------------------------------------------------------------- server
class QueryServer:
    """Answers search requests for one index over a unix socket, one at a time, until idle."""

    def __init__(self, index_dir: str | Path, idle_s: float | None = None) -> None:
        from codesift.index.search import CodeIndex

        self.index_dir = Path(index_dir).resolve()
        self.idle_s = idle_s if idle_s is not None else idle_seconds()
        self.index = CodeIndex(self.index_dir, stop_query_server=False)
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
                "store_uri": cfg.get("store_uri"), "collection": cfg.get("collection")}

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
                data = _read_line(conn, MAX_REQUEST_BYTES)
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
                why = "the index changed (model, fingerprint, root or store)"
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
        ix = self.index
        if op == "ping":
            return {"pid": os.getpid(), "index_dir": str(self.index_dir)}
        if op == "search":
            return run_search(ix, **args)
        raise ValueError(f"unknown query server request {op!r}")


def run_search(ix, query: str | None = None, like: str | None = None, files: bool = False, refresh: bool = False,
               config: dict | None = None, **options) -> dict:
    """One `codesift search` against an open CodeIndex: results as dicts, plus the staleness seen first.

    ``config``: SearchConfig fields for this request only (the CLI's --rrf-k, --dense-weight, ...).
    """
    import dataclasses

    from codesift.index.config import SearchConfig

    try:
        ix.search_config = dataclasses.replace(SearchConfig(), **(config or {}))
    except TypeError as exc:
        raise ValueError(f"bad search settings: {exc}") from None
    stale = None
    if refresh:
        ix.refresh()
    else:
        stale = ix.staleness()
    if like:
        file, sep, line = like.rpartition(":")
        if not sep or not file or not line.isdigit():
            raise ValueError(f"--like wants FILE:LINE (e.g. src/app.py:42), got {like!r}")
        keep = {k: options[k] for k in ("limit", "language", "path_globs", "exclude_tests") if k in options}
        results = ix.like(file, int(line), **keep)
    elif files:
        results = ix.search_files(query, **options)
    else:
        results = ix.search(query, **options)
    return {"results": [r.to_dict() for r in results], "staleness": stale}


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
