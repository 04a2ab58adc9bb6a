"""Cold `codesift search`: wall time of a fresh CLI process on a 10k-chunk index, with and without the query server.

    python benchmarks/cold_search.py [--source /usr/lib/python3.11] [--chunks 10000] [--model offline]
                                     [--runs 10] [--workdir /tmp/cs_cold] [--out benchmarks/results/cold_search.json]

Builds (once, kept in --workdir) an index of real Python files with about --chunks chunks, chunked with the
model's own tokenizer. Embedding 10,000 chunks on this 2-core machine would take most of an hour and does
not change what a cold search pays (imports, model load, store and mirror load, one query embedding), so the
chunk vectors are random unit vectors stamped with the real model's fingerprint; the query side runs the
real model. Then it times fresh `codesift search` processes:
- ``in_process``: `--no-server`, what every search cost before the query server (imports, store, model);
- ``server_start``: the first search of a session, which starts the index's query server;
- ``warm_server``: later searches from fresh CLI processes (the target: <= 1.0 s wall), bm25, hybrid, --files
  --json; the first dense search after a start also loads the model in the server (``server_model_load``).
Wall times include Python's own start; ``floor`` times `python -c pass` and `codesift --help` for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from codesift.testing import ForwardingEncoder

QUERIES = ["parse an email header", "open a socket with a timeout", "TextWrapper", "decode base64 data",
           "read a configuration file and return its sections", "retry a request after an error",
           "format a date as a string", "compress bytes with zlib", "walk a directory tree", "escape html entities"]


class RandomVectors(ForwardingEncoder):
    """The real model's tokenizer, dims and fingerprint; random unit vectors instead of its forward pass."""

    def __init__(self, real) -> None:
        super().__init__(real)
        self.rng = np.random.default_rng(0)

    def encode(self, texts, *_, **__):
        v = self.rng.standard_normal((len(texts), self.dimension)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(source: Path, n_chunks: int, workdir: Path, model: str) -> Path:
    """An index of about ``n_chunks`` chunks over packages, then top-level modules, of ``source`` (kept between runs)."""
    from codesift.index import IndexConfig, build_index, open_index
    from codesift.model.embedder import Embedder

    root = workdir / "tree"
    if (root / ".codesift" / "manifest.sqlite").is_file():
        with open_index(root) as ix:
            if ix.status(check_staleness=False)["chunks"] >= n_chunks:
                return root
    emb = None
    skip = ("test", "site-", "__", "idlelib", "lib2to3", "config-", "dist-")
    packages = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(skip))
    modules = sorted(p for p in source.glob("*.py") if not p.name.startswith(skip))
    steps = [[p] for p in packages] + [modules[i:i + 25] for i in range(0, len(modules), 25)]
    for step in steps:
        todo = [p for p in step if not (root / p.name).exists()]
        if not todo:
            continue
        for p in todo:
            if p.is_dir():
                shutil.copytree(p, root / p.name, ignore=shutil.ignore_patterns("test", "tests", "__pycache__", "*.pyc"))
            else:
                (root / p.name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, root / p.name)
        emb = emb or RandomVectors(Embedder(model))
        total = build_index(root, config=IndexConfig(model=model), embedder=emb).chunks_total
        print(f"{step[0].name}{'...' if len(step) > 1 else ''}: {total} chunks", flush=True)
        if total >= n_chunks:
            break
    return root


CPU_S: list[float] = []  # CPU seconds (user + system) of each timed CLI process, in order


def timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of one fresh process (and its CPU seconds appended to CPU_S)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
    return wall, out


def summary(xs: list[float], cpu: list[float]) -> dict:
    return {"n": len(xs), "p50_s": round(statistics.median(xs), 3), "max_s": round(max(xs), 3),
            "min_s": round(min(xs), 3), "cli_cpu_p50_s": round(statistics.median(cpu), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="/usr/lib/python3.11")
    ap.add_argument("--chunks", type=int, default=10000)
    ap.add_argument("--model", default="offline")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--workdir", default="/tmp/cs_cold")
    ap.add_argument("--out", default="benchmarks/results/cold_search.json")
    ap.add_argument("--skip-in-process", action="store_true", help="leave out the slow --no-server baseline")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    root = build(Path(args.source), args.chunks, workdir, args.model)
    from codesift.index import open_index, query_server

    with open_index(root) as ix:
        status = ix.status(check_staleness=False)
    index_dir = root / ".codesift"
    env = dict(os.environ, CODESIFT_MODEL=args.model if args.model == "offline" else os.environ.get("CODESIFT_MODEL", ""))
    env.pop("CODESIFT_QUERY_SERVER", None)
    cli = [sys.executable, "-m", "codesift.cli", "search"]
    out = {"command": " ".join(sys.argv), "model": args.model, "chunks": status["chunks"], "files": status["files"],
           "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(), "python": platform.python_version()}
    out["floor"] = {"python_c_pass_s": round(timed([sys.executable, "-c", "pass"], env)[0], 3),
                    "codesift_help_s": round(timed([sys.executable, "-m", "codesift.cli", "--help"], env)[0], 3)}
    query_server.stop(index_dir)
    out["in_process"] = {}
    for mode in () if args.skip_in_process else ("bm25", "hybrid"):
        out["in_process"][mode] = round(timed(cli + [QUERIES[0], str(root), "--mode", mode, "--no-server"], env)[0], 3)
        out["in_process"][f"{mode}_cpu_s"] = round(CPU_S[-1], 3)
    print("in process", out["in_process"], flush=True)
    query_server.stop(index_dir)
    out["server_start_bm25_s"] = round(timed(cli + [QUERIES[0], str(root), "--mode", "bm25"], env)[0], 3)
    out["server_model_load_hybrid_s"] = round(timed(cli + [QUERIES[0], str(root)], env)[0], 3)
    out["floor"]["cli_cpu_s_of_help"] = round(CPU_S[1], 3)
    warm: dict[str, list[float]] = {"bm25": [], "hybrid": [], "hybrid_files_json": []}
    cpu: dict[str, list[float]] = {k: [] for k in warm}
    for i in range(args.runs):
        q = QUERIES[i % len(QUERIES)]
        warm["bm25"].append(timed(cli + [q, str(root), "--mode", "bm25"], env)[0])
        cpu["bm25"].append(CPU_S[-1])
        warm["hybrid"].append(timed(cli + [q, str(root)], env)[0])
        cpu["hybrid"].append(CPU_S[-1])
        wall, res = timed(cli + [q, str(root), "--files", "--json", "--budget", "800"], env)
        assert json.loads(res.stdout), "no results"
        warm["hybrid_files_json"].append(wall)
        cpu["hybrid_files_json"].append(CPU_S[-1])
    out["warm_server"] = {k: summary(v, cpu[k]) for k, v in warm.items()}
    out["target_s"] = 1.0
    out["target_met"] = all(v["p50_s"] <= 1.0 for v in out["warm_server"].values())
    out["load_avg_at_end"] = os.getloadavg()
    query_server.stop(index_dir)
    print(json.dumps(out, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
