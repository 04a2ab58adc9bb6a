"""The BM25 baseline (bm25s), with a tokenizer that also splits code identifiers (``snake_case``, ``camelCase``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def code_tokenize(text: str, stopwords: frozenset[str] = frozenset()) -> list[str]:
    """Lower-cased words of ``text``; an identifier also yields its parts (``getUserName`` -> get, user, name)."""
    out: list[str] = []
    for word in _WORD.findall(text):
        parts = [p.lower() for chunk in word.split("_") for p in _CAMEL.findall(chunk)]
        whole = word.lower().strip("_")
        for tok in ([whole] if whole else []) + (parts if len(parts) > 1 else []):
            if len(tok) > 1 and tok not in stopwords:
                out.append(tok)
    return out


@dataclass
class BM25Config:
    """BM25 parameters (Lucene's variant and defaults)."""

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"
    english_stopwords: bool = True


class BM25Index:
    """A bm25s index over one corpus; :meth:`search` returns scores and corpus indices like ``exact_top_k``."""

    def __init__(self, texts: list[str], config: BM25Config | None = None) -> None:
        import logging

        import bm25s
        from bm25s.stopwords import STOPWORDS_EN

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG

        self.config = config or BM25Config()
        self._stop = frozenset(STOPWORDS_EN) if self.config.english_stopwords else frozenset()
        self.n_docs = len(texts)
        # bm25s drops a document with no tokens; an impossible placeholder token keeps row numbers aligned.
        tokens = [code_tokenize(t, self._stop) or ["\x00empty"] for t in texts]
        self._bm25 = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        self._bm25.index(tokens, show_progress=False)
        self._vocab = set(self._bm25.vocab_dict)

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and corpus indices of the ``k`` best documents per query, best first (ties: lower index first)."""
        k = min(k, self.n_docs)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        idx = np.zeros((len(queries), k), dtype=np.int64)
        for i, q in enumerate(queries):
            toks = [t for t in code_tokenize(q, self._stop) if t in self._vocab]
            full = self._bm25.get_scores(toks) if toks else np.zeros(self.n_docs, dtype=np.float32)
            order = np.argsort(-full, kind="stable")[:k]
            scores[i], idx[i] = full[order], order
        return scores, idx
