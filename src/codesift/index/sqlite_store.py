"""The embedded store: chunks, float16 vectors and an FTS5 keyword index in the index's own SQLite file.

Why SQLite (figures in docs/search.md): one file, in WAL mode, holds the manifest and the chunks, so a
batch of files (their records, rows, vectors and terms) commits in ONE transaction; a run killed at any
point leaves the last committed batch and nothing half-written, with no second copy to keep in step.

- Dense search is exact: the full-dim vectors (float16; the Matryoshka small dim is their prefix) are
  read once into memory as one matrix, then kept current by ``generation``, a counter every write bumps in
  its own transaction: a changed generation reads only the rows added since (``seq`` only grows) and
  drops the rows whose ``seq`` is gone. A query is one matrix-vector product and an exact top-k.
- Keyword search is FTS5's ``bm25()`` over ``keyword_text`` terms (identifiers whole and split, stemmed),
  tokenized on spaces only (``_`` is part of a term), so FTS5 ranks exactly the terms codesift makes.
- Filters are one SQL condition (``ChunkFilter.sql``): in the FTS query's WHERE, and, for dense search,
  turned into a boolean mask over the matrix (cached per filter until the next write); either way before
  the top-k cut.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence

import numpy as np

from codesift.index.manifest import Manifest
from codesift.index.store import META_FIELDS, OUTPUT_FIELDS, ChunkFilter, keyword_text
from codesift.model.norm import l2_normalize

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: rows added since a generation are seq > the last seen
    id TEXT NOT NULL UNIQUE, path TEXT NOT NULL, language TEXT NOT NULL, is_test INTEGER NOT NULL,
    symbol TEXT NOT NULL, kind TEXT NOT NULL, start_line INTEGER NOT NULL, end_line INTEGER NOT NULL,
    content_hash TEXT NOT NULL, text TEXT NOT NULL
);
-- deletes by path, and a covering index for filters (a scan of it never reads the chunks' text)
CREATE INDEX IF NOT EXISTS chunks_by_path ON chunks (path, language, is_test, id);
CREATE TABLE IF NOT EXISTS chunk_vectors (seq INTEGER PRIMARY KEY, vector BLOB NOT NULL);  -- float16, full dim
CREATE TABLE IF NOT EXISTS chunk_symbols (name TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS chunk_symbols_by_name ON chunk_symbols (name);
CREATE INDEX IF NOT EXISTS chunk_symbols_by_seq ON chunk_symbols (seq);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms USING fts5 (terms, tokenize = "unicode61 tokenchars '_'");
CREATE TABLE IF NOT EXISTS store_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
COLUMNS = ("id", "path", "language", "is_test", "symbol", "kind", "start_line", "end_line", "content_hash", "text")
_IN = "(SELECT value FROM json_each(?))"


def symbol_names(symbol: str) -> set[str]:
    """The names a chunk defines: each of its symbols (", "-separated) whole and by its last dotted part."""
    return {key for part in (symbol.split(", ") if symbol else ()) for key in (part, part.rsplit(".", 1)[-1])}


class SQLiteStore:
    """Chunks of one index in its SQLite file (shared with the ``Manifest``), searched in memory and by FTS5."""

    shares_manifest = True

    def __init__(self, manifest: Manifest, dim: int, small_dim: int) -> None:
        self.manifest, self.db = manifest, manifest.db
        self.dim, self.small_dim = dim, small_dim
        self.db.executescript(SCHEMA)
        self._generation: int | None = None    # of the matrix in memory
        self._seq = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float16)
        self._small = np.zeros((0, small_dim), dtype=np.float16)
        self._masks: dict[ChunkFilter, np.ndarray] = {}

    def describe(self) -> str:
        """The SQLite file."""
        return str(self.manifest.path)

    def close(self) -> None:
        """Drop the matrix (the connection belongs to the manifest)."""
        self._generation, self._masks = None, {}
        self._seq = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, self.dim), dtype=np.float16)
        self._small = np.zeros((0, self.small_dim), dtype=np.float16)

    # ---- writes: each joins the manifest's transaction when the caller holds one
    def replace_files(self, paths: Sequence[str], rows: list[dict]) -> None:
        """Remove every chunk of ``paths``, add ``rows``, bump the generation: one transaction."""
        with self.manifest.transaction() as db:
            self._delete(db, paths)
            seen: set[str] = set()
            for r in rows:
                if r["id"] in seen:  # the same chunk twice in one file: keep one
                    continue
                seen.add(r["id"])
                seq = db.execute(f"INSERT INTO chunks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                                 [int(r[c]) if c == "is_test" else r[c] for c in COLUMNS]).lastrowid
                db.execute("INSERT INTO chunk_vectors VALUES (?, ?)", (seq, np.asarray(r["vector"], np.float16).tobytes()))
                db.execute("INSERT INTO chunk_terms (rowid, terms) VALUES (?, ?)", (seq, r["terms"]))
                db.executemany("INSERT INTO chunk_symbols VALUES (?, ?)", [(n, seq) for n in symbol_names(r["symbol"])])
            self._bump(db)

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Remove every chunk of these files (one transaction)."""
        with self.manifest.transaction() as db:
            self._delete(db, paths)
            self._bump(db)

    @staticmethod
    def _delete(db, paths: Sequence[str]) -> None:
        arg = (json.dumps(list(paths)),)
        seqs = f"SELECT seq FROM chunks WHERE path IN {_IN}"
        db.execute(f"DELETE FROM chunk_terms WHERE rowid IN ({seqs})", arg)
        db.execute(f"DELETE FROM chunk_vectors WHERE seq IN ({seqs})", arg)
        db.execute(f"DELETE FROM chunk_symbols WHERE seq IN ({seqs})", arg)
        db.execute(f"DELETE FROM chunks WHERE path IN {_IN}", arg)

    @staticmethod
    def _bump(db) -> None:
        db.execute("INSERT INTO store_state VALUES ('generation', 1) "
                   "ON CONFLICT (key) DO UPDATE SET value = value + 1")

    def flush(self) -> None:
        """Nothing to do: a commit is searchable at once."""

    # ---- reads
    def generation(self) -> int:
        """The write counter (0 before the first write)."""
        row = self.db.execute("SELECT value FROM store_state WHERE key = 'generation'").fetchone()
        return row[0] if row else 0

    def count(self) -> int:
        """Number of chunks stored."""
        return self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    @contextlib.contextmanager
    def _snapshot(self):
        """A read transaction: one consistent view across several SELECTs (WAL lets writers go on meanwhile)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def _sync(self) -> None:
        """Bring the in-memory matrix to the database's generation: new rows read, deleted rows dropped."""
        with self._snapshot():
            gen = self.generation()
            if gen == self._generation:
                return
            live = np.fromiter((r[0] for r in self.db.execute("SELECT seq FROM chunks INDEXED BY chunks_by_path")),
                               dtype=np.int64)
            live.sort()
            last = int(self._seq[-1]) if len(self._seq) else 0
            keep = np.isin(self._seq, live, assume_unique=True)
            new = self.db.execute("SELECT seq, vector FROM chunk_vectors WHERE seq > ? ORDER BY seq", (last,)).fetchall()
        seq = np.fromiter((r[0] for r in new), dtype=np.int64, count=len(new))
        vecs = np.frombuffer(b"".join(r[1] for r in new), dtype=np.float16).reshape(len(new), self.dim)
        small = l2_normalize(vecs[:, :self.small_dim]).astype(np.float16)
        if keep.all():
            self._seq = np.concatenate([self._seq, seq])
            self._vectors = np.concatenate([self._vectors, vecs]) if len(self._vectors) else vecs.copy()
            self._small = np.concatenate([self._small, small])
        else:
            self._seq = np.concatenate([self._seq[keep], seq])
            self._vectors = np.concatenate([self._vectors[keep], vecs])
            self._small = np.concatenate([self._small[keep], small])
        if len(self._seq) != len(live) or not np.array_equal(self._seq, live):  # cannot happen; read all again
            log.warning("the in-memory vectors disagree with %s; reading them again", self.manifest.path)
            self._generation, self._seq = None, np.zeros(0, dtype=np.int64)
            self._vectors = np.zeros((0, self.dim), dtype=np.float16)
            self._small = np.zeros((0, self.small_dim), dtype=np.float16)
            return self._sync()
        self._generation, self._masks = gen, {}

    def _mask(self, flt: ChunkFilter) -> np.ndarray | None:
        """Rows of the matrix the filter allows (None: all), from one SQL query, cached until the next write."""
        if flt == ChunkFilter():
            return None
        if flt not in self._masks:
            if len(self._masks) >= 64:
                self._masks.clear()
            cond, args = flt.sql()
            allowed = np.fromiter((r[0] for r in self.db.execute(
                f"SELECT seq FROM chunks INDEXED BY chunks_by_path WHERE {cond}", args)), dtype=np.int64)
            self._masks[flt] = np.isin(self._seq, allowed)
        return self._masks[flt]

    def dense(self, vector: np.ndarray, limit: int, flt: ChunkFilter, two_stage: bool = False,
              depth: int = 100) -> list[dict]:
        """Exact top-k by inner product over the in-memory matrix, filter mask applied before the cut."""
        self._sync()
        q = np.asarray(vector, dtype=np.float32)
        mask = self._mask(flt)
        if not two_stage:
            idx, scores = _top_k(_scores(self._vectors, q), limit, mask)
        else:
            idx, _ = _top_k(_scores(self._small, l2_normalize(q[:self.small_dim])), depth, mask)
            full = self._vectors[idx].astype(np.float32) @ q
            order = np.argsort(-full, kind="stable")[:limit]
            idx, scores = idx[order], full[order]
        return self._rows_at(self._seq[idx], scores)

    def _rows_at(self, seqs: np.ndarray, scores: np.ndarray) -> list[dict]:
        """META_FIELDS rows of these seqs, in this order, with their scores as ``distance``."""
        if not len(seqs):
            return []
        found = {r[0]: r for r in self.db.execute(
            f"SELECT seq, id, {', '.join(META_FIELDS)} FROM chunks WHERE seq IN {_IN}", (json.dumps(seqs.tolist()),))}
        out = []
        for seq, score in zip(seqs.tolist(), scores.tolist()):
            r = found.get(seq)
            if r is not None:  # deleted by another process since the matrix was read
                out.append({"id": r[1], **dict(zip(META_FIELDS, r[2:])), "distance": float(score)})
        return out

    def bm25(self, query: str, limit: int, flt: ChunkFilter) -> list[dict]:
        """FTS5 ``bm25()`` over the chunks' terms (score = -bm25, higher is better), filter in the WHERE."""
        terms = keyword_text(query).split()
        if not terms or limit <= 0:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)   # a repeated query term counts again
        if flt == ChunkFilter():
            hits = self.db.execute("SELECT rowid, -bm25(chunk_terms) FROM chunk_terms WHERE chunk_terms MATCH ? "
                                   "ORDER BY bm25(chunk_terms) LIMIT ?", (match, limit)).fetchall()
        else:
            cond, args = flt.sql("c")
            hits = self.db.execute(
                "SELECT t.rowid, -bm25(chunk_terms) AS s FROM chunk_terms AS t JOIN chunks AS c ON c.seq = t.rowid "
                f"WHERE chunk_terms MATCH ? AND {cond} ORDER BY bm25(chunk_terms) LIMIT ?", (match, *args, limit)).fetchall()
        return self._rows_at(np.asarray([h[0] for h in hits], dtype=np.int64), np.asarray([h[1] for h in hits]))

    def get(self, ids: Sequence[str], fields: Sequence[str] = OUTPUT_FIELDS) -> dict[str, dict]:
        """Rows by chunk id, as {id: row}."""
        if not ids:
            return {}
        cur = self.db.execute(f"SELECT {self._select(fields)} FROM chunks WHERE id IN {_IN}", (json.dumps(list(ids)),))
        return {r["id"]: r for r in self._dicts(cur, fields)}

    def chunks_of(self, path: str) -> list[dict]:
        """Every chunk of one file."""
        fields = ["path", "start_line", "end_line", "text"]
        return list(self._dicts(self.db.execute(f"SELECT {self._select(fields)} FROM chunks WHERE path = ?", (path,)),
                                fields))

    def defining(self, names: set[str], flt: ChunkFilter, limit: int) -> list[dict]:
        """Chunks whose symbol is one of ``names`` (whole or last dotted part), filter applied."""
        cond, args = flt.sql("chunks")
        cur = self.db.execute(
            f"SELECT {self._select(META_FIELDS)} FROM chunks WHERE seq IN (SELECT seq FROM chunk_symbols WHERE name IN "
            f"{_IN}) AND {cond} ORDER BY seq LIMIT ?", (json.dumps(sorted(names)), *args, limit))
        return list(self._dicts(cur, META_FIELDS))

    def rows(self, fields: Sequence[str]) -> Iterator[dict]:
        """Every row (id and ``fields``; ``vector`` as float32, ``terms`` the keyword terms)."""
        yield from self._dicts(self.db.execute(f"SELECT {self._select(fields)} FROM chunks ORDER BY seq"), fields)

    def paths(self) -> set[str]:
        """The paths that have chunks."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT path FROM chunks")}

    @staticmethod
    def _select(fields: Sequence[str]) -> str:
        sub = {"vector": "(SELECT vector FROM chunk_vectors AS v WHERE v.seq = chunks.seq)",
               "terms": "(SELECT terms FROM chunk_terms AS t WHERE t.rowid = chunks.seq)"}
        for f in fields:
            if f not in COLUMNS and f not in sub:
                raise ValueError(f"unknown chunk field {f!r}")
        return ", ".join(["id", *(sub.get(f, f) for f in fields)])

    @staticmethod
    def _dicts(cursor, fields: Sequence[str]) -> Iterator[dict]:
        for r in cursor:
            row = dict(zip(("id", *fields), r))
            if "is_test" in row:
                row["is_test"] = bool(row["is_test"])
            if "vector" in row:
                row["vector"] = np.frombuffer(row["vector"], dtype=np.float16).astype(np.float32)
            yield row


def _scores(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``matrix @ q`` for a float16 matrix: torch keeps it float16 (half the memory traffic), accumulating in float32."""
    import torch

    if not len(matrix):
        return np.zeros(0, dtype=np.float32)
    return (torch.from_numpy(matrix) @ torch.from_numpy(q.astype(np.float16))).float().numpy()


def _top_k(scores: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, scores) of the ``k`` best rows that the mask allows, best first (ties: lower row first)."""
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
        k = min(k, int(np.count_nonzero(mask)))
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx, scores[idx]
