"""One-process embedding against `codesift embed --ray local`: the same corpus, the same model, one run each.

    python benchmarks/ray_embed.py [--limit 4000] [--workers 2] [--model codesift-mini] [--shard-size 256]

Corpus: functions of the installed Python standard library (seeded sample, the corpus of
embed_throughput.py), embedded as nl2code documents (over-long ones cut at the model's limit).

1. One process: ``Embedder`` on all the machine's cores (what ``codesift embed`` does): model load, then encode.
2. Ray: ``embed_on_ray`` with ``--ray local`` and ``--workers`` workers (what ``codesift embed --ray local``
   does): startup (Ray, and the model loaded in each worker, in parallel), then the shards.

Figures per mode: startup and embedding seconds, texts/s, and texts/s per worker: the figure that
docs/distributed.md multiplies out for N machines. Also the largest difference between the two modes'
vectors. The load average is recorded before and after, as the machine may be shared: run it on an
idle one. Prints a table and writes JSON to benchmarks/results/ray_embed[-TAG].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

RESULTS = Path(__file__).resolve().parent / "results"


def one_process(texts: list[str], args) -> tuple[dict, np.ndarray]:
    """Load the model and encode, in this process, on all the cores torch uses by default."""
    import torch

    from codesift import Embedder

    t0 = time.perf_counter()
    emb = Embedder(args.model, device="cpu", dtype=args.dtype)
    t1 = time.perf_counter()
    vecs = emb.encode(texts, task="nl2code", role="document", truncate=True, show_progress=False)
    t2 = time.perf_counter()
    return row("one process", 1, torch.get_num_threads(), len(texts), t1 - t0, t2 - t1), vecs


def on_ray(texts: list[str], args) -> tuple[dict, np.ndarray]:
    """``embed_on_ray`` on a local Ray instance started (and stopped) by the call."""
    from codesift.model.distributed import EmbedSpec, embed_on_ray

    spec = EmbedSpec(model=args.model, task="nl2code", role="document", truncate=True, device="cpu", dtype=args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        r = embed_on_ray(texts, spec, Path(tmp) / "shards", address="local", workers=args.workers,
                         shard_size=args.shard_size, show_progress=False)
    return row(f"ray local x{r.workers}", r.workers, r.threads, len(texts), r.startup_seconds,
               r.seconds - r.startup_seconds), r.vectors


def row(mode: str, workers: int, threads: int, texts: int, startup: float, embed: float) -> dict:
    return {"mode": mode, "workers": workers, "threads_per_worker": threads, "texts": texts,
            "startup_s": round(startup, 2), "embed_s": round(embed, 2), "total_s": round(startup + embed, 2),
            "texts_per_s": round(texts / embed, 2), "texts_per_s_per_worker": round(texts / embed / workers, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=4000, help="texts to embed (stdlib functions)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="codesift-mini")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    texts = stdlib_functions(args.limit)
    load_before = os.getloadavg()
    single, a = one_process(texts, args)
    ray_row, b = on_ray(texts, args)
    load_after = os.getloadavg()
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "command": " ".join(sys.argv), "model": args.model, "dtype": args.dtype,
              "load_average_before": load_before, "load_average_after": load_after,
              "runs": [single, ray_row],
              "speedup_embed": round(single["embed_s"] / ray_row["embed_s"], 3),
              "speedup_total": round(single["total_s"] / ray_row["total_s"], 3),
              "max_abs_diff": float(np.abs(a - b).max())}
    cols = ("mode", "workers", "threads_per_worker", "texts", "startup_s", "embed_s", "total_s", "texts_per_s",
            "texts_per_s_per_worker")
    print("  ".join(f"{c:>22}" if i else f"{c:16}" for i, c in enumerate(cols)))
    for r in report["runs"]:
        print("  ".join(f"{r[c]!s:>22}" if i else f"{r[c]!s:16}" for i, c in enumerate(cols)))
    print(f"speedup (embedding only) {report['speedup_embed']:.2f}x, (with startup) {report['speedup_total']:.2f}x; "
          f"max |difference| of the vectors {report['max_abs_diff']:.1e}; load average {load_before[0]:.1f} -> "
          f"{load_after[0]:.1f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ray_embed{('-' + args.tag) if args.tag else ''}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
