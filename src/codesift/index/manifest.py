"""The index's own bookkeeping in its SQLite file: settings, the state of every file, the embedding cache.

With the default store (``sqlite_store.py``) the chunks live in the same file, and a batch's file records
and chunks commit in one ``transaction``: a killed run leaves the last committed batch, nothing half-written.
With a Milvus store, whose writes cannot join that transaction, a file is marked ``pending`` (committed)
before its chunks are touched and ``done`` after; the next run redoes ``pending`` files from scratch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

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


def corrupt_message(path: Path, exc: BaseException | str) -> str:
    """One line saying which index file is damaged and the command that rebuilds it."""
    return (f"the index file {path} is corrupt ({exc}); rebuild the index with "
            f"`codesift index {_root_of(path.parent)} --rebuild`")


def _root_of(index_dir: Path) -> str:
    """How a command names the root of the index in ``index_dir`` (ROOT and --index when it is not ROOT/.codesift)."""
    return str(index_dir.parent) if index_dir.name == ".codesift" else f"ROOT --index {index_dir}"


def damaged_message(path: Path, what: str) -> str:
    """One line saying which rows of an index are damaged and the command that repairs them."""
    return f"the index {path.parent} is damaged ({what}); run `codesift index {_root_of(path.parent)}` to repair it"


def sqlite_error(path: Path, exc: sqlite3.Error) -> Exception:
    """What an SQLite failure on the index file ``path`` means to the user, as the error to raise: a full disk,
    a read-only index, a busy one, another codesift's layout, or a damaged file (rebuild)."""
    text = str(exc)
    low = text.lower()
    if "disk is full" in low or "disk i/o error" in low:
        return OSError(f"writing the index {path} failed ({text}); free disk space (or fix the disk) and run again")
    if "readonly" in low or "read-only" in low:
        return PermissionError(f"the index {path.parent} is read-only ({text}); make it writable "
                               f"(`chmod -R u+w {path.parent}`) or index into another folder with --index")
    if "unable to open" in low:
        return OSError(f"cannot open the index {path} ({text}); check that its folder exists and is readable")
    if "locked" in low or "busy" in low:
        return OSError(f"the index {path} is busy ({text}): another codesift process is writing it; try again")
    if "no such column" in low or "no such table" in low or "has no column" in low:
        return CorruptIndexError(f"the index {path} has another layout ({text}), written by another codesift "
                                 f"version; rebuild it with `codesift index {_root_of(path.parent)} --rebuild`")
    return CorruptIndexError(corrupt_message(path, exc))


@contextlib.contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """Raise SQLite failures on the index file ``path`` as ``sqlite_error`` says (named, actionable)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise sqlite_error(Path(path), exc) from exc


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


def writable(path: Path) -> bool:
    """Whether this process may write the index file ``path``: the file, its WAL files and its folder (which
    SQLite writes the WAL files into). An index copied from elsewhere, or left 0444 by an earlier episode, is not."""
    files = [path, *(p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())]
    return all(os.access(p, os.W_OK) for p in [*files, path.parent])


def _connect(path: Path, read_only: bool, immutable: bool = False) -> sqlite3.Connection:
    if not read_only:
        return sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    # mode=ro: a write fails as "readonly" (make it writable), not as a damaged file; where SQLite still cannot
    # open the file (no -shm file and no right to make one), Manifest._open falls back to immutable
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)


class Manifest:
    """SQLite-backed file states, settings and embedding cache of one index directory.

    An existing index this process cannot write is opened read-only: it can be searched, and a write fails
    with ``sqlite_error``'s read-only message (make it writable), never as a damaged index.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.read_only = self.path.is_file() and not writable(self.path)
        try:
            self.db = self._open()
        except sqlite3.Error as exc:
            raise sqlite_error(self.path, exc) from None

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect_checked()
        except sqlite3.OperationalError as exc:
            if not (self.read_only and "unable to open" in str(exc).lower()):
                raise
        # SQLite reads a WAL database through its -shm file, which it cannot make in a folder it cannot write:
        # read the main file as it is (immutable: no locks, no WAL files)
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size:
            log.warning("the index %s is read-only and holds writes not yet merged into %s (in %s), which cannot "
                        "be read from here; results may miss the last `codesift index` run",
                        self.path.parent, self.path.name, wal.name)
        return self._connect_checked(immutable=True)

    def _connect_checked(self, immutable: bool = False) -> sqlite3.Connection:
        db = _connect(self.path, self.read_only, immutable)
        try:
            if not self.read_only:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(SCHEMA)
            db.execute("SELECT COUNT(*) FROM meta").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def check(self) -> str | None:
        """SQLite's own check of every page of the file (``PRAGMA quick_check``): why the file is damaged and how
        to rebuild it, or None when it is sound."""
        try:
            found = [r[0] for r in self.db.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as exc:
            return corrupt_message(self.path, exc)
        return None if found == ["ok"] else corrupt_message(self.path, "; ".join(found))

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
        return {h: np.frombuffer(blob, dtype=np.float32) for h, blob in self._cache_rows(hashes, fingerprint, "vector")}

    def cached_hashes(self, hashes: list[str], fingerprint: str) -> set[str]:
        """The chunk hashes that have a cached vector (``cached_vectors`` without reading the vectors)."""
        return {h for h, _ in self._cache_rows(hashes, fingerprint, "NULL")}

    def _cache_rows(self, hashes: list[str], fingerprint: str, column: str) -> Iterator[tuple[str, object]]:
        """(hash, ``column``) of the cache rows of ``hashes``, 500 hashes a query (SQLite's variable limit)."""
        for i in range(0, len(hashes), 500):
            part = hashes[i:i + 500]
            q = (f"SELECT chunk_hash, {column} FROM embed_cache WHERE fingerprint = ? "
                 f"AND chunk_hash IN ({','.join('?' * len(part))})")
            yield from self.db.execute(q, [fingerprint, *part])

    def cache_vectors(self, vectors: dict[str, np.ndarray], fingerprint: str) -> None:
        """Add vectors to the cache."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO embed_cache VALUES (?, ?, ?)",
                [(h, fingerprint, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()],
            )
