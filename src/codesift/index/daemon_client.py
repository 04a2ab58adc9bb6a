"""The client of an index's query server (``query_server.py``): how `codesift search` asks it, starts it, stops it.

Standard library only: a search through the server never loads numpy, torch or pymilvus in the CLI process. It
knows the server only by its socket and its wire format (one JSON line each way: ``{"op", "args", "identity"}``
in, ``{"ok", "result"}`` or ``{"ok": false, "type", "error"}`` or ``{"restart": true}`` out), never by its code:
it starts one as ``python -m codesift.index.query_server INDEX_DIR``.

- one server per index directory, listening on a unix socket (``<index>/query.sock``, or a per-user folder when
  that path is too long or not writable), keyed by its resolved path;
- a stale socket (the server was killed): connect fails, the client removes it and starts a new server, under a
  file lock so that two clients never start two servers;
- restart on version: every request carries the client's ``identity()`` (code, version, model settings); a server
  that runs other code, or whose index changed, answers ``restart`` and exits, and the client starts a fresh one.
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
import time
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "query.sock"
LOG_NAME = "query-server.log"
ENABLE_ENV = "CODESIFT_QUERY_SERVER"        # "0": the CLI searches in-process
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 600.0   # a first dense query loads the model; a --refresh may embed many files
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
MAX_REQUEST_BYTES = 64 << 20  # a request is one JSON line: a query of a whole issue text fits many times over


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
    data = read_line(sock)
    if not data:
        raise QueryServerUnavailable("the query server closed the connection without answering")
    return json.loads(data)


def read_line(sock: socket.socket, limit: int | None = None) -> bytes:
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


