"""An in-memory mirror of the store's vectors and keyword postings for fast search on a local index.

Milvus Lite stays the durable store (and the engine for a server URI); but its dense and BM25 searches
are Python code that takes the better part of a second per query at 100,000 chunks on a small CPU. So
for a local index every chunk's full-dim vector (float16), its BM25 postings (``bm25.py``) and its
filter columns (path, language, is_test) are also kept in ``vectors.npz`` next to the manifest. A dense
query is one matrix-vector product with an exact top-k, a keyword query a sum over a few posting
lists; filters are a boolean mask applied to the scores BEFORE the cut.

Consistency with the manifest: the sidecar carries a random token, and the manifest meta
``vectors_token`` names the token of the sidecar that matches the store. An indexing run clears that
meta key (committed) before its first store write and sets it only after the new sidecar is in place,
so a run killed anywhere in between leaves no valid token and the mirror is rebuilt from the store.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codesift.index.bm25 import Postings
from codesift.index.store import in_list, keyword_text, quote

log = logging.getLogger(__name__)

SIDECAR = "vectors.npz"
META_KEY = "vectors_token"


@dataclass(frozen=True)
class ChunkFilter:
    """Search constraints, evaluated either as a Milvus expression or as a mask over the mirror."""

    language: str | None = None
    exclude_tests: bool = False
    paths: tuple[str, ...] | None = None    # None: any path
    negate_paths: bool = False              # True: ``paths`` are the ones to leave out
    exclude_ids: tuple[str, ...] = ()

    def expr(self) -> str:
        """The same constraints as a Milvus filter expression ('' when there are none)."""
        parts: list[str] = []
        if self.language:
            parts.append(f"language == {quote(self.language)}")
        if self.exclude_tests:
            parts.append("is_test == false")
        if self.paths is not None:
            parts.append(in_list("path", self.paths, negate=self.negate_paths))
        if self.exclude_ids:
            parts.append(in_list("id", self.exclude_ids, negate=True))
        return " and ".join(parts)


class VectorMirror:
    """Chunk ids, filter columns, float16 unit vectors (full dim and the renormalised small-dim prefix), BM25 postings."""

    def __init__(self, ids: np.ndarray, paths: np.ndarray, path_codes: np.ndarray, languages: np.ndarray,
                 language_codes: np.ndarray, is_test: np.ndarray, vectors: np.ndarray, small_dim: int,
                 postings: Postings, token: str = "", symbols: list[str] | None = None,
                 kinds: np.ndarray | None = None, kind_codes: np.ndarray | None = None) -> None:
        self.ids, self.paths, self.path_codes = ids, paths, path_codes
        self.languages, self.language_codes, self.is_test = languages, language_codes, is_test
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float16)
        self.small_dim = small_dim
        small = self.vectors[:, :small_dim].astype(np.float32)
        small /= np.maximum(np.linalg.norm(small, axis=1, keepdims=True), 1e-12)
        self.small = small.astype(np.float16)
        self.postings = postings
        self.token = token
        # symbol and kind of every row, for code-aware ranking (definitions, exact identifiers) without the store
        self.symbols = list(symbols) if symbols is not None else [""] * len(ids)
        self.kinds = kinds if kinds is not None else np.asarray([""])
        self.kind_codes = kind_codes if kind_codes is not None else np.zeros(len(ids), dtype=np.int16)
        self._id_pos: dict[str, int] | None = None
        self._definitions: dict[str, list[int]] | None = None
        self._path_pos = {p: i for i, p in enumerate(paths.tolist())}
        self._lang_pos = {lang: i for i, lang in enumerate(languages.tolist())}

    def __len__(self) -> int:
        return len(self.ids)

    # ---- building
    @classmethod
    def from_rows(cls, ids, paths, languages, is_test, vectors, small_dim: int, terms=None,
                  postings: Postings | None = None, symbols=None, kinds=None) -> VectorMirror:
        """A mirror from per-row columns (strings, bools), an (n, dim) array and the rows' BM25 ``terms`` (or postings)."""
        uniq_paths, path_codes = np.unique(np.asarray(paths, dtype=str), return_inverse=True)
        uniq_langs, lang_codes = np.unique(np.asarray(languages, dtype=str), return_inverse=True)
        kinds = [""] * len(ids) if kinds is None else kinds
        uniq_kinds, kind_codes = np.unique(np.asarray(list(kinds) or [""], dtype=str), return_inverse=True)
        vectors = np.asarray(vectors, dtype=np.float16)
        dim = vectors.shape[1] if vectors.ndim == 2 else 0
        return cls(np.asarray(ids, dtype=str), uniq_paths, path_codes.astype(np.int32).reshape(-1), uniq_langs,
                   lang_codes.astype(np.int16).reshape(-1), np.asarray(is_test, dtype=bool),
                   vectors.reshape(len(ids), dim), small_dim, postings or Postings.build(list(terms)),
                   symbols=[s or "" for s in symbols] if symbols is not None else None, kinds=uniq_kinds,
                   kind_codes=kind_codes.astype(np.int16).reshape(-1)[: len(ids)])

    @classmethod
    def from_store(cls, store, batch_size: int = 4096) -> VectorMirror:
        """Read every row's id, filter columns and vector from the store (the recovery path)."""
        ids, paths, langs, tests, vecs, terms, symbols, kinds = [], [], [], [], [], [], [], []
        for rows in store.iterate(["path", "language", "is_test", "vector", "terms", "symbol", "kind"], batch_size):
            for r in rows:
                ids.append(r["id"]), paths.append(r["path"]), langs.append(r["language"]), tests.append(r["is_test"])
                vecs.append(np.asarray(r["vector"], dtype=np.float16)), terms.append(r["terms"])
                symbols.append(r["symbol"]), kinds.append(r["kind"])
        arr = np.stack(vecs) if vecs else np.zeros((0, store.dim), dtype=np.float16)
        return cls.from_rows(ids, paths, langs, tests, arr, store.small_dim, terms, symbols=symbols, kinds=kinds)

    def apply(self, drop_paths: set[str], ids, paths, languages, is_test, vectors, terms, symbols=None,
              kinds=None) -> VectorMirror:
        """A new mirror without the rows of ``drop_paths`` nor rows whose id is re-added, plus the new rows."""
        drop_codes = [self._path_pos[p] for p in drop_paths if p in self._path_pos]
        keep = ~np.isin(self.path_codes, drop_codes) if drop_codes else np.ones(len(self), dtype=bool)
        new_ids = np.asarray(ids, dtype=str)
        if len(new_ids):
            keep &= ~np.isin(self.ids, new_ids)
        new_vecs = np.asarray(vectors, dtype=np.float16).reshape(len(new_ids), -1) if len(new_ids) else \
            np.zeros((0, self.vectors.shape[1]), dtype=np.float16)
        return VectorMirror.from_rows(
            np.concatenate([self.ids[keep], new_ids]),
            np.concatenate([self.paths[self.path_codes[keep]], np.asarray(paths, dtype=str)]),
            np.concatenate([self.languages[self.language_codes[keep]], np.asarray(languages, dtype=str)]),
            np.concatenate([self.is_test[keep], np.asarray(is_test, dtype=bool)]),
            np.concatenate([self.vectors[keep], new_vecs]), self.small_dim,
            postings=Postings.build(list(terms), base=self.postings, keep=keep),
            symbols=[s for s, k in zip(self.symbols, keep) if k] + list(symbols if symbols is not None else [""] * len(new_ids)),
            kinds=np.concatenate([self.kinds[self.kind_codes[keep]],
                                  np.asarray(list(kinds) if kinds is not None else [""] * len(new_ids), dtype=str)]))

    # ---- disk
    def save(self, index_dir: Path) -> str:
        """Write the sidecar atomically under a fresh token; returns the token."""
        self.token = uuid.uuid4().hex
        tmp = Path(index_dir) / (SIDECAR + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, token=np.asarray(self.token), ids=self.ids, paths=self.paths, path_codes=self.path_codes,
                     languages=self.languages, language_codes=self.language_codes, is_test=self.is_test,
                     vectors=self.vectors, small_dim=np.asarray(self.small_dim),
                     symbols=np.asarray("\n".join(s.replace("\n", " ") for s in self.symbols)), kinds=self.kinds,
                     kind_codes=self.kind_codes, **self.postings.arrays())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, Path(index_dir) / SIDECAR)
        return self.token

    @staticmethod
    def token_on_disk(index_dir: Path) -> str | None:
        """The token of the sidecar in ``index_dir`` (reads only that member), or None."""
        try:
            with np.load(Path(index_dir) / SIDECAR) as z:
                return str(z["token"])
        except Exception:  # missing, truncated (BadZipFile, EOFError) or foreign: a cache to rebuild
            return None

    @classmethod
    def load(cls, index_dir: Path, token: str | None) -> VectorMirror | None:
        """The sidecar if its token is ``token`` (the manifest's), else None."""
        if not token:
            return None
        try:
            with np.load(Path(index_dir) / SIDECAR) as z:
                if str(z["token"]) != token:
                    return None
                if "symbols" not in z.files:  # written before the mirror kept symbols: rebuild once from the store
                    log.info("%s predates symbol columns; rebuilding it from the store", SIDECAR)
                    return None
                text = str(z["symbols"])
                symbols = text.split("\n") if len(z["ids"]) else []
                return cls(z["ids"], z["paths"], z["path_codes"], z["languages"], z["language_codes"], z["is_test"],
                           z["vectors"], int(z["small_dim"]), Postings.from_arrays(z), token, symbols=symbols,
                           kinds=z["kinds"], kind_codes=z["kind_codes"])
        except Exception as exc:  # truncated (BadZipFile, EOFError), partial, older or foreign: rebuild the cache
            log.warning("could not read %s (%s: %s); rebuilding it from the store", SIDECAR, type(exc).__name__, exc)
            return None

    # ---- code-aware lookups
    def position(self, chunk_id: str) -> int | None:
        """Row of a chunk id (None when absent)."""
        if self._id_pos is None:
            self._id_pos = {i: n for n, i in enumerate(self.ids.tolist())}
        return self._id_pos.get(chunk_id)

    def kind_of(self, row: int) -> str:
        """The chunk kind of a row ('function', 'class', 'method', 'block', 'window' or '')."""
        return str(self.kinds[self.kind_codes[row]])

    def defining(self, names: set[str]) -> list[int]:
        """Rows whose symbol is one of ``names``: the whole qualified name or its last dotted part, case-sensitive."""
        if self._definitions is None:
            table: dict[str, list[int]] = {}
            for row, symbol in enumerate(self.symbols):
                for part in symbol.split(", ") if symbol else ():
                    for key in {part, part.rsplit(".", 1)[-1]}:
                        table.setdefault(key, []).append(row)
            self._definitions = table
        return sorted({r for n in names for r in self._definitions.get(n, ())})

    # ---- search
    def mask(self, flt: ChunkFilter | None) -> np.ndarray | None:
        """Rows allowed by the filter (None: all)."""
        if flt is None:
            return None
        m = np.ones(len(self), dtype=bool)
        constrained = False
        if flt.language:
            code = self._lang_pos.get(flt.language)
            m &= self.language_codes == code if code is not None else False
            constrained = True
        if flt.exclude_tests:
            m &= ~self.is_test
            constrained = True
        if flt.paths is not None:
            codes = [self._path_pos[p] for p in flt.paths if p in self._path_pos]
            hit = np.isin(self.path_codes, codes)
            m &= ~hit if flt.negate_paths else hit
            constrained = True
        if flt.exclude_ids:
            m[[p for p in map(self.position, flt.exclude_ids) if p is not None]] = False
            constrained = True
        return m if constrained else None

    def top_k(self, query: np.ndarray, k: int, flt: ChunkFilter | None = None, small: bool = False) -> list[tuple[str, float]]:
        """Exact top-k (id, inner product) by the full vectors (or the small-dim prefixes), filter applied first."""
        import torch

        mat = self.small if small else self.vectors
        q = np.asarray(query, dtype=np.float32)[: mat.shape[1]]
        if small:
            q = q / max(float(np.linalg.norm(q)), 1e-12)
        if not len(self):
            return []
        # float16 storage halves the memory traffic of this memory-bound product; torch accumulates in float32
        scores = (torch.from_numpy(mat) @ torch.from_numpy(q.astype(np.float16))).float().numpy()
        return self._cut(scores, k, flt)

    def bm25_top_k(self, query: str, k: int, flt: ChunkFilter | None = None) -> list[tuple[str, float]]:
        """Top-k (id, BM25 score) over the rows' keyword terms, filter applied first; rows without a query term left out."""
        if not len(self):
            return []
        scores = self.postings.scores(keyword_text(query).split())
        k = min(k, int(np.count_nonzero(scores)))
        return self._cut(np.where(scores > 0, scores, -np.inf), k, flt)

    def _cut(self, scores: np.ndarray, k: int, flt: ChunkFilter | None) -> list[tuple[str, float]]:
        m = self.mask(flt)
        if m is not None:
            scores = np.where(m, scores, -np.inf)
            k = min(k, int(np.count_nonzero(m & np.isfinite(scores))))
        k = min(k, len(scores))
        if k <= 0:
            return []
        idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return [(str(self.ids[i]), float(scores[i])) for i in idx]

    def rerank(self, query: np.ndarray, ids: list[str]) -> list[tuple[str, float]]:
        """(id, full-dim inner product) for these ids, best first."""
        if self._id_pos is None:
            self._id_pos = {i: n for n, i in enumerate(self.ids.tolist())}
        pos = np.asarray([self._id_pos[i] for i in ids], dtype=np.int64)
        scores = self.vectors[pos].astype(np.float32) @ np.asarray(query, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")
        return [(ids[i], float(scores[i])) for i in order]
