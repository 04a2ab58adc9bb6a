"""The index's own bookkeeping in its SQLite file: settings, the state of every file, the embedding cache.

With the default store (``sqlite_store.py``) the chunks live in the same file, and a batch's file records
and chunks commit in one ``transaction``: a killed run leaves the last committed batch, nothing half-written.
With a Milvus store, whose writes cannot join that transaction, a file is marked ``pending`` (committed)
before its chunks are touched and ``done`` after; the next run redoes ``pending`` files from scratch.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, sha256 TEXT,
    language TEXT, n_chunks INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,            -- done | skipped | pending
    skip_reason TEXT
);
CREATE TABLE IF NOT EXISTS embed_cache (
    chunk_hash TEXT NOT NULL, fingerprint TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (chunk_hash, fingerprint)
);
"""


class CorruptIndexError(ValueError):
    """An index file is damaged: the index must be rebuilt."""


def corrupt_message(path: Path, exc: BaseException) -> str:
    """One line saying which index file is damaged and the command that rebuilds it."""
    index_dir = path.parent
    root = index_dir.parent if index_dir.name == ".codesift" else "ROOT"
    return (f"the index file {path} is corrupt ({exc}); rebuild the index with "
            f"`codesift index {root} --rebuild`" + ("" if index_dir.name == ".codesift" else f" --index {index_dir}"))


@dataclass
class FileRecord:
    """What the index knows about one file."""

    path: str
    mtime_ns: int
    size: int
    sha256: str | None
    language: str | None
    n_chunks: int
    status: str
    skip_reason: str | None = None


class Manifest:
    """SQLite-backed file states, settings and embedding cache of one index directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self.db.execute("SELECT COUNT(*) FROM meta").fetchone()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise CorruptIndexError(corrupt_message(self.path, exc)) from None

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error); a nested call joins the outer one."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # settings
    def get_meta(self) -> dict:
        """All settings as a dict (JSON-decoded values)."""
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values) -> None:
        """Store settings (JSON-encoded)."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    # files
    def files(self) -> dict[str, FileRecord]:
        """Every file record, by relative path."""
        rows = self.db.execute("SELECT path, mtime_ns, size, sha256, language, n_chunks, status, skip_reason FROM files")
        return {r[0]: FileRecord(*r) for r in rows}

    def put_files(self, records: list[FileRecord]) -> None:
        """Insert or replace file records in one transaction."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.path, r.mtime_ns, r.size, r.sha256, r.language, r.n_chunks, r.status, r.skip_reason) for r in records],
            )

    def mark_pending(self, paths: list[str]) -> None:
        """Mark files as being rewritten (their store rows may be partial until marked done)."""
        with self.transaction():
            self.db.executemany("UPDATE files SET status = 'pending', sha256 = NULL WHERE path = ?", [(p,) for p in paths])
            self.db.executemany(
                "INSERT OR IGNORE INTO files (path, mtime_ns, size, status) VALUES (?, 0, 0, 'pending')", [(p,) for p in paths]
            )

    def delete_files(self, paths: list[str]) -> None:
        """Forget files."""
        with self.transaction():
            self.db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])

    def totals(self) -> dict[str, int]:
        """Counts of indexed files, skipped files, pending files and chunks."""
        row = self.db.execute(
            "SELECT SUM(status='done'), SUM(status='skipped'), SUM(status='pending'), COALESCE(SUM(n_chunks), 0) FROM files"
        ).fetchone()
        return {"files": row[0] or 0, "files_skipped": row[1] or 0, "files_pending": row[2] or 0, "chunks": row[3] or 0}

    def has_chunks(self) -> bool:
        """Whether any file has chunks (cheaper than ``totals`` on every query)."""
        return self.db.execute("SELECT 1 FROM files WHERE n_chunks > 0 LIMIT 1").fetchone() is not None

    # embedding cache
    def cached_vectors(self, hashes: list[str], fingerprint: str) -> dict[str, np.ndarray]:
        """Cached full-dim vectors for the chunk hashes that have one."""
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(hashes), 500):
            part = hashes[i:i + 500]
            q = f"SELECT chunk_hash, vector FROM embed_cache WHERE fingerprint = ? AND chunk_hash IN ({','.join('?' * len(part))})"
            for h, blob in self.db.execute(q, [fingerprint, *part]):
                out[h] = np.frombuffer(blob, dtype=np.float32)
        return out

    def cache_vectors(self, vectors: dict[str, np.ndarray], fingerprint: str) -> None:
        """Add vectors to the cache."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO embed_cache VALUES (?, ?, ?)",
                [(h, fingerprint, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()],
            )
