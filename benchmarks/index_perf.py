"""Index performance: re-index time of an unchanged 10,000-file tree, and store query latency at 100,000 chunks.

    python benchmarks/index_perf.py [--files 10000] [--chunks 100000] [--dim 896] [--latency-index DIR]
                                    [--out benchmarks/results/index_perf.json]

The re-index part builds the index once with a stand-in hash embedder (no model: its speed is not the point), then
times `codesift index` on the unchanged tree, in-process and as a fresh CLI process. The latency
part fills a Milvus Lite index with synthetic unit vectors and code-like text and times `CodeIndex.search`
with a stub embedder (query embedding excluded): dense full-dim (the in-memory float16 mirror), Matryoshka
two-stage, BM25 (Milvus Lite), and hybrid (dense + BM25 + RRF), with and without filters; plus the
time to rebuild the mirror from the store (the recovery path) and to load it from its sidecar.
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


class FixedEmbedder:
    """Returns pre-made query vectors in turn, so that timing `CodeIndex.search` excludes query embedding."""

    fingerprint = "bench"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors, self.i = vectors, 0

    def encode(self, texts, **_):
        v = self.vectors[self.i % len(self.vectors)][None, :]
        self.i += 1
        return v


def fill_latency_index(index_dir: Path, n_chunks: int, dim: int, small_dim: int) -> float:
    """A 100k-chunk index (Milvus Lite store + manifest) of synthetic unit vectors and code-like text; returns seconds."""
    from dataclasses import asdict

    from codesift.index import IndexConfig
    from codesift.index.manifest import FileRecord, Manifest
    from codesift.index.store import ChunkStore, keyword_text

    index_dir.mkdir(parents=True, exist_ok=True)
    config = IndexConfig(model="bench", collection="bench")
    store = ChunkStore(str(index_dir / "milvus.db"), "bench", dim, small_dim, vector_index="FLAT")
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
            rows.append({"id": f"c{i}", "path": path_of(i), "language": "python" if i % 4 else "go",
                         "symbol": f"f_{i}", "kind": "function", "start_line": 1, "end_line": 2,
                         "is_test": i % 10 == 0, "content_hash": f"{i:064x}", "text": text,
                         "terms": keyword_text(text), "vector": vecs[j].tolist(), "vector_small": small[j].tolist()})
        store.upsert(rows)
        print(f"filled {s + step} chunks", file=sys.stderr, flush=True)
    store.flush()
    store.close()
    seconds = time.perf_counter() - t
    manifest = Manifest(index_dir / "manifest.sqlite")
    manifest.put_files([FileRecord(path_of(i), 0, 0, f"{i:064x}", "python", 10, "done") for i in range(0, n_chunks, 10)])
    manifest.set_meta(root=str(index_dir.parent), config=asdict(config), dim=dim, small_dim=small_dim,
                      fingerprint="bench", filled_chunks=n_chunks, filled_seconds=round(seconds, 1))
    manifest.close()
    return seconds


def path_of(i: int) -> str:
    return f"pkg{i // 1000}/m{i // 10}.py"  # ten chunks a file, a hundred files a folder


def query_latency(n_chunks: int, dim: int, small_dim: int, index_dir: Path, n_queries: int = 200) -> dict:
    """p50/p95 of `CodeIndex.search` (stub query embedder) for dense, two-stage, BM25 and hybrid, with and without filters."""
    from codesift.index.manifest import Manifest
    from codesift.index.search import CodeIndex
    from codesift.index.vectors import META_KEY

    out = {"chunks": n_chunks, "dim": dim, "small_dim": small_dim}
    man = index_dir / "manifest.sqlite"
    meta = Manifest(man).get_meta() if man.is_file() else {}
    if meta.get("filled_chunks") == n_chunks:
        out["fill_s"] = meta.get("filled_seconds")
        out["fill_reused"] = True
    else:
        out["fill_s"] = round(fill_latency_index(index_dir, n_chunks, dim, small_dim), 1)
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    texts = [" ".join(rng.choice(WORDS, 4)) for _ in range(n_queries)]

    m = Manifest(man)
    m.set_meta(**{META_KEY: None})  # force the recovery path once, to time it
    m.close()
    ix = CodeIndex(index_dir, embedder=FixedEmbedder(queries))
    t = time.perf_counter()
    ix.store.count()
    out["store_open_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    ix.vector_mirror()
    out["mirror_rebuild_from_store_s"] = round(time.perf_counter() - t, 2)
    ix._mirror = None
    t = time.perf_counter()
    mirror = ix.vector_mirror()
    out["mirror_load_from_sidecar_s"] = round(time.perf_counter() - t, 2)
    # what an indexing run adds when one file changed: its rows replaced in the mirror, the sidecar rewritten
    new = rng.standard_normal((10, dim)).astype(np.float32)
    t = time.perf_counter()
    changed = mirror.apply({path_of(0)}, [f"new{i}" for i in range(10)], [path_of(0)] * 10, ["python"] * 10,
                           [False] * 10, new, [" ".join(rng.choice(WORDS, 40)) for _ in range(10)])
    out["mirror_apply_one_file_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    changed.save(index_dir.parent)
    out["mirror_save_s"] = round(time.perf_counter() - t, 2)
    (index_dir.parent / "vectors.npz").unlink()

    filters = {"no_filter": {}, "filter_lang_notest_path": {"language": "python", "exclude_tests": True,
                                                             "path_globs": ["!pkg1*/"]}}
    cases = {"dense": {"mode": "dense"}, "dense_two_stage": {"mode": "dense", "two_stage": True},
             "bm25": {"mode": "bm25"}, "hybrid": {"mode": "hybrid"},
             # code-aware ranking off; file-level results; a query naming an identifier (definition lookup)
             "hybrid_no_rerank": {"mode": "hybrid", "rerank": False}, "hybrid_files": {"mode": "hybrid", "files": True},
             "hybrid_identifier": {"mode": "hybrid", "identifier": True}}
    ident_texts = [f"why does f_{int(rng.integers(n_chunks))} fail on {t}" for t in texts]
    for flt_name, flt in filters.items():
        for name, kw in cases.items():
            n = n_queries
            kw = dict(kw)
            run = ix.search_files if kw.pop("files", False) else ix.search
            qs = ident_texts if kw.pop("identifier", False) else texts
            run(qs[0], limit=10, **kw, **flt)  # warm
            times = []
            for tx in qs[:n]:
                t = time.perf_counter()
                run(tx, limit=10, **kw, **flt)
                times.append(time.perf_counter() - t)
            out[f"{name}/{flt_name}"] = {"queries": n, "p50_ms": round(pct(times, 50), 2),
                                         "p95_ms": round(pct(times, 95), 2), "mean_ms": round(statistics.mean(times) * 1000, 2)}
            print(name, flt_name, out[f"{name}/{flt_name}"], file=sys.stderr, flush=True)
    # a filter seen for the first time: the manifest's file list is read and the globs matched against it
    cold = []
    for _ in range(10):
        ix._files_view = None
        t = time.perf_counter()
        ix.build_filter(**filters["filter_lang_notest_path"])
        cold.append(time.perf_counter() - t)
    out["filter_build_first_time_ms"] = {"p50_ms": round(pct(cold, 50), 2), "max_ms": round(max(cold) * 1000, 2)}
    # two-stage against exact full-dim search (synthetic vectors: no Matryoshka structure, so a lower bound)
    rec = []
    for i in range(100):
        ix._embedder.i = i
        exact = {r.id for r in ix.search("q", limit=10, mode="dense")}
        ix._embedder.i = i
        rec.append(len(exact & {r.id for r in ix.search("q", limit=10, mode="dense", two_stage=True)}) / 10)
    out["two_stage_recall@10_vs_full_synthetic"] = round(float(np.mean(rec)), 3)
    ix.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=896)
    ap.add_argument("--small-dim", type=int, default=128)
    ap.add_argument("--skip-reindex", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--latency-index", default=None, help="keep the filled 100k-chunk index here (reused when present)")
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
            index_dir = Path(args.latency_index) if args.latency_index else Path(tmp) / "lat" / ".codesift"
            result["query_latency"] = query_latency(args.chunks, args.dim, args.small_dim, index_dir)
            print(json.dumps(result["query_latency"], indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
