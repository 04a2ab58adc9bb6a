"""Server lifecycle on loopback: SIGTERM drains in-flight requests; work of disconnected clients is dropped.

The engine is the real Embedder on the tiny random model, wrapped so that each forward pass takes
a known time (that is what makes "in flight" observable).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")

from codesift.serve.app import create_app
from codesift.serve.config import ServeConfig
from codesift.testing import ForwardingEncoder

SLOW_SERVER = textwrap.dedent("""
    import sys, time, uvicorn
    from codesift.model.embedder import Embedder
    from codesift.serve.app import create_app
    from codesift.serve.config import ServeConfig

    class Slow:
        def __init__(self, emb, delay):
            self.emb, self.delay = emb, delay
        def __getattr__(self, name):
            return getattr(self.emb, name)
        def encode(self, texts, **kw):
            time.sleep(self.delay)
            return self.emb.encode(texts, **kw)

    model, port = sys.argv[1], int(sys.argv[2])
    emb = Slow(Embedder(model, device="cpu", dtype="float32"), 2.0)
    app = create_app(ServeConfig(model=model, port=port), embedder=emb)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=20)
""")


class SlowRecorder(ForwardingEncoder):
    """The real Embedder, with a fixed delay per forward pass and a record of the texts it embedded."""

    def __init__(self, emb, delay: float) -> None:
        super().__init__(emb)
        self.delay, self.seen = delay, []

    in_flight = False

    def encode(self, texts, *args, **kw):
        self.in_flight = True
        time.sleep(self.delay)
        self.seen.extend(texts)
        return super().encode(texts, *args, **kw)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become healthy")


def test_shutdown_drains_in_flight_requests(tiny_qwen_dir):
    """In process: uvicorn's SIGTERM handler path (handle_exit) lets the running request finish."""
    from codesift.model.embedder import Embedder
    from codesift.serve.local import background_server

    engine = SlowRecorder(Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32"), delay=1.0)
    app = create_app(ServeConfig(model=str(tiny_qwen_dir)), embedder=engine)
    with background_server(app) as (url, server):
        answers: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{url}/v1/embeddings", json={"input": ["in flight"]}, timeout=30, trust_env=False)))
        sender.start()
        time.sleep(0.3)
        server.handle_exit(signal.SIGTERM, None)
        sender.join(30)
        assert answers and answers[0].status_code == 200
        assert engine.seen == ["in flight"]
        time.sleep(0.3)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health", timeout=1, trust_env=False)


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(tiny_qwen_dir, tmp_path):
    """A real SIGTERM to a server process (slow: the process imports torch and loads a model)."""
    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_SERVER)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_qwen_dir), str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_healthy(url, proc)
        answers: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{url}/v1/embeddings", json={"input": ["def f(): pass", "x = 1"], "encoding_format": "float"},
            timeout=30, trust_env=False)))
        sender.start()
        time.sleep(0.7)  # the request is now on the (2 s) engine
        proc.send_signal(signal.SIGTERM)
        sender.join(30)
        assert answers and answers[0].status_code == 200, answers and answers[0].text
        assert len(answers[0].json()["data"]) == 2
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after draining
        with pytest.raises(httpx.HTTPError):  # and it no longer accepts connections
            httpx.get(f"{url}/health", timeout=1, trust_env=False)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_disconnected_clients_work_is_dropped(tiny_qwen_dir):
    """Clients that give up, whether before their tokens were counted or while queued, cost no forward pass."""
    from codesift.model.embedder import Embedder
    from codesift.serve.local import background_server

    engine = SlowRecorder(Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32"), delay=1.0)
    # one request per forward pass, so that "queued" below surely waits behind "kept"
    app = create_app(ServeConfig(model=str(tiny_qwen_dir), max_wait_ms=0, batching=False), embedder=engine)
    with background_server(app) as (url, _):
        codes: dict[str, int | str] = {}

        def send(name: str, n: int, timeout: float) -> None:
            try:
                codes[name] = httpx.post(f"{url}/v1/embeddings", json={"input": [f"{name} {i}" for i in range(n)]},
                                         timeout=timeout, trust_env=False).status_code
            except httpx.ReadTimeout:
                codes[name] = "gave up"

        threads = []
        for name, n, timeout, pause in [("first", 1, 30, 0.1), ("kept", 1, 30, 0.1), ("early", 4, 0.3, 0.1),
                                         ("queued", 8, 1.3, 0)]:
            threads.append(threading.Thread(target=send, args=(name, n, timeout)))
            threads[-1].start()
            time.sleep(pause)
        for t in threads:
            t.join(30)
        send("after", 1, 30)
        assert codes == {"first": 200, "kept": 200, "early": "gave up", "queued": "gave up", "after": 200}
        seen = {t.split()[0] for t in engine.seen}
        assert seen == {"first", "kept", "after"}  # nothing of "early" or "queued" reached the engine
        metrics = httpx.get(f"{url}/metrics", trust_env=False).text
        assert "codesift_cancelled_requests_total 2.0" in metrics


def test_full_queue_answers_429_with_retry_after(tiny_qwen_dir):
    from codesift.model.embedder import Embedder
    from codesift.serve.local import background_server

    engine = SlowRecorder(Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32"), delay=1.0)
    app = create_app(ServeConfig(model=str(tiny_qwen_dir), max_wait_ms=0, max_queue_requests=1), embedder=engine)
    with background_server(app) as (url, _):
        results: list[int] = []

        def send(text):
            results.append(httpx.post(f"{url}/v1/embeddings", json={"input": [text]}, timeout=30,
                                      trust_env=False).status_code)

        def wait_for(condition, what: str, timeout: float = 20) -> None:
            # Poll instead of sleeping a fixed time: on a loaded machine a request can take a while to arrive.
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                time.sleep(0.02)

        def queue_depth() -> float:
            text = httpx.get(f"{url}/metrics", trust_env=False).text
            line = next(ln for ln in text.splitlines() if ln.startswith("codesift_queue_requests "))
            return float(line.split()[1])

        running = threading.Thread(target=send, args=("on the engine",))
        running.start()
        wait_for(lambda: engine.in_flight, "the first request to reach the engine")
        queued = threading.Thread(target=send, args=("waiting",))
        queued.start()
        wait_for(lambda: queue_depth() >= 1, "the second request to be queued")
        r = httpx.post(f"{url}/v1/embeddings", json={"input": ["one too many"]}, timeout=30, trust_env=False)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
        running.join(30)
        queued.join(30)
        assert results == [200, 200]
