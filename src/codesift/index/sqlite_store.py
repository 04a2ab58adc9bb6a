"""The embedded store: chunks, float16 vectors and BM25 postings (``sqlite_terms``) in the index's own SQLite file.

Why SQLite (figures in docs/search.md): one file, in WAL mode, holds the manifest and the chunks, so a
batch of files (their records, rows, vectors and terms) commits in ONE transaction; a run killed at any
point leaves the last committed batch and nothing half-written, with no second copy to keep in step.

- Dense search is exact: the full-dim vectors (float16; the Matryoshka small dim is their prefix) are
  read once into memory as one matrix (``MemoryRows``), then kept current by ``generation``, a counter every
  write bumps in its own transaction: a changed generation appends only the rows added since (``seq`` only
  grows, into spare capacity) and marks the rows whose ``seq`` is gone as dead (left out of every top-k,
  compacted away once they are a quarter), so following a one-file edit costs the change, not the matrix.
  A query is one matrix-vector product and an exact top-k. An index built with ``--vectors binary`` holds only
  the vectors' sign bits in memory (48 bytes a row for 384 dims, not 768 + 256): a query takes the Hamming-nearest
  rows (popcount; 20 x the limit, 500 and a thousandth of the rows at least), reads their float16 vectors from
  ``chunk_vectors``, ranks them exactly;
  benchmarks/store_vectors.py measured it at 100k and 1M rows (BENCHMARKS.md).
- Keyword search is BM25 over ``keyword_text`` terms (identifiers whole and split, stemmed): posting lists
  in segments (``sqlite_terms.py``), read for the query's terms and scored in memory over the same rows as
  the matrix, with each chunk's term count kept beside its ``seq``.
- Filters are one SQL condition (``ChunkFilter.sql``) turned into a boolean mask over those rows (cached per
  filter until the next write), applied by both searches before the top-k cut.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence

import numpy as np

from codesift.index.config import VECTORS
from codesift.index.manifest import Manifest, damaged_message
from codesift.index.sqlite_terms import SCHEMA as TERMS_SCHEMA
from codesift.index.sqlite_terms import SQL_IN, add_chunks, bm25_scores, delete_chunks, length_norm, locate
from codesift.index.store import (
    META_FIELDS,
    OUTPUT_FIELDS,
    ChunkFilter,
    StoreDamagedError,
    keyword_text,
    symbol_names,
)
from codesift.model.norm import l2_normalize

log = logging.getLogger(__name__)

# Binary rows: the Hamming-nearest max(BINARY_FACTOR x limit, BINARY_DEPTH, rows / BINARY_SHARE) are rescored
# (two-stage: its depth if deeper); the crowd around a query grows with the rows. benchmarks/store_vectors.py, real
# vectors: recall@10 of the exact top 10 0.999 from 500 candidates at 100k rows, 0.994 from 1,000 at 1M (500: 0.968);
# recall@100 (search asks the store for 100, fed into fusion) 0.995 from 2,000 at 100k, 0.984 at 1M.
BINARY_DEPTH = 500
BINARY_FACTOR = 20
BINARY_SHARE = 1000

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
CREATE TABLE IF NOT EXISTS store_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
""" + TERMS_SCHEMA
COLUMNS = ("id", "path", "language", "is_test", "symbol", "kind", "start_line", "end_line", "content_hash", "text")


def filter_sql(flt: ChunkFilter, table: str = "chunks") -> tuple[str, list]:
    """The constraints as an SQL condition over ``table`` and its parameters ('1' when there are none)."""
    parts: list[str] = []
    args: list = []
    if flt.language:
        parts.append(f"{table}.language = ?")
        args.append(flt.language)
    if flt.exclude_tests:
        parts.append(f"{table}.is_test = 0")
    if flt.paths is not None:
        parts.append(f"{table}.path {'NOT IN' if flt.negate_paths else 'IN'} {SQL_IN}")
        args.append(json.dumps(list(flt.paths)))
    if flt.exclude_ids:
        parts.append(f"{table}.id NOT IN {SQL_IN}")
        args.append(json.dumps(list(flt.exclude_ids)))
    return (" AND ".join(parts) or "1"), args


