"""Run a server app in a background thread on a free loopback port (tests, notebooks, benchmarks)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx


@contextlib.contextmanager
def background_server(app: Any, drain_timeout_s: float = 5.0, ready_timeout_s: float = 60.0,
                      ) -> Iterator[tuple[str, Any]]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yield (base URL, uvicorn server).

    Waits until ``/health`` answers 200; on exit asks uvicorn to stop as SIGTERM would (drain, then exit).
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    from codesift.serve.http import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, log_level="warning", timeout_graceful_shutdown=int(drain_timeout_s)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="codesift-server")
    thread.start()
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the server at {url} did not become healthy in {ready_timeout_s:g} s")
            time.sleep(0.05)
        yield url, server
    finally:
        server.should_exit = True
        thread.join(drain_timeout_s + 10)
        sock.close()
