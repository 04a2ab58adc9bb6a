"""The BM25 baseline (bm25s) over the index's own terms (``data.terms.code_terms``: identifiers whole and split)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codesift.data.terms import code_terms


@dataclass
class BM25Config:
    """BM25 parameters (Lucene's variant and defaults)."""

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"


class BM25Index:
    """A bm25s index over one corpus; :meth:`search` returns scores and corpus indices like ``exact_top_k``."""

    def __init__(self, texts: list[str], config: BM25Config | None = None) -> None:
        import logging

        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG

        self.config = config or BM25Config()
        self.n_docs = len(texts)
        # bm25s drops a document with no tokens; an impossible placeholder token keeps row numbers aligned.
        tokens = [code_terms(t) or ["\x00empty"] for t in texts]
        self._bm25 = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        self._bm25.index(tokens, show_progress=False)
        self._vocab = set(self._bm25.vocab_dict)

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and corpus indices of the ``k`` best documents per query, best first (ties: lower index first)."""
        k = min(k, self.n_docs)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        idx = np.zeros((len(queries), k), dtype=np.int64)
        for i, q in enumerate(queries):
            toks = [t for t in code_terms(q) if t in self._vocab]
            full = self._bm25.get_scores(toks) if toks else np.zeros(self.n_docs, dtype=np.float32)
            order = np.argsort(-full, kind="stable")[:k]
            scores[i], idx[i] = full[order], order
        return scores, idx
