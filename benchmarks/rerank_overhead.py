"""What code-aware ranking, identifier lookup and file results add to a warm search (query embedding excluded).

    python benchmarks/rerank_overhead.py --index /tmp/cs_cold/tree/.codesift [--queries 100]
                                         [--out benchmarks/results/rerank_overhead.json]

Times `CodeIndex.search` in one process on an existing index with a stub query embedder (fixed random unit
vectors), as benchmarks/index_perf.py does, for: hybrid with ranking off (plain RRF, the old path), hybrid with
code-aware ranking (the default), a query naming an identifier (symbol lookup + boost), and `search_files`.
The ranking's work is over the ~200 fused candidates, so its cost does not grow with the index.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from codesift.testing import StandInEncoder


class FixedEmbedder(StandInEncoder):
    """Random unit query vectors in turn, standing in for the index's model (its dim and fingerprint)."""

    def __init__(self, dim: int, fingerprint: str) -> None:
        self.dimension, self.matryoshka_dims, self.fingerprint = dim, (dim,), fingerprint
        rng = np.random.default_rng(0)
        v = rng.standard_normal((64, dim)).astype(np.float32)
        self.vectors, self.i = v / np.linalg.norm(v, axis=1, keepdims=True), 0

    def encode(self, texts, **_):
        self.i += 1
        return self.vectors[self.i % len(self.vectors)][None, :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/rerank_overhead.json")
    args = ap.parse_args()
    from codesift.index.search import CodeIndex

    words = "parse read write config header socket timeout retry error cache encode decode file path".split()
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(words, 4)) for _ in range(args.queries)]
    with CodeIndex(args.index) as probe:
        meta = probe.manifest.get_meta()
    with CodeIndex(args.index, embedder=FixedEmbedder(meta["dim"], meta.get("fingerprint"))) as ix:
        symbols = [r["symbol"] for r in ix.store.rows(["symbol"]) if r["symbol"] and "," not in r["symbol"]]
        idents = [f"why does {symbols[int(rng.integers(len(symbols)))].rsplit('.', 1)[-1]}() fail on {t}" for t in texts]
        out = {"command": " ".join(sys.argv), "chunks": ix.store.count()}
        cases = {"hybrid_plain_rrf": (ix.search, texts, {"rerank": False}),
                 "hybrid_code_aware": (ix.search, texts, {}),
                 "hybrid_identifier_query": (ix.search, idents, {}),
                 "hybrid_files": (ix.search_files, texts, {})}
        for name, (run, qs, kw) in cases.items():
            run(qs[0], limit=10, **kw)
            times = []
            for q in qs:
                t = time.perf_counter()
                run(q, limit=10, **kw)
                times.append(time.perf_counter() - t)
            ms = np.asarray(times) * 1000
            out[name] = {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
                         "mean_ms": round(statistics.mean(ms.tolist()), 2)}
            print(name, out[name], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