class MemoryRows:
    """The stored chunks in memory, in ``seq`` order: seq, keyword-term count, alive or not, and the vectors in the
    index's layout (``VECTORS``): full-dim float16 and the Matryoshka small-dim prefix, or only their sign bits.

    Rows are appended into spare capacity (an eighth at least; grown by half when full) and deleted rows only marked
    dead, so an update costs the rows it changes; dead rows are compacted away when they are a quarter of all.
    """

    def __init__(self, dim: int, small_dim: int, vectors: str = "float16") -> None:
        self.n, self.dead = 0, 0
        self.binary, self.small_dim = vectors == "binary", small_dim
        shapes: dict[str, tuple[tuple[int, ...], type]] = {"seq": ((), np.int64), "lengths": ((), np.int32),
                                                           "alive": ((), bool)}
        if self.binary:
            shapes["bits"] = ((-(-dim // 8),), np.uint8)
        else:
            shapes |= {"vectors": ((dim,), np.float16), "small": ((small_dim,), np.float16)}
        self._cols = {name: np.zeros((0, *shape), dtype) for name, (shape, dtype) in shapes.items()}
        self.norm = np.zeros(0, dtype=np.float32)

    @property
    def seq(self) -> np.ndarray:
        """Ascending seqs, dead rows included."""
        return self._cols["seq"][:self.n]

    @property
    def vectors(self) -> np.ndarray:
        """Full-dim float16 vectors, row by row with ``seq`` (float16 layout only)."""
        return self._cols["vectors"][:self.n]

    @property
    def small(self) -> np.ndarray:
        """The Matryoshka small-dim prefixes, renormalised (float16 layout only)."""
        return self._cols["small"][:self.n]

    @property
    def bits(self) -> np.ndarray:
        """The full-dim vectors' sign bits, packed (binary layout only); the small dim's are the first bytes."""
        return self._cols["bits"][:self.n]

    @property
    def alive(self) -> np.ndarray | None:
        """Which rows are stored still (None: all of them)."""
        return self._cols["alive"][:self.n] if self.dead else None

    def last_seq(self) -> int:
        """The highest seq held (0 when empty): rows above it are new."""
        return int(self._cols["seq"][self.n - 1]) if self.n else 0

    def update(self, live: np.ndarray, seq: np.ndarray, lengths: np.ndarray, vecs: np.ndarray) -> None:
        """Mark rows whose seq is not in ``live`` (ascending) dead; append the new rows (seqs above ``last_seq``)."""
        alive = self._cols["alive"]
        if self.n:
            _, found = locate(live, self.seq)
            alive[:self.n] &= found
            self.dead = self.n - int(np.count_nonzero(alive[:self.n]))
        if self.dead * 4 > self.n:
            self._compact()
        need = self.n + len(seq)
        if need > len(self._cols["seq"]):  # an eighth spare at least, so the next edits append in place
            self._grow(max(need + max(need // 8, 1024), int(len(self._cols["seq"]) * 1.5)))
        new = {"seq": seq, "lengths": lengths, "alive": True}
        if self.binary:
            new["bits"] = sign_bits(vecs)
        else:
            new |= {"vectors": vecs, "small": l2_normalize(vecs[:, :self.small_dim]).astype(np.float16)}
        end = self.n + len(seq)
        for name, values in new.items():
            self._cols[name][self.n:end] = values
        self.n = end
        alive = self._cols["alive"][:self.n]
        lengths_held = self._cols["lengths"][:self.n]
        avg = float(lengths_held[alive].mean()) if alive.any() else 1.0
        self.norm = length_norm(lengths_held, avg)

    def _grow(self, capacity: int) -> None:
        for name, a in self._cols.items():
            grown = np.zeros((capacity, *a.shape[1:]), dtype=a.dtype)
            grown[:self.n] = a[:self.n]
            self._cols[name] = grown

    def _compact(self) -> None:
        keep = self._cols["alive"][:self.n]
        self._cols = {name: a[:self.n][keep] for name, a in self._cols.items()}
        self.n, self.dead = int(np.count_nonzero(keep)), 0


class SQLiteStore:
    """Chunks of one index in its SQLite file (shared with the ``Manifest``), searched in memory (vectors, BM25 postings)."""

    shares_manifest = True

    def __init__(self, manifest: Manifest, dim: int, small_dim: int, vectors: str = "float16") -> None:
        if vectors not in VECTORS:
            raise ValueError(f"unknown vector layout {vectors!r}; use one of {', '.join(VECTORS)}")
        self.manifest, self.db = manifest, manifest.db
        self.dim, self.small_dim, self.vectors = dim, small_dim, vectors
        self.db.executescript(SCHEMA)
        self._from_fts5()
        self.close()

    def describe(self) -> str:
        """The SQLite file."""
        return str(self.manifest.path)

    def close(self) -> None:
        """Drop the rows in memory (the connection belongs to the manifest)."""
        self._generation: int | None = None    # of the rows in memory
        self._masks: dict[ChunkFilter, np.ndarray | None] = {}
        self._rows = MemoryRows(self.dim, self.small_dim, self.vectors)

    def _from_fts5(self) -> None:
        """An index written before the postings (an FTS5 ``chunk_terms`` table): move its terms over, once."""
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_terms'").fetchone():
            return
        with self.manifest.transaction() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_terms'").fetchone():  # not moved meanwhile
                add_chunks(db, db.execute("SELECT rowid, terms FROM chunk_terms").fetchall())
                db.execute("DROP TABLE chunk_terms")
                self._bump(db)

    # ---- writes: each joins the manifest's transaction when the caller holds one
    def replace_files(self, paths: Sequence[str], rows: list[dict]) -> None:
        """Remove every chunk of ``paths``, add ``rows``, bump the generation: one transaction."""
        with self.manifest.transaction() as db:
            self._delete(db, paths)
            seen: set[str] = set()
            terms: list[tuple[int, str]] = []
            for r in rows:
                if r["id"] in seen:  # the same chunk twice in one file: keep one
                    continue
                seen.add(r["id"])
                seq = db.execute(f"INSERT INTO chunks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                                 [int(r[c]) if c == "is_test" else r[c] for c in COLUMNS]).lastrowid
                db.execute("INSERT INTO chunk_vectors VALUES (?, ?)", (seq, np.asarray(r["vector"], np.float16).tobytes()))
                terms.append((seq, r["terms"]))
                db.executemany("INSERT INTO chunk_symbols VALUES (?, ?)", [(n, seq) for n in symbol_names(r["symbol"])])
            add_chunks(db, terms)
            self._bump(db)

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Remove every chunk of these files (one transaction)."""
        with self.manifest.transaction() as db:
            self._delete(db, paths)
            self._bump(db)

    @staticmethod
    def _delete(db, paths: Sequence[str]) -> None:
        arg = (json.dumps(list(paths)),)
        seqs = f"SELECT seq FROM chunks WHERE path IN {SQL_IN}"
        delete_chunks(db, seqs, arg)
        db.execute(f"DELETE FROM chunk_vectors WHERE seq IN ({seqs})", arg)
        db.execute(f"DELETE FROM chunk_symbols WHERE seq IN ({seqs})", arg)
        db.execute(f"DELETE FROM chunks WHERE path IN {SQL_IN}", arg)

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

    def damage(self) -> str | None:
        """Rows a killed run cannot leave (each batch commits whole) but a damaged or hand-edited file can: vectors
        without their chunk, chunks without a vector, vectors of the wrong length; None when there are none."""
        found = [(self.db.execute(sql, args).fetchone()[0], what) for sql, args, what in self._damage_queries()]
        return ", ".join(f"{n} {what}" for n, what in found if n) or None

    def _damage_queries(self) -> list[tuple[str, tuple, str]]:
        return [("SELECT COUNT(*) FROM chunk_vectors WHERE seq NOT IN (SELECT seq FROM chunks)", (),
                 "vector rows without their chunk"),
                ("SELECT COUNT(*) FROM chunks WHERE seq NOT IN (SELECT seq FROM chunk_vectors)", (),
                 "chunks without a vector"),
                ("SELECT COUNT(*) FROM chunk_vectors WHERE length(vector) != ?", (2 * self.dim,),
                 f"vectors not of {self.dim} dimensions")]

    def repair(self) -> list[str]:
        """Remove damaged rows (one transaction): vectors, symbols and terms without their chunk, and every chunk of
        a file that has a chunk without a good vector; returns those files (to be written again)."""
        with self.manifest.transaction() as db:
            paths = [r[0] for r in db.execute(
                "SELECT DISTINCT path FROM chunks WHERE seq NOT IN (SELECT seq FROM chunk_vectors) "
                "OR seq IN (SELECT seq FROM chunk_vectors WHERE length(vector) != ?)", (2 * self.dim,))]
            self._delete(db, paths)
            orphans = "SELECT seq FROM {} WHERE seq NOT IN (SELECT seq FROM chunks)"
            delete_chunks(db, orphans.format("chunk_bags"), ())
            db.execute(f"DELETE FROM chunk_vectors WHERE seq IN ({orphans.format('chunk_vectors')})")
            db.execute(f"DELETE FROM chunk_symbols WHERE seq IN ({orphans.format('chunk_symbols')})")
            self._bump(db)
        self.close()
        return paths

    def _damaged(self) -> StoreDamagedError:
        return StoreDamagedError(damaged_message(self.manifest.path, self.damage() or "rows that disagree"))

    def _sync(self, again: bool = True) -> None:
        """Bring the rows in memory to the database's generation: new rows read, deleted rows dropped."""
        with self._snapshot():
            gen = self.generation()
            if gen == self._generation:
                return
            live = np.fromiter((r[0] for r in self.db.execute("SELECT seq FROM chunks INDEXED BY chunks_by_path")),
                               dtype=np.int64)
            live.sort()
            new = self.db.execute("SELECT v.seq, v.vector, COALESCE(b.n_terms, 0) FROM chunk_vectors AS v "
                                  "LEFT JOIN chunk_bags AS b ON b.seq = v.seq WHERE v.seq > ? ORDER BY v.seq",
                                  (self._rows.last_seq(),)).fetchall()
        if any(len(r[1]) != 2 * self.dim for r in new):
            raise self._damaged()
        seq = np.fromiter((r[0] for r in new), dtype=np.int64, count=len(new))
        lengths = np.fromiter((r[2] for r in new), dtype=np.int32, count=len(new))
        vecs = np.frombuffer(b"".join(r[1] for r in new), dtype=np.float16).reshape(len(new), self.dim)
        rows = self._rows
        rows.update(live, seq, lengths, vecs)
        alive = rows.seq if rows.alive is None else rows.seq[rows.alive]
        if not np.array_equal(alive, live):  # a vector without its chunk, or a chunk without a vector
            if not again:
                self.close()
                raise self._damaged()
            log.warning("the rows in memory disagree with %s; reading them again", self.manifest.path)
            self.close()
            return self._sync(again=False)
        self._generation, self._masks = gen, {}

    def _mask(self, flt: ChunkFilter) -> np.ndarray | None:
        """Rows in memory that are alive and the filter allows (None: all), from one SQL query, cached until the
        next write."""
        if flt == ChunkFilter():
            return self._rows.alive
        if flt not in self._masks:
            if len(self._masks) >= 64:
                self._masks.clear()
            cond, args = filter_sql(flt)
            allowed = np.fromiter((r[0] for r in self.db.execute(
                f"SELECT seq FROM chunks INDEXED BY chunks_by_path WHERE {cond}", args)), dtype=np.int64)
            self._masks[flt] = np.isin(self._rows.seq, allowed)  # a dead row's seq is not in the table
        return self._masks[flt]

    def dense(self, vector: np.ndarray, limit: int, flt: ChunkFilter, two_stage: bool = False,
              depth: int = 100) -> list[dict]:
        """Top-k by inner product, filter mask applied before the cut: exact over the float16 matrix; with binary
        rows, the ``max(BINARY_FACTOR x limit, BINARY_DEPTH, rows / BINARY_SHARE)`` nearest by Hamming distance,
        rescored exactly (two-stage: over the small dim's bits, ``depth`` of them if deeper)."""
        self._sync()
        q = np.asarray(vector, dtype=np.float32)
        mask = self._mask(flt)
        rows = self._rows
        if rows.binary:
            nbytes = max(self.small_dim // 8, 1) if two_stage else rows.bits.shape[1]
            want = max(BINARY_FACTOR * limit, BINARY_DEPTH, rows.n // BINARY_SHARE, depth if two_stage else 0)
            idx, _ = _top_k(hamming_scores(rows.bits[:, :nbytes], q), want, mask)
            seqs, full = self._rescore(rows.seq[idx], q)
            order = _top_k(full, limit, None)[0]
            return self._rows_at(seqs[order], full[order])
        if not two_stage:
            idx, scores = _top_k(_scores(rows.vectors, q), limit, mask)
        else:
            idx, _ = _top_k(_scores(rows.small, l2_normalize(q[:self.small_dim])), depth, mask)
            full = rows.vectors[idx].astype(np.float32) @ q
            order = np.argsort(-full, kind="stable")[:limit]
            idx, scores = idx[order], full[order]
        return self._rows_at(rows.seq[idx], scores)

    def _rescore(self, seqs: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(seqs, exact scores) of these chunks, their float16 vectors read from ``chunk_vectors`` (a chunk deleted
        by another process since the rows were read is left out)."""
        found = self.db.execute(f"SELECT seq, vector FROM chunk_vectors WHERE seq IN {SQL_IN}",
                                (json.dumps(seqs.tolist()),)).fetchall()
        if any(len(r[1]) != 2 * self.dim for r in found):
            raise self._damaged()
        vecs = np.frombuffer(b"".join(r[1] for r in found), dtype=np.float16).reshape(len(found), self.dim)
        return np.fromiter((r[0] for r in found), np.int64, len(found)), vecs.astype(np.float32) @ q

    def _rows_at(self, seqs: np.ndarray, scores: np.ndarray) -> list[dict]:
        """META_FIELDS rows of these seqs, in this order, with their scores as ``distance``."""
        if not len(seqs):
            return []
        found = {r[0]: r for r in self.db.execute(
            f"SELECT seq, id, {', '.join(META_FIELDS)} FROM chunks WHERE seq IN {SQL_IN}", (json.dumps(seqs.tolist()),))}
        out = []
        for seq, score in zip(seqs.tolist(), scores.tolist()):
            r = found.get(seq)
            if r is not None:  # deleted by another process since the matrix was read
                out.append({"id": r[1], **dict(zip(META_FIELDS, r[2:])), "distance": float(score)})
        return out

    def bm25(self, query: str, limit: int, flt: ChunkFilter) -> list[dict]:
        """BM25 of every chunk over its terms (``sqlite_terms``), the filter mask applied before the cut."""
        terms = keyword_text(query).split()
        if not terms or limit <= 0:
            return []
        self._sync()
        rows = self._rows
        scores = bm25_scores(self.db, terms, rows.seq, rows.norm, rows.alive)
        mask = scores > 0
        flt_mask = self._mask(flt)
        if flt_mask is not None:
            mask &= flt_mask
        idx, best = _top_k(scores, limit, mask)
        return self._rows_at(rows.seq[idx], best)

    def get(self, ids: Sequence[str], fields: Sequence[str] = OUTPUT_FIELDS) -> dict[str, dict]:
        """Rows by chunk id, as {id: row}."""
        if not ids:
            return {}
        cur = self.db.execute(f"SELECT {self._select(fields)} FROM chunks WHERE id IN {SQL_IN}", (json.dumps(list(ids)),))
        return {r["id"]: r for r in self._dicts(cur, fields)}

    def chunks_of(self, path: str) -> list[dict]:
        """Every chunk of one file."""
        fields = ["path", "start_line", "end_line", "text"]
        return list(self._dicts(self.db.execute(f"SELECT {self._select(fields)} FROM chunks WHERE path = ?", (path,)),
                                fields))

    def defining(self, names: set[str], flt: ChunkFilter, limit: int) -> list[dict]:
        """Chunks whose symbol is one of ``names`` (whole or last dotted part), filter applied."""
        cond, args = filter_sql(flt, "chunks")
        cur = self.db.execute(
            f"SELECT {self._select(META_FIELDS)} FROM chunks WHERE seq IN (SELECT seq FROM chunk_symbols WHERE name IN "
            f"{SQL_IN}) AND {cond} ORDER BY seq LIMIT ?", (json.dumps(sorted(names)), *args, limit))
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
               "terms": "(SELECT terms FROM chunk_bags AS t WHERE t.seq = chunks.seq)"}
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


def sign_bits(vecs: np.ndarray) -> np.ndarray:
    """Each row's signs (a dim > 0: 1), packed 8 to a byte, first dims first (a Matryoshka prefix's are a prefix)."""
    return np.packbits(np.asarray(vecs) > 0, axis=-1)


def hamming_scores(bits: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Minus the Hamming distance from each row of packed sign bits to ``q``'s signs over as many dims (higher is
    nearer): a popcount of 8 bytes at a time where the row's width allows."""
    qbits = sign_bits(q)[:bits.shape[1]]
    if bits.shape[1] % 8 == 0:
        bits, qbits = bits.view(np.uint64), qbits.view(np.uint64)
    counts = np.bitwise_count(bits ^ qbits)
    dist = np.zeros(len(bits), dtype=np.int32)
    for j in range(counts.shape[1]):  # column by column: faster than counts.sum(axis=1) for a few wide words
        dist += counts[:, j]
    return -dist.astype(np.float32)


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
    idx = np.sort(np.argpartition(-scores, k - 1)[:k]) if k < len(scores) else np.arange(len(scores))
    idx = idx[np.argsort(-scores[idx], kind="stable")]  # row order among equal scores
    return idx, scores[idx]
