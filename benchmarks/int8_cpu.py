"""The int8 CPU path against the torch paths, side by side in one run: engine throughput and `codesift index`.

    python benchmarks/int8_cpu.py [--model codesift-mini] [--dtypes bfloat16,float32,int8] [--texts 200]
                                  [--lines 20000] [--rounds 2] [--out benchmarks/results/int8_cpu.json]

1. Engine: ``--texts`` functions of the installed Python standard library (seeded sample, the corpus of
   embed_throughput.py), embedded as nl2code documents by ``Embedder.encode`` once per dtype and round,
   the dtypes interleaved within each round (other jobs on a shared machine slow them alike). Figures:
   best tokens/s and chunks/s, process CPU seconds, and cosine against float32 (min and mean).
2. End to end: a tree of the first ``--lines`` lines of the standard library, indexed from nothing by
   ``codesift index --dtype D`` as a separate process (exactly what a user runs), once per dtype and round,
   interleaved. Figures: wall seconds, chunks/s, the index report's embedding seconds, peak resident memory.

The int8 export is made (and cached) before the clock starts: the figures are of later runs, which read
the cache. The load average is recorded before and after, as the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_throughput import stdlib_functions  # noqa: E402
from index_throughput import make_tree  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def engine_round(embedders: dict, texts: list[str], tokens: int) -> dict:
    """One encode of ``texts`` per dtype, in the given order: wall and CPU seconds, vectors."""
    out = {}
    for dtype, emb in embedders.items():
        wall, cpu = time.perf_counter(), time.process_time()
        vecs = emb.encode(texts, task="nl2code", role="document", truncate=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out[dtype] = {"seconds": wall, "cpu_seconds": cpu, "tokens_per_s": tokens / wall,
                      "chunks_per_s": len(texts) / wall, "vectors": vecs}
    return out


def index_run(tree: Path, work: Path, model: str, dtype: str) -> dict:
    """`codesift index TREE --dtype DTYPE` from nothing, as a child process: wall time, report, peak memory."""
    index_dir = work / f"index-{dtype}"
    shutil.rmtree(index_dir, ignore_errors=True)
    exe = shutil.which("codesift", path=str(Path(sys.executable).parent)) or "codesift"
    cmd = [exe, "index", str(tree), "--index", str(index_dir), "--model", model, "--dtype", dtype, "--json"]
    wall = time.perf_counter()
    # each run in its own process, so that peak memory is its own: a Popen + wait4 gives the child's rusage
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - wall
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"`{' '.join(cmd)}` failed with {os.waitstatus_to_exitcode(status)}")
    report = json.loads(stdout)
    return {"seconds": wall, "chunks": report["chunks_embedded"], "chunks_per_s": report["chunks_embedded"] / wall,
            "embed_seconds": report["embed_seconds"], "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "command": " ".join(["codesift", *cmd[1:]])}


def best(rows: list[dict], key: str, high: bool = True) -> float:
    values = [r[key] for r in rows]
    return max(values) if high else min(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="codesift-mini")
    ap.add_argument("--dtypes", default="bfloat16,float32,int8")
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--lines", type=int, default=20_000, help="tree size of the end-to-end index runs (0: skip them)")
    ap.add_argument("--index-dtypes", default="bfloat16,int8", help="the dtypes of the end-to-end index runs")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "int8_cpu.json"))
    args = ap.parse_args()

    from codesift import Embedder
    from codesift.model.device import cpu_flags

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    load_before = os.getloadavg()
    embedders = {d: Embedder(args.model, device="cpu", dtype=d) for d in dtypes}  # int8: exported/cached here
    ref = embedders.get("float32") or Embedder(args.model, device="cpu", dtype="float32")
    texts = stdlib_functions(args.texts)
    first = next(iter(embedders.values()))
    lengths = [min(n, first.max_length) for n in first.count_tokens(texts, task="nl2code", role="document")]
    tokens = sum(lengths)
    for emb in embedders.values():  # warm-up
        emb.encode(texts[:16], task="nl2code", role="document", truncate=True)

    engine: dict[str, list[dict]] = {d: [] for d in dtypes}
    for r in range(args.rounds):
        order = dtypes if r % 2 == 0 else dtypes[::-1]  # alternate the order: no dtype always runs first
        got = engine_round({d: embedders[d] for d in order}, texts, tokens)
        for d in dtypes:
            engine[d].append(got[d])
        print(f"engine round {r + 1}: " + ", ".join(f"{d} {got[d]['tokens_per_s']:.0f} tok/s" for d in dtypes),
              file=sys.stderr, flush=True)
    reference = engine["float32"][-1]["vectors"] if "float32" in engine else \
        ref.encode(texts, task="nl2code", role="document", truncate=True)
    del embedders, ref

    index_dtypes = [d.strip() for d in args.index_dtypes.split(",") if d.strip()]
    index: dict[str, list[dict]] = {d: [] for d in dtypes}
    tree_facts = None
    if args.lines:
        with tempfile.TemporaryDirectory(prefix="cs-int8-") as tmp:
            work = Path(tmp)
            n_files, n_lines = make_tree(work / "tree", args.lines)
            tree_facts = {"files": n_files, "lines": n_lines}
            for r in range(args.rounds):
                for d in (index_dtypes if r % 2 == 0 else index_dtypes[::-1]):
                    index[d].append(index_run(work / "tree", work, args.model, d))
                    print(f"index round {r + 1}, {d}: {index[d][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)

    base = "bfloat16" if "bfloat16" in dtypes else dtypes[0]
    table = {}
    for d in dtypes:
        vecs = engine[d][-1]["vectors"]
        cos = np.sum(vecs * reference, axis=1)
        row = {"tokens_per_s": best(engine[d], "tokens_per_s"), "chunks_per_s": best(engine[d], "chunks_per_s"),
               "cpu_seconds": best(engine[d], "cpu_seconds", high=False),
               "cos_vs_float32_min": float(cos.min()), "cos_vs_float32_mean": float(cos.mean()),
               "rounds": [{k: v for k, v in x.items() if k != "vectors"} for x in engine[d]]}
        if index[d]:
            row["index"] = {"seconds": best(index[d], "seconds", high=False),
                            "chunks_per_s": best(index[d], "chunks_per_s"),
                            "embed_seconds": best(index[d], "embed_seconds", high=False),
                            "peak_rss_mb": max(x["peak_rss_mb"] for x in index[d]), "rounds": index[d]}
        table[d] = row
    for d in dtypes:
        table[d]["engine_speedup_vs_" + base] = table[d]["tokens_per_s"] / table[base]["tokens_per_s"]
        if index[d] and index[base]:
            table[d]["index_speedup_vs_" + base] = table[base]["index"]["seconds"] / table[d]["index"]["seconds"]

    result = {"command": " ".join(["benchmarks/int8_cpu.py", *sys.argv[1:]]), "model": args.model,
              "texts": len(texts), "tokens": tokens, "tree": tree_facts, "results": table,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "cpu_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))), "python": platform.python_version(),
                          "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                          "peak_rss_mb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'dtype':10} {'tok/s':>8} {'chunks/s':>9} {'x ' + base:>10} {'cos min':>8} {'cos mean':>9} "
          f"{'index s':>8} {'idx chunks/s':>12} {'idx x':>6} {'peak MB':>8}")
    for d, row in table.items():
        ix = row.get("index", {})
        print(f"{d:10} {row['tokens_per_s']:8.0f} {row['chunks_per_s']:9.2f} {row['engine_speedup_vs_' + base]:10.2f} "
              f"{row['cos_vs_float32_min']:8.4f} {row['cos_vs_float32_mean']:9.5f} {ix.get('seconds', 0):8.1f} "
              f"{ix.get('chunks_per_s', 0):12.2f} {row.get('index_speedup_vs_' + base, 0):6.2f} "
              f"{ix.get('peak_rss_mb', 0):8.0f}")
    print(f"load average before {load_before}, after {os.getloadavg()}; wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
