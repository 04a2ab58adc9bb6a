"""Peak memory of one training step vs batch size, with and without the gradient cache.

Each point runs in a fresh process (peak RSS is per process). A random Qwen2 of the given shape
stands in for a real backbone (memory depends on shape, not on weights). Prints a table and writes
benchmarks/results/train_memory.json.

    python benchmarks/train_memory.py --batch-sizes 16 64 256 --mini-batch-size 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, torch
from codesift.train.config import TrainConfig
from codesift.train.data import Pair
from codesift.train.loop import build_embedder, peak_memory_mb, step_gradients
model, batch, mini, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = TrainConfig().replace(model=model, batch_size=batch, mini_batch_size=mini, max_length=seq, bf16=True, device="cpu")
emb = build_embedder(cfg)
text = lambda i: " ".join(f"tok{i}_{k}" for k in range(seq))
pairs = [Pair("nl2code", text(i), text(i + 10**6), "m:nl2code") for i in range(batch)]
base = peak_memory_mb()
autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
out, tokens = step_gradients(emb, pairs, cfg, list(emb.matryoshka_dims), autocast)
print(json.dumps({"batch_size": batch, "mini_batch_size": mini, "tokens": tokens, "rss_after_load_mb": base,
                  "peak_rss_mb": peak_memory_mb(), "loss": float(out.loss)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--mini-batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--no-plain", action="store_true", help="skip the runs without gradient cache")
    ap.add_argument("--out", default="benchmarks/results/train_memory.json")
    args = ap.parse_args()
    from codesift.testing import make_tiny_decoder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_decoder(Path(tmp) / "m", hidden_size=args.hidden, layers=args.layers)
        for batch in args.batch_sizes:
            for mini in [args.mini_batch_size] + ([] if args.no_plain else [batch]):
                res = subprocess.run([sys.executable, "-c", CHILD, str(model), str(batch), str(mini), str(args.seq_len)],
                                     capture_output=True, text=True, check=True)
                row = json.loads(res.stdout.strip().splitlines()[-1])
                row["mode"] = "grad-cache" if mini < batch else "plain"
                rows.append(row)
                print(f"{row['mode']:<11} batch {batch:>4}  mini {mini:>4}  tokens {row['tokens']:>7}  "
                      f"peak RSS {row['peak_rss_mb']:8.0f} MiB  (after load {row['rss_after_load_mb']:.0f})", flush=True)
    result = {"model": f"random Qwen2 hidden={args.hidden} layers={args.layers}", "seq_len": args.seq_len, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
