"""Long queries: the dense leg over the model's limit, windows fused vs plain truncation, on real code.

    python benchmarks/long_query.py [--package click] [--noise-package email] [--model offline] [--sample 80]
                                    [--paragraphs 8] [--out benchmarks/results/long_query.json]

The corpus is an installed package with its docstrings blanked (as in index_quality.py). Each query is an
issue-like text of several paragraphs, longer than the model's limit: real docstring paragraphs of another
package (noise), with the first paragraph of one target function's docstring at a random position. A hit
is a top-10 result of the target's file whose span covers its `def` line. Every long-query strategy of
``SearchConfig.long_query`` is run in dense and in hybrid mode, next to the short query (the target
paragraph alone: the ceiling) and BM25 (which always reads the whole text).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from index_quality import strip_docstrings  # noqa: E402


def paragraphs_of(package: str) -> list[str]:
    """First paragraphs (>= 8 words) of every docstring in an installed package."""
    out = []
    for src in sorted(Path(importlib.import_module(package).__file__).parent.rglob("*.py")):
        try:
            tree = ast.parse(src.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = (ast.get_docstring(node) or "").strip().split("\n\n")[0].replace("\n", " ").strip()
                if len(doc.split()) >= 8:
                    out.append(doc)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--package", default="click")
    ap.add_argument("--noise-package", default="email")
    ap.add_argument("--model", default="offline")
    ap.add_argument("--sample", type=int, default=80)
    ap.add_argument("--paragraphs", type=int, default=8, help="noise paragraphs per query")
    ap.add_argument("--out", default="benchmarks/results/long_query.json")
    ap.add_argument("--index-root", default=None,
                    help="reuse the docstring-blanked copy (with its index) that an earlier run of this script or of "
                         "index_quality.py built for the same package and model")
    ap.add_argument("--only", default="", help="comma-separated runs, e.g. long/dense/max/16 (default: all)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from codesift.index import IndexConfig, build_index, open_index

    rng = random.Random(0)
    noise = paragraphs_of(args.noise_package)
    pkg_dir = Path(importlib.import_module(args.package).__file__).parent
    targets = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / args.package
        for src in sorted(pkg_dir.rglob("*.py")):
            rel = src.relative_to(pkg_dir).as_posix()
            text, funcs = strip_docstrings(src.read_text(encoding="utf-8"))
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
            for name, line, doc in funcs:
                q = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
                if len(q.split()) >= 4:
                    targets.append({"short": q, "path": rel, "line": line, "name": name})
        targets = rng.sample(targets, min(args.sample, len(targets)))
        for t in targets:
            paras = rng.sample(noise, args.paragraphs)
            t["position"] = rng.randrange(len(paras) + 1)
            paras.insert(t["position"], t["short"])
            t["long"] = "\n\n".join(paras)
        t0 = time.perf_counter()
        if args.index_root:
            root = Path(args.index_root)
        report = build_index(root, config=IndexConfig(model=args.model))  # nothing to embed when reused
        out = {"command": " ".join(sys.argv), "package": args.package, "noise_package": args.noise_package,
               "model": args.model, "queries": len(targets), "chunks": report.chunks_total,
               "index_wall_s": round(time.perf_counter() - t0, 1), "results": {}}
        with open_index(root) as ix:
            emb = ix.embedder
            lengths = emb.count_tokens([t["long"] for t in targets], task="nl2code", role="query")
            out["max_length"] = emb.max_length
            out["long_query_tokens"] = {"min": min(lengths), "median": sorted(lengths)[len(lengths) // 2],
                                        "max": max(lengths)}
            out["over_limit"] = sum(n > emb.max_length for n in lengths)
            # (query, mode, long_query, window_min_tokens): None packs windows to the limit, 16 ends them at paragraphs
            runs = [("short", "dense", "max", None), ("short", "hybrid", "max", None), ("long", "bm25", "max", None)]
            runs += [("long", mode, how, split) for mode in ("dense", "hybrid")
                     for how, split in (("truncate", None), ("mean", None), ("rrf", None), ("max", None),
                                        ("mean", 16), ("rrf", 16), ("max", 16))]
            if args.only:  # in the order given
                by_key = {"/".join(map(str, r)): r for r in runs}
                runs = [by_key[k] for k in args.only.split(",")]
            for which, mode, how, split in runs:
                ix.search_config.long_query = how
                ix.search_config.window_min_tokens = split
                hits, rr = 0, 0.0
                t1 = time.perf_counter()
                for t in targets:
                    res = ix.search(t[which], limit=10, mode=mode)
                    for rank, r in enumerate(res, 1):
                        if r.path == t["path"] and r.start_line <= t["line"] <= r.end_line:
                            hits += 1
                            rr += 1 / rank
                            break
                key = f"{which}/{mode}" + (f"/{how}" if which == "long" and mode != "bm25" else "") + \
                    ("/paragraphs" if split and which == "long" and how != "truncate" else "")
                out["results"][key] = {"recall@10": round(hits / len(targets), 4), "mrr@10": round(rr / len(targets), 4),
                                       "ms_per_query": round(1000 * (time.perf_counter() - t1) / len(targets), 1)}
                print(key, out["results"][key], flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(out, indent=2))  # after every run: a partial run keeps its figures
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
