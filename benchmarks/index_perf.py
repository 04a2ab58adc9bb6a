"""Index performance at scale: incremental re-indexing and query latency of the SQLite store, at 100,000 chunks.

    python benchmarks/index_perf.py [--files 10000] [--chunks 100000] [--dim 896] [--small-dim 128]
                                    [--skip-reindex] [--skip-incremental] [--skip-latency]
                                    [--out benchmarks/results/index_perf.json]

Three parts, each with a stand-in embedder (its speed is not the point; embedding is timed apart and excluded):
- reindex_unchanged: `codesift index` of an unchanged ``--files``-file tree, in-process and as a CLI process;
- incremental: a tree of ``--chunks`` / 10 files of ten functions each (one chunk a function), indexed with a
  hash embedder at ``--dim``; then (a) one file edited and re-indexed (target <= 1 s without embedding), (b) a
  NEW process opening the index and running one dense query (target <= 0.5 s; torch is imported before the
  clock starts: it comes with the model), (c) every file's mtime touched, content unchanged: nothing embedded;
- query_latency: ``--chunks`` synthetic rows written straight into the store, then `CodeIndex.search` (stub query
  embedder) p50/p95 for dense, two-stage, BM25 and hybrid, with and without filters; and the BM25 engine beside
  FTS5 (the store's keyword index before its postings) on the same terms and queries;
- ``--real-index DIR``: the same on an existing index of real code (e.g. the one `benchmarks/index_large.py`
  builds), with queries taken from its docstrings' first lines.
"""

from __future__ import annotations

import argparse
import hashlib
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

from codesift.testing import StandInEncoder

WORDS = ("parse config read write file path json yaml http request response client server cache key value "
         "token stream buffer socket retry timeout error logger handler event queue worker thread lock user "
         "session auth password hash encode decode compress archive index search query result vector").split()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


class HashEmbedder(StandInEncoder):
    """Stands in for the model: a unit vector seeded by the text's hash (the same text, the same vector)."""

    def __init__(self, dimension: int = 64, small_dim: int = 64) -> None:
        self.dimension, self.matryoshka_dims = dimension, (small_dim, dimension)
        self.fingerprint = f"hash-{dimension}"

    def count_tokens(self, texts, task="nl2code", role="query"):
        return [len(t) // 4 + 8 for t in texts]

    def encode(self, texts, **_):
        from codesift.model.norm import l2_normalize

        v = np.stack([np.random.default_rng(int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest()))
                      .standard_normal(self.dimension, dtype=np.float32) for t in texts])
        return l2_normalize(v)


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


def ten_functions(i: int, rng, salt: str = "") -> str:
    """A file of ten small functions (the chunker makes one chunk of each)."""
    return "".join(f"def f_{i}_{j}{salt}(x, y):\n    \"\"\"{' '.join(rng.choice(WORDS, 30))}\"\"\"\n    z = x + y * {j}\n"
                   f"    for k in range(z):\n        x = x + k\n    return {' + '.join(rng.choice(WORDS, 6))}\n\n\n"
                   for j in range(10))


COLD_QUERY = r"""
import json, sys, time
import numpy as np, torch  # the model's libraries: a real query process has them loaded anyway
t0 = time.perf_counter()
from codesift.index.search import CodeIndex
from codesift.testing import StandInEncoder
class Q(StandInEncoder):
    fingerprint, dimension = sys.argv[2], int(sys.argv[3])
    def encode(self, texts, *_, **__):
        v = np.random.default_rng(0).standard_normal((1, int(sys.argv[3]))).astype(np.float32)
        return v / np.linalg.norm(v)
t1 = time.perf_counter()
ix = CodeIndex(sys.argv[1], embedder=Q())
hits = ix.search("parse config file", limit=10, mode="dense")
t2 = time.perf_counter()
print(json.dumps({"import_codesift_s": t1 - t0, "open_and_dense_query_s": t2 - t1, "hits": len(hits)}))
"""


