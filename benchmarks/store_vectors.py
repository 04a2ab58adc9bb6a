"""Smaller vectors in the embedded store: today's float16 exact scan vs int8, binary and Matryoshka-truncated rows
with float16 rescoring, at 100k and 1M rows: memory, query latency and quality, side by side in one run.

    python benchmarks/store_vectors.py [--rows 100000,1000000] [--queries 200] [--repeat 3] [--threads 1]
                                       [--noise 0.6] [--modes int8_row,binary,binary_m128,m128]
                                       [--work /tmp/cs_store_vectors] [--out benchmarks/results/store_vectors.json]

Vectors are real embeddings from the shipped default model (codesift-mini, int8 engine, its 256-token limit),
through the eval embedding cache (``eval/cache.py``, the key ``eval`` uses, so a ``codesift eval`` run fills it):
- real documents: the corpora of the four retrieval sets in /work/shared/data/retrieval (CoSQA dev's 6,267
  Python functions, HumanEval, MBPP test, Spider dev: 7,494 documents), embedded as nl2code documents;
- real queries: CoSQA's 500 dev queries, embedded as nl2code queries; its qrels give nDCG@10;
- distractors up to each row count: a real document that no CoSQA query judges relevant, plus Gaussian noise
  with the real documents' covariance (``--noise`` times its square root), renormalised: code near real code
  (the median cosine to its source is stored), never a copy of a relevant document, so nDCG@10 is the real
  task searched among a crowd of other code, and recall@10 is measured where neighbours are dense.
Real documents come first; rows are then in a fixed seeded order.

Modes: a scan of a matrix held in memory, then (all but ``float16``) the best ``depth`` candidates rescored
exactly with their float16 vectors read from an SQLite ``chunk_vectors`` table shaped like the store's (warm
page cache; the time to take them from an in-memory float16 matrix instead is stored too):
- ``float16``: today's store, ``sqlite_store._scores`` + ``_top_k`` over the (n, 384) float16 matrix;
- ``int8_dim`` / ``int8_row``: rows scaled to int8 per dimension (its max |value| -> 127) or per row, scanned
  in float32 blocks (numpy BLAS: faster here than torch._int_mm or ONNX Runtime MatMulInteger on a CPU);
- ``binary``: the sign bits (48 bytes a row), Hamming distance to the query's signs (``np.bitwise_count``);
- ``binary_m128``: the sign bits of the Matryoshka 128-dim prefix (16 bytes a row), Hamming likewise;
- ``m128``: the Matryoshka 128-dim prefix, renormalised, float16 ``_scores`` (today's ``two_stage`` first stage).
``int8_dim`` is left out by default: in a trial at 100k rows it matched ``int8_row`` (recall 1.000 at depth 20,
the same scan time), and a row's own scale needs nothing from the other rows when rows are added.
Figures per mode and (k, depth), k = 10 (a search's answer) and 100 (what search asks the store for, the
candidates fed into fusion): bytes held in memory for the scan, per-query latency (median and p95 over the queries
of each query's least time of ``--repeat`` runs; with ``--threads 1`` the time is the thread's CPU time, so that
other jobs on a shared machine add nothing; scan + rescoring + top-k, one process, thread counts recorded), recall@k of the true top-k over the whole matrix
(the stored float16 rows in float32 arithmetic, which is what rescoring computes; today's float16 scan is scored
against it too), and CoSQA nDCG@10 over the queries run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "--threads" in sys.argv:  # before numpy and torch load their thread pools
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = sys.argv[sys.argv.index("--threads") + 1]

import numpy as np

from codesift.eval.cache import EmbeddingCache
from codesift.eval.data import load_beir_task
from codesift.eval.metrics import evaluate_run
from codesift.index.sqlite_store import _scores, _top_k
from codesift.index.sqlite_terms import SQL_IN
from codesift.model.norm import l2_normalize

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path("/work/shared/data/retrieval")
SETS = ("cosqa-dev", "humaneval", "mbpp-test", "spider-dev")
# (k, depth): keep the best k of ``depth`` scanned candidates; k=100 is what search asks the store for (the
# candidates fed into fusion), where two_stage scans 10 x deeper today
CONFIGS = {"int8_dim": ((10, 20), (10, 40), (100, 200)), "int8_row": ((10, 20), (10, 40), (100, 200)),
           "binary": ((10, 100), (10, 200), (10, 500), (10, 1000), (100, 500), (100, 1000), (100, 2000)),
           "binary_m128": ((10, 100), (10, 500), (100, 1000)),
           "m128": ((10, 40), (10, 100), (10, 200), (100, 1000))}
BLOCK = 16384


def embedded(emb, texts: list[str], role: str) -> np.ndarray:
    """``texts`` as nl2code ``role`` vectors, from the eval embedding cache (same key as ``eval/runner.py``)."""
    cache = EmbeddingCache()
    key = cache.key(f"{emb.fingerprint}|max_length={emb.max_length}", "nl2code", role, None, texts)
    hit = cache.get(key)
    if hit is not None and len(hit) == len(texts):
        return hit
    t = time.perf_counter()
    vecs = np.asarray(emb.encode(texts, task="nl2code", role=role, truncate=True), dtype=np.float32)
    print(f"embedded {len(texts)} texts as {role} in {time.perf_counter() - t:.0f} s", flush=True)
    cache.put(key, vecs, {"fingerprint": emb.fingerprint, "task": "nl2code", "role": role, "n": len(texts)})
    return vecs


def real_vectors(model: str) -> dict:
    """The real documents (CoSQA's first), their ids, CoSQA's queries and qrels, embedded."""
    from codesift.model.embedder import Embedder

    emb = Embedder(model, device="cpu", dtype="int8")
    docs, ids = [], []
    for name in SETS:
        task = load_beir_task(DATA / name)
        docs.append(embedded(emb, list(task.corpus.values()), "document"))
        ids += [f"{name}/{d}" for d in task.corpus]
        if name == "cosqa-dev":
            cosqa = task
    queries = embedded(emb, list(cosqa.queries.values()), "query")
    qrels = {q: {f"cosqa-dev/{d}": s for d, s in rel.items()} for q, rel in cosqa.qrels.items()}
    return {"docs": np.concatenate(docs), "ids": ids, "queries": queries, "query_ids": list(cosqa.queries),
            "qrels": qrels, "fingerprint": emb.fingerprint, "max_length": emb.max_length,
            "per_set": {name: n for name, n in zip(SETS, (len(d) for d in docs))}}


def build_rows(real: dict, n: int, noise: float, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(n, dim) float16 unit rows: the real documents, then distractors (noisy copies of unjudged documents)."""
    docs = real["docs"]
    relevant = {d for rel in real["qrels"].values() for d, s in rel.items() if s > 0}
    sources = np.array([i for i, d in enumerate(real["ids"]) if d not in relevant])
    chol = np.linalg.cholesky(np.cov(docs, rowvar=False) + 1e-8 * np.eye(docs.shape[1]))
    rng = np.random.default_rng(seed)
    out = np.empty((n, docs.shape[1]), dtype=np.float16)
    out[:len(docs)] = docs
    cosines = []
    for start in range(len(docs), n, BLOCK):
        end = min(start + BLOCK, n)
        src = docs[rng.choice(sources, end - start)]
        x = l2_normalize(src + noise * rng.standard_normal(src.shape, dtype=np.float32) @ chol.T)
        cosines.append(np.sum(x * src, axis=1))
        out[start:end] = x
    cos = np.concatenate(cosines) if cosines else np.ones(1)
    return out, {"sources": len(sources), "median_cosine_to_source": float(np.median(cos)),
                 "p10_cosine_to_source": float(np.percentile(cos, 10))}


def float_blocks(rows: np.ndarray):
    """(start, float32 block) over a matrix, so no full float32 copy is made."""
    for start in range(0, len(rows), BLOCK):
        yield start, rows[start:start + BLOCK].astype(np.float32)


def encode_modes(x16: np.ndarray, small_dim: int = 128) -> dict:
    """Each compressed mode's matrix (and its scales) from the float16 rows."""
    n, dim = x16.shape
    dim_scale = np.maximum(np.abs(x16).max(axis=0).astype(np.float32), 1e-8) / 127
    out = {"int8_dim": np.empty((n, dim), np.int8), "int8_row": np.empty((n, dim), np.int8),
           "row_scale": np.empty(n, np.float32), "binary": np.empty((n, dim // 8), np.uint8),
           "m128": np.empty((n, small_dim), np.float16), "dim_scale": dim_scale, "small_dim": small_dim}
    for s, x in float_blocks(x16):
        e = s + len(x)
        out["int8_dim"][s:e] = np.clip(np.rint(x / dim_scale), -127, 127)
        row_scale = np.maximum(np.abs(x).max(axis=1), 1e-8) / 127
        out["int8_row"][s:e] = np.rint(x / row_scale[:, None])
        out["row_scale"][s:e] = row_scale
        out["binary"][s:e] = np.packbits(x > 0, axis=1)
        out["m128"][s:e] = l2_normalize(x[:, :small_dim])
    out["binary_m128"] = np.ascontiguousarray(out["binary"][:, :small_dim // 8]).view(np.uint64)  # the prefix's signs
    out["binary"] = out["binary"].view(np.uint64)  # 6 words a row for 384 dims
    return out


def int8_scan(rows: np.ndarray, q: np.ndarray, row_scale: np.ndarray | None = None) -> np.ndarray:
    """``rows @ q`` for an int8 matrix, converted to float32 a block at a time (row scales applied after)."""
    out = np.empty(len(rows), np.float32)
    buf = np.empty((BLOCK, rows.shape[1]), np.float32)
    for s in range(0, len(rows), BLOCK):
        block = rows[s:s + BLOCK]
        b = buf[:len(block)]
        b[...] = block
        np.dot(b, q, out=out[s:s + len(block)])
    return out if row_scale is None else out * row_scale


def hamming_scores(bits: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Minus the Hamming distance between the sign bits of each row and of ``q``'s first dims (higher is nearer)."""
    qbits = np.packbits(q[:bits.shape[1] * 64] > 0).view(np.uint64)
    counts = np.bitwise_count(bits ^ qbits)
    dist = counts[:, 0].astype(np.int16)
    for j in range(1, counts.shape[1]):
        dist += counts[:, j]
    return -dist.astype(np.float32)


def scan(mode: str, enc: dict, q: np.ndarray) -> np.ndarray:
    """The first-stage scores of ``mode`` for query ``q``."""
    if mode == "int8_dim":
        return int8_scan(enc["int8_dim"], q * enc["dim_scale"])
    if mode == "int8_row":
        return int8_scan(enc["int8_row"], q, enc["row_scale"])
    if mode in ("binary", "binary_m128"):
        return hamming_scores(enc[mode], q)
    return _scores(enc["m128"], l2_normalize(q[:enc["m128"].shape[1]]))


def vector_table(path: Path, x16: np.ndarray) -> sqlite3.Connection:
    """An SQLite file with the store's ``chunk_vectors`` table (seq = row + 1), for rescoring reads."""
    if path.exists():
        path.unlink()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE chunk_vectors (seq INTEGER PRIMARY KEY, vector BLOB NOT NULL)")
    for s in range(0, len(x16), BLOCK):
        db.executemany("INSERT INTO chunk_vectors VALUES (?, ?)",
                       ((s + i + 1, v.tobytes()) for i, v in enumerate(x16[s:s + BLOCK])))
    db.commit()
    return db


def rescore(db: sqlite3.Connection, cand: np.ndarray, q: np.ndarray, dim: int, k: int = 10) -> np.ndarray:
    """The ``k`` best of ``cand`` (row indices) by exact float16 inner product, vectors read from SQLite."""
    found = db.execute(f"SELECT seq, vector FROM chunk_vectors WHERE seq IN {SQL_IN}",
                       (json.dumps((cand + 1).tolist()),)).fetchall()
    rows = np.fromiter((r[0] - 1 for r in found), np.int64, len(found))
    vecs = np.frombuffer(b"".join(r[1] for r in found), np.float16).reshape(len(found), dim)
    scores = vecs.astype(np.float32) @ q
    idx, _ = _top_k(scores, k, None)
    return rows[idx]


def ndcg(real: dict, tops: list[np.ndarray], n_real: int) -> float:
    """CoSQA nDCG@10 of per-query top-10 row lists over the queries run (a distractor row is never relevant)."""
    run = {}
    for qid, top in zip(real["query_ids"], tops):
        run[qid] = {(real["ids"][r] if r < n_real else f"distractor/{r}"): float(10 - i) for i, r in enumerate(top)}
    return evaluate_run({q: real["qrels"][q] for q in run if q in real["qrels"]}, run)["ndcg_at_10"]


def exact_top(x16: np.ndarray, queries: np.ndarray, k: int) -> list[np.ndarray]:
    """Each query's true top-k over the stored float16 rows in float32 arithmetic (what rescoring computes),
    the reference for recall; today's scan casts the query to float16 and may swap near-ties at rank 10."""
    best_idx = np.zeros((len(queries), 0), np.int64)
    best = np.zeros((len(queries), 0), np.float32)
    for s, x in float_blocks(x16):
        scores = queries @ x.T
        part = np.argpartition(-scores, min(k, x.shape[0] - 1), axis=1)[:, :k]
        best_idx = np.concatenate([best_idx, part + s], axis=1)
        best = np.concatenate([best, np.take_along_axis(scores, part, axis=1)], axis=1)
        keep = np.argsort(-best, axis=1, kind="stable")[:, :k]
        best_idx, best = np.take_along_axis(best_idx, keep, axis=1), np.take_along_axis(best, keep, axis=1)
    return list(best_idx)


def recall(tops: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Mean share of each query's true top-k found in its top-k."""
    return float(np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(tops, truth)]))


def stats(times: list[float]) -> dict:
    """Median and p95 in milliseconds."""
    a = np.asarray(times) * 1e3
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95))}


@dataclass
class Timing:
    """How a query is timed: the least of ``repeat`` runs on ``clock`` (one thread: its CPU time, which a job that
    preempts it on a shared machine does not add to; else wall time)."""

    repeat: int
    clock: Callable[[], float]

    def best(self, fn):
        """(the least time of ``repeat`` calls of ``fn``, the last result)."""
        best = float("inf")
        for _ in range(self.repeat):
            t = self.clock()
            out = fn()
            best = min(best, self.clock() - t)
        return best, out


def run_mode(mode: str, enc: dict, x16: np.ndarray, db: sqlite3.Connection, queries: np.ndarray,
             truth: dict[int, list[np.ndarray]], real: dict, timing: Timing) -> dict:
    """One compressed mode: scan, then each (k, depth) rescoring, timed per query; quality against ``truth``."""
    configs = CONFIGS[mode]
    memory = enc[mode].nbytes + (enc["row_scale"].nbytes if mode == "int8_row" else 0)
    scan_t, post_t, mem_t = [], {c: [] for c in configs}, {c: [] for c in configs}
    tops = {c: [] for c in configs}
    deepest = max(d for _, d in configs)
    for q in queries:
        t, (cand, _) = timing.best(lambda q=q: _top_k(scan(mode, enc, q), deepest, None))
        scan_t.append(t)
        for k, d in configs:
            c = cand[:d]
            t, top = timing.best(lambda q=q, k=k, c=c: rescore(db, c, q, x16.shape[1], k))
            tops[k, d].append(top)
            post_t[k, d].append(t)
            mem_t[k, d].append(timing.best(lambda q=q, k=k, c=c: c[_top_k(x16[c].astype(np.float32) @ q, k,
                                                                              None)[0]])[0])
    out = {"memory_bytes": memory, "scan": stats(scan_t), "configs": []}
    for k, d in configs:
        total = [a + b for a, b in zip(scan_t, post_t[k, d])]
        row = {"k": k, "depth": d, **stats(total), "rescore_from_sqlite": stats(post_t[k, d]),
               "rescore_from_memory": stats(mem_t[k, d]), f"recall_at_{k}": recall(tops[k, d], truth[k])}
        if k == 10:
            row["ndcg_at_10"] = ndcg(real, tops[k, d], len(real["docs"]))
        out["configs"].append(row)
        print(f"  {mode:11} {memory / 2**20:6.0f} MiB  {row['median_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f}  "
              f"recall@{k:<3} {row[f'recall_at_{k}']:.3f}  nDCG {row.get('ndcg_at_10', float('nan')):.4f}  depth {d}",
              flush=True)
    return out


def run_exact(x16: np.ndarray, queries: np.ndarray, truth: dict[int, list[np.ndarray]], real: dict,
              timing: Timing) -> dict:
    """Today's store: ``_scores`` + ``_top_k`` over the float16 matrix, top-10 and top-100."""
    out = {"memory_bytes": x16.nbytes, "configs": []}
    for k in (10, 100):
        tops, times = [], []
        for q in queries:
            t, (idx, _) = timing.best(lambda q=q, k=k: _top_k(_scores(x16, q), k, None))
            times.append(t)
            tops.append(idx)
        row = {"k": k, **stats(times), f"recall_at_{k}": recall(tops, truth[k])}
        if k == 10:
            row["ndcg_at_10"] = ndcg(real, tops, len(real["docs"]))
        out["configs"].append(row)
        print(f"  {'float16':11} {x16.nbytes / 2**20:6.0f} MiB  {row['median_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f}  "
              f"recall@{k:<3} {row[f'recall_at_{k}']:.3f}  nDCG {row.get('ndcg_at_10', float('nan')):.4f}", flush=True)
    return out


def run_size(real: dict, n: int, args) -> dict:
    """Every mode at ``n`` rows."""
    t = time.perf_counter()
    x16, distractors = build_rows(real, n, args.noise)
    enc = encode_modes(x16, args.small_dim)
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"vectors-{n}.sqlite"
    db = vector_table(path, x16)
    print(f"{n} rows built in {time.perf_counter() - t:.0f} s; distractors {distractors}", flush=True)
    queries = real["queries"][:args.queries]
    truth = {k: exact_top(x16, queries, k) for k in (10, 100)}
    out = {"rows": n, "distractors": distractors, "sqlite_file_bytes": path.stat().st_size,
           "today_small_matrix_bytes": n * args.small_dim * 2,
           "truth_ndcg_at_10": ndcg(real, truth[10], len(real["docs"])),
           "float16": run_exact(x16, queries, truth, real, args.timing)}
    for mode in args.modes.split(","):
        out[mode] = run_mode(mode, enc, x16, db, queries, truth, real, args.timing)
    db.close()
    path.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=500, help="CoSQA queries, timed and scored (at most 500)")
    ap.add_argument("--noise", type=float, default=0.6, help="distractor noise, times the real covariance's root")
    ap.add_argument("--small-dim", type=int, default=128, help="today's two_stage small dim (codesift-mini)")
    ap.add_argument("--modes", default="int8_row,binary,binary_m128,m128", help=f"of {', '.join(CONFIGS)}")
    ap.add_argument("--repeat", type=int, default=3, help="each query timed this many times, the least kept")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and BLAS threads (default: theirs); 1 on a shared machine, where a thread waiting for "
                         "a preempted sibling stalls the whole product")
    ap.add_argument("--model", default="codesift-mini")
    ap.add_argument("--work", type=Path, default=Path("/tmp/cs_store_vectors"))
    ap.add_argument("--out", type=Path, default=RESULTS / "store_vectors.json")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.timing = Timing(args.repeat, time.thread_time if args.threads == 1 else time.perf_counter)
    real = real_vectors(args.model)
    report = {"command": " ".join(sys.argv),
              "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "repeat": args.repeat,
                          "clock": "thread CPU time" if args.threads == 1 else "wall", "numpy": np.__version__, "torch": torch.__version__,
                          "load_avg_at_start": os.getloadavg()},
              "vectors": {"model": args.model, "fingerprint": real["fingerprint"], "max_length": real["max_length"],
                          "real_documents": real["per_set"], "queries": min(args.queries, len(real["queries"])),
                          "noise": args.noise},
              "sizes": []}
    for n in (int(s) for s in args.rows.split(",")):
        report["sizes"].append(run_size(real, n, args))
        report["machine"]["load_avg_at_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
