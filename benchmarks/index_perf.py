"""Index performance: re-index time of an unchanged 10,000-file tree, and store query latency at 100,000 chunks.

    python benchmarks/index_perf.py [--files 10000] [--chunks 100000] [--dim 896] [--out benchmarks/results/index_perf.json]

The re-index part builds the index once with a stand-in hash embedder (no model: its speed is not the point), then
times `codesift index` on the unchanged tree, in-process and as a fresh CLI process. The latency
part fills a Milvus Lite collection with synthetic unit vectors and code-like text and times the
store calls only (query embedding excluded): dense full-dim, Matryoshka two-stage, BM25, and hybrid
(dense + BM25 + RRF), with and without a filter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = ("parse config read write file path json yaml http request response client server cache key value "
         "token stream buffer socket retry timeout error logger handler event queue worker thread lock user "
         "session auth password hash encode decode compress archive index search query result vector").split()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


class HashEmbedder:
    """Stands in for the model when building the 10,000-file index: the re-index timing never embeds."""

    dimension, matryoshka_dims, fingerprint = 64, (64,), "hash-64"

    def count_tokens(self, texts, task="nl2code", role="query"):
        return [len(t) // 4 + 8 for t in texts]

    def encode(self, texts, **_):
        rng = np.random.default_rng(len(texts))
        v = rng.standard_normal((len(texts), self.dimension)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def reindex_unchanged(n_files: int, workdir: Path) -> dict:
    from codesift.index import IndexConfig, build_index

    model = "hash-64"
    root = workdir / "tree"
    rng = np.random.default_rng(0)
    for i in range(n_files):
        d = root / f"pkg{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        body = " ".join(rng.choice(WORDS, 6))
        (d / f"m{i}.py").write_text(f"def f_{i}(x):\n    \"\"\"{body}\"\"\"\n    return x + {i}\n")
    emb = HashEmbedder()
    t = time.perf_counter()
    first = build_index(root, config=IndexConfig(model=str(model)), embedder=emb)
    build_s = time.perf_counter() - t
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        r = build_index(root, embedder=emb)
        runs.append(time.perf_counter() - t)
        assert r.chunks_embedded == 0 and r.files_changed == 0
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # an unchanged tree never loads the model, so "hash-64" is fine
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "codesift.cli", "index", str(root), "--json"], env=env,
                         capture_output=True, text=True, check=True)
    cli_s = time.perf_counter() - t
    cli = json.loads(out.stdout)
    return {"files": n_files, "initial_build_s": round(build_s, 2), "initial_chunks": first.chunks_total,
            "initial_chunks_per_s_without_model": round(first.chunks_total / build_s, 1),
            "unchanged_reindex_in_process_s": [round(x, 3) for x in runs],
            "unchanged_reindex_cli_process_s": round(cli_s, 2), "cli_report_seconds": round(cli["seconds"], 3),
            "cli_chunks_embedded": cli["chunks_embedded"]}


def query_latency(n_chunks: int, dim: int, small_dim: int, workdir: Path, n_queries: int = 200,
                  vector_index: str = "HNSW") -> dict:
    from codesift.index.search import rrf_fuse
    from codesift.index.store import ChunkStore, keyword_text

    store = ChunkStore(str(workdir / f"lat-{vector_index}.db"), "bench", dim, small_dim, vector_index=vector_index)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    step = 2000
    for s in range(0, n_chunks, step):
        vecs = rng.standard_normal((step, dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        small = vecs[:, :small_dim] / np.linalg.norm(vecs[:, :small_dim], axis=1, keepdims=True)
        rows = []
        for j in range(step):
            i = s + j
            text = f"def f_{i}(x):\n    " + " ".join(rng.choice(WORDS, 40))
            rows.append({"id": f"c{i}", "path": f"pkg{i // 50}/m{i}.py", "language": "python" if i % 4 else "go",
                         "symbol": f"f_{i}", "kind": "function", "start_line": 1, "end_line": 2,
                         "is_test": i % 10 == 0, "content_hash": f"{i:064x}", "text": text,
                         "terms": keyword_text(text), "vector": vecs[j].tolist(), "vector_small": small[j].tolist()})
        store.upsert(rows)
    store.flush()
    load_s = time.perf_counter() - t
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    texts = [" ".join(rng.choice(WORDS, 4)) for _ in range(n_queries)]
    out = {"vector_index": vector_index, "chunks": n_chunks, "dim": dim, "small_dim": small_dim, "load_s": round(load_s, 1)}
    fields = ["path", "language", "symbol", "kind", "start_line", "end_line", "text"]

    def two_stage(q, flt):
        qs = q[:small_dim] / np.linalg.norm(q[:small_dim])
        rows = store.dense(qs, 100, flt, field="vector_small", output_fields=["path", "vector"])
        full = np.asarray([r["vector"] for r in rows], dtype=np.float32) @ q
        return [rows[i]["id"] for i in np.argsort(-full)[:10]]

    cases = {
        "dense_full": lambda q, t, f: store.dense(q, 10, f, output_fields=fields),
        "dense_two_stage": lambda q, t, f: two_stage(q, f),
        "bm25": lambda q, t, f: store.bm25(t, 10, f, output_fields=fields),
        "hybrid_rrf": lambda q, t, f: rrf_fuse([store.dense(q, 100, f, output_fields=fields),
                                                store.bm25(t, 100, f, output_fields=fields)], [1.0, 1.0], 60)[:10],
    }
    for flt_name, flt in (("no_filter", ""), ("filter_lang_notest", 'language == "python" and is_test == false')):
        for name, fn in cases.items():
            fn(queries[0], texts[0], flt)  # warm
            times = []
            for q, tx in zip(queries, texts):
                t = time.perf_counter()
                fn(q, tx, flt)
                times.append(time.perf_counter() - t)
            print(name, flt_name, round(sum(times), 2), file=sys.stderr, flush=True)
            out[f"{name}/{flt_name}"] = {"p50_ms": round(pct(times, 50), 2), "p95_ms": round(pct(times, 95), 2),
                                         "mean_ms": round(statistics.mean(times) * 1000, 2)}
    # recall of two-stage against exact full-dim search (synthetic vectors: a lower bound, no Matryoshka training)
    rec = []
    for q in queries[:100]:
        exact = {r["id"] for r in store.dense(q, 10, "", output_fields=["path"])}
        rec.append(len(exact & set(two_stage(q, ""))) / 10)
    out["two_stage_recall@10_vs_full_synthetic"] = round(float(np.mean(rec)), 3)
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=896)
    ap.add_argument("--small-dim", type=int, default=128)
    ap.add_argument("--skip-reindex", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/index_perf.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_reindex:
            result["reindex_unchanged"] = reindex_unchanged(args.files, Path(tmp))
            print(json.dumps(result["reindex_unchanged"], indent=2), flush=True)
        if not args.skip_latency:
            result["query_latency"] = query_latency(args.chunks, args.dim, args.small_dim, Path(tmp))
            print(json.dumps(result["query_latency"], indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