def incremental_at_scale(n_chunks: int, dim: int, small_dim: int, workdir: Path) -> dict:
    """(a) one file edited, (b) a new process's open + dense query, (c) every mtime touched: a tree of n_chunks chunks."""
    from codesift.index import IndexConfig, build_index

    root = workdir / "scale"
    rng = np.random.default_rng(3)
    n_files = n_chunks // 10
    for i in range(n_files):
        d = root / f"pkg{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"m{i}.py").write_text(ten_functions(i, rng))
    emb = HashEmbedder(dim, small_dim)
    t = time.perf_counter()
    first = build_index(root, config=IndexConfig(model=emb.fingerprint, embed_batch_chunks=256), embedder=emb)
    out = {"files": n_files, "chunks": first.chunks_total, "dim": dim, "small_dim": small_dim,
           "initial_build_s": round(time.perf_counter() - t, 1), "initial_embed_s": round(first.embed_seconds, 1)}
    print(f"built {first.chunks_total} chunks in {out['initial_build_s']} s", file=sys.stderr, flush=True)
    db = root / ".codesift" / "manifest.sqlite"
    out["index_file_mb"] = round(sum(p.stat().st_size for p in db.parent.glob("manifest.sqlite*")) / 2**20, 1)

    edits = []
    for n in range(3):  # (a) one file's content changed: 10 chunks re-chunked, embedded, committed
        (root / "pkg0" / "m0.py").write_text(ten_functions(0, rng, salt=f"_v{n}"))
        t = time.perf_counter()
        r = build_index(root, embedder=emb)
        total = time.perf_counter() - t
        assert r.files_changed == 1 and r.chunks_embedded > 0, r
        edits.append({"total_s": round(total, 3), "embed_s": round(r.embed_seconds, 3),
                      "without_embedding_s": round(total - r.embed_seconds, 3), "walk_s": round(r.walk_seconds, 3),
                      "store_s": round(r.store_seconds, 3)})
    out["one_file_edit"] = edits

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cold = []
    for _ in range(5):  # (b) a new process: import, open, read the matrix, one dense query
        res = subprocess.run([sys.executable, "-c", COLD_QUERY, str(db.parent), emb.fingerprint, str(dim)], env=env,
                             capture_output=True, text=True, check=True)
        cold.append({k: round(v, 3) if isinstance(v, float) else v for k, v in json.loads(res.stdout).items()})
    out["cold_process_open_and_dense_query"] = cold

    t = time.perf_counter()  # (c) every file touched, nothing changed: read and hashed, nothing embedded
    for p in root.rglob("*.py"):
        os.utime(p)
    out["touch_all_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    r = build_index(root, embedder=emb)
    out["reindex_after_touching_every_file"] = {"seconds": round(time.perf_counter() - t, 2),
                                                "chunks_embedded": r.chunks_embedded, "files_changed": r.files_changed}
    assert r.chunks_embedded == 0 and r.files_changed == 0
    t = time.perf_counter()
    r = build_index(root, embedder=emb)
    out["reindex_unchanged_s"] = round(time.perf_counter() - t, 3)
    return out


class FixedEmbedder(StandInEncoder):
    """Returns pre-made query vectors in turn, so that timing `CodeIndex.search` excludes query embedding."""

    fingerprint = "bench"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors, self.i = vectors, 0

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        return (self.dimension,)

    def encode(self, texts, **_):
        v = self.vectors[self.i % len(self.vectors)][None, :]
        self.i += 1
        return v


def fill_latency_index(index_dir: Path, n_chunks: int, dim: int, small_dim: int) -> float:
    """An index (SQLite store + manifest, one file) of synthetic unit vectors and code-like text; returns seconds."""
    from dataclasses import asdict

    from codesift.index import IndexConfig
    from codesift.index.config import DB_NAME
    from codesift.index.manifest import FileRecord, Manifest
    from codesift.index.sqlite_store import SQLiteStore
    from codesift.index.store import keyword_text

    index_dir.mkdir(parents=True, exist_ok=True)
    config = IndexConfig(model="bench")
    manifest = Manifest(index_dir / DB_NAME)
    store = SQLiteStore(manifest, dim, small_dim)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    step = 2000
    for s in range(0, n_chunks, step):
        vecs = rng.standard_normal((step, dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        rows = []
        for j in range(step):
            i = s + j
            text = f"def f_{i}(x):\n    " + " ".join(rng.choice(WORDS, 40))
            rows.append({"id": f"c{i}", "path": path_of(i), "language": "python" if i % 4 else "go",
                         "symbol": f"f_{i}", "kind": "function", "start_line": 1, "end_line": 2,
                         "is_test": i % 10 == 0, "content_hash": f"{i:064x}", "text": text,
                         "terms": keyword_text(text), "vector": vecs[j]})
        with manifest.transaction():
            store.replace_files([], rows)
            manifest.put_files([FileRecord(path_of(i), 0, 0, f"{i:064x}", "python", 10, "done")
                                for i in range(s, s + step, 10)])
        print(f"filled {s + step} chunks", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t
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

    out = {"chunks": n_chunks, "dim": dim, "small_dim": small_dim}
    man = index_dir / "manifest.sqlite"  # the one SQLite file of the index
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

    import torch  # noqa: F401  (comes with the model; imported before the clocks start)

    stand_in = FixedEmbedder(queries)
    ix = CodeIndex(index_dir, embedder=stand_in)
    t = time.perf_counter()
    ix.store.count()
    out["store_open_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    ix.dense_vector_search(queries[0], limit=10)
    out["first_dense_query_with_matrix_load_s"] = round(time.perf_counter() - t, 3)
    # another process changes one file (10 chunks): the next query reads only those rows
    from codesift.index.sqlite_store import SQLiteStore
    from codesift.index.store import keyword_text

    writer = Manifest(man)
    new = rng.standard_normal((10, dim)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    rows = [{"id": f"new{i}", "path": path_of(0), "language": "python", "symbol": f"g_{i}", "kind": "function",
             "start_line": 1, "end_line": 2, "is_test": False, "content_hash": f"n{i}", "text": "def g(): pass",
             "terms": keyword_text("def g(): pass"), "vector": new[i]} for i in range(10)]
    t = time.perf_counter()
    SQLiteStore(writer, dim, small_dim).replace_files([path_of(0)], rows)
    out["store_write_one_file_s"] = round(time.perf_counter() - t, 3)
    writer.close()
    t = time.perf_counter()
    ix.dense_vector_search(queries[1], limit=10)
    out["dense_query_after_one_file_changed_s"] = round(time.perf_counter() - t, 3)

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
        ix.searcher.forget_file_list()
        t = time.perf_counter()
        ix.build_filter(**filters["filter_lang_notest_path"])
        cold.append(time.perf_counter() - t)
    out["filter_build_first_time_ms"] = {"p50_ms": round(pct(cold, 50), 2), "max_ms": round(max(cold) * 1000, 2)}
    # two-stage against exact full-dim search (synthetic vectors: no Matryoshka structure, so a lower bound)
    rec = []
    for i in range(100):
        stand_in.i = i
        exact = {r.id for r in ix.search("q", limit=10, mode="dense")}
        stand_in.i = i
        rec.append(len(exact & {r.id for r in ix.search("q", limit=10, mode="dense", two_stage=True)}) / 10)
    out["two_stage_recall@10_vs_full_synthetic"] = round(float(np.mean(rec)), 3)
    out["bm25_engine_vs_fts5"] = fts5_side_by_side(ix, texts, index_dir.parent / "fts5-side.sqlite")
    ix.close()
    return out


def fts5_side_by_side(ix, texts: list[str], side: Path, limit: int = 100) -> dict:
    """The store's BM25 against FTS5's ``bm25()`` over the same chunks' terms (a side file), the same queries and
    ``limit`` (hybrid's candidate depth): p50/p95 of each, and how often their top 10 agree."""
    import sqlite3

    from codesift.index.store import ChunkFilter, keyword_text

    side.unlink(missing_ok=True)
    db = sqlite3.connect(side)
    t = time.perf_counter()
    db.execute("CREATE VIRTUAL TABLE chunk_terms USING fts5 (terms, tokenize = \"unicode61 tokenchars '_'\")")
    with db:
        db.executemany("INSERT INTO chunk_terms (rowid, terms) VALUES (?, ?)",
                       ix.store.db.execute("SELECT seq, terms FROM chunk_bags"))
    build_s = time.perf_counter() - t
    ours, fts, agree = [], [], []
    ix.store.bm25(texts[0], limit, ChunkFilter())  # warm: rows in memory
    for text in texts:
        terms = keyword_text(text).split()
        if not terms:
            continue
        t = time.perf_counter()
        got = ix.store.bm25(text, limit, ChunkFilter())
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        match = " OR ".join(f'"{w}"' for w in terms)
        hits = db.execute("SELECT rowid, -bm25(chunk_terms) FROM chunk_terms WHERE chunk_terms MATCH ? "
                          "ORDER BY bm25(chunk_terms) LIMIT ?", (match, limit)).fetchall()
        ix.store._rows_at(np.asarray([h[0] for h in hits], dtype=np.int64), np.asarray([h[1] for h in hits]))
        fts.append(time.perf_counter() - t)
        a, b = [round(r["distance"], 3) for r in got[:10]], [round(h[1], 3) for h in hits[:10]]
        agree.append(a == b)
    db.close()
    side.unlink(missing_ok=True)
    return {"queries": len(ours), "limit": limit, "fts5_build_s": round(build_s, 1),
            "postings_p50_ms": round(pct(ours, 50), 2), "postings_p95_ms": round(pct(ours, 95), 2),
            "fts5_p50_ms": round(pct(fts, 50), 2), "fts5_p95_ms": round(pct(fts, 95), 2),
            "top10_scores_equal_share": round(float(np.mean(agree)), 3)}


def real_latency(index_dir: Path, n_queries: int = 200) -> dict:
    """Query latency on an existing index of real code: docstring first lines as queries, a stub query embedder."""
    import re

    from codesift.index.search import CodeIndex

    stub = FixedEmbedder(np.zeros((1, 1), dtype=np.float32))  # its vectors and fingerprint are set below
    ix = CodeIndex(index_dir, embedder=stub)
    stub.fingerprint = ix.manifest.get_meta().get("fingerprint", "bench")  # stands in for the index's model
    docs = [m.group(1).strip() for (text,) in ix.store.db.execute("SELECT text FROM chunks ORDER BY seq")
            for m in [re.search(r'"""\s*([^\n"]{20,120})', text)] if m]
    rng = np.random.default_rng(3)
    texts = [docs[i] for i in rng.choice(len(docs), min(n_queries, len(docs)), replace=False)]
    dim = ix.store.dim
    stub.vectors = rng.standard_normal((len(texts), dim)).astype(np.float32)
    stub.vectors /= np.linalg.norm(stub.vectors, axis=1, keepdims=True)

    import torch  # noqa: F401  (comes with the model; imported before the clocks start)

    out = {"index": str(index_dir), "chunks": ix.store.count(), "dim": dim, "queries": len(texts),
           "query_examples": texts[:3]}
    t = time.perf_counter()
    ix.search(texts[0], limit=10, mode="bm25")
    out["first_bm25_query_with_rows_load_s"] = round(time.perf_counter() - t, 3)
    for name, kw in {"dense": {"mode": "dense"}, "bm25": {"mode": "bm25"}, "hybrid": {"mode": "hybrid"}}.items():
        times = []
        for tx in texts:
            t = time.perf_counter()
            ix.search(tx, limit=10, **kw)
            times.append(time.perf_counter() - t)
        out[name] = {"p50_ms": round(pct(times, 50), 2), "p95_ms": round(pct(times, 95), 2)}
        print(name, out[name], file=sys.stderr, flush=True)
    out["bm25_engine_vs_fts5"] = fts5_side_by_side(ix, texts, Path(tempfile.mkdtemp()) / "fts5-side.sqlite")
    ix.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=896)
    ap.add_argument("--small-dim", type=int, default=128)
    ap.add_argument("--skip-reindex", action="store_true")
    ap.add_argument("--skip-incremental", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--latency-index", default=None, help="keep the filled 100k-chunk index here (reused when present)")
    ap.add_argument("--real-index", default=None, help="also time queries on this existing index of real code")
    ap.add_argument("--out", default="benchmarks/results/index_perf.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_reindex:
            result["reindex_unchanged"] = reindex_unchanged(args.files, Path(tmp))
            print(json.dumps(result["reindex_unchanged"], indent=2), flush=True)
        if not args.skip_incremental:
            result["incremental"] = incremental_at_scale(args.chunks, args.dim, args.small_dim, Path(tmp))
            print(json.dumps(result["incremental"], indent=2), flush=True)
        if not args.skip_latency:
            index_dir = Path(args.latency_index) if args.latency_index else Path(tmp) / "lat" / ".codesift"
            result["query_latency"] = query_latency(args.chunks, args.dim, args.small_dim, index_dir)
            print(json.dumps(result["query_latency"], indent=2), flush=True)
        if args.real_index:
            result["real_index_latency"] = real_latency(Path(args.real_index))
            print(json.dumps(result["real_index_latency"], indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
