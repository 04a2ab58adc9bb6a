"""The chunk store behind an index: the ``Store`` protocol and what its two engines share (this module imports
neither; ``engines.py`` picks one by the configured URI):

- no URI (the default): ``SQLiteStore`` (``sqlite_store.py``), the chunks, their float16 vectors and a BM25
  keyword index (``sqlite_terms.py``) inside the index's own SQLite file, next to the manifest tables, so that a batch of files
  commits in one transaction;
- ``http(s)://``, ``tcp://`` or ``unix:`` (a Milvus server, cluster or Zilliz Cloud), or a local ``*.db`` file
  (Milvus Lite, for trying that engine without a server): ``MilvusStore`` (``milvus_store.py``), HNSW + BM25.

Both take the same ``ChunkFilter`` and apply it BEFORE the top-k cut, never to a cut list, each in its own query
dialect (``milvus_store.filter_expr``, ``sqlite_store.filter_sql``). The keyword terms (``keyword_text``) and the row
layout (``make_row``) are shared, so both engines rank the same words.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from codesift.data.terms import keyword_text
from codesift.model.norm import l2_normalize

MAX_VARCHAR = 65535
OUTPUT_FIELDS = ["path", "language", "symbol", "kind", "start_line", "end_line", "text"]
META_FIELDS = ["path", "language", "symbol", "kind", "start_line", "end_line"]   # a candidate's features, no text
REMOTE_SCHEMES = ("http://", "https://", "tcp://", "unix:")


def clip_utf8(text: str, max_bytes: int = MAX_VARCHAR - 16) -> str:
    """Cut a string so that its UTF-8 encoding fits in ``max_bytes``."""
    raw = text.encode("utf-8")
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", errors="ignore")


def chunk_id(path: str, start_line: int, content_hash: str, repeat: int = 0) -> str:
    """Deterministic primary key of a chunk (so re-inserting after an interruption is an upsert).

    ``repeat``: how many chunks of the same path, start line and text came before this one in its file (a long
    line of repeated values is cut into identical pieces, which must still be distinct rows)."""
    key = f"{path}\0{start_line}\0{content_hash}" + (f"\0{repeat}" if repeat else "")
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def is_milvus_uri(uri: str | None) -> bool:
    """True for a Milvus server URI or a Milvus Lite file (``*.db``); None (the default) is SQLite."""
    return bool(uri) and (uri.startswith(REMOTE_SCHEMES) or uri.endswith(".db"))


def is_milvus_lite(uri: str | None) -> bool:
    """True for a Milvus Lite file: one process at a time may open it."""
    return is_milvus_uri(uri) and not uri.startswith(REMOTE_SCHEMES)


def symbol_names(symbol: str) -> set[str]:
    """The names a chunk defines: each of its symbols (", "-separated) whole and by its last dotted part."""
    return {key for part in (symbol.split(", ") if symbol else ()) for key in (part, part.rsplit(".", 1)[-1])}


class StoreLockedError(ValueError):
    """The store is a Milvus Lite file another process has open."""


class StoreDamagedError(ValueError):
    """The store holds rows a killed run cannot leave (a vector without its chunk, a blob of the wrong length):
    `codesift index` repairs them."""


@dataclass(frozen=True)
class ChunkFilter:
    """Search constraints, applied by the store before its top-k cut."""

    language: str | None = None
    exclude_tests: bool = False
    paths: tuple[str, ...] | None = None    # None: any path
    negate_paths: bool = False              # True: ``paths`` are the ones to leave out
    exclude_ids: tuple[str, ...] = ()


class Store(Protocol):
    """What the indexer and search need from a chunk store (rows are dicts of ``make_row``'s fields)."""

    dim: int
    small_dim: int
    shares_manifest: bool   # True: writes join the manifest's transaction (a batch commits whole or not at all)

    def describe(self) -> str:
        """Where the chunks live (a path or a URI), for status."""

    def close(self) -> None:
        """Release the store."""

    def count(self) -> int:
        """Number of chunks stored."""

    def replace_files(self, paths: Sequence[str], rows: list[dict]) -> None:
        """Remove every chunk of ``paths`` and add ``rows``."""

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Remove every chunk of these files."""

    def flush(self) -> None:
        """Make the writes of a run searchable (seal segments; nothing for SQLite)."""

    def dense(self, vector: np.ndarray, limit: int, flt: ChunkFilter, two_stage: bool = False,
              depth: int = 100) -> list[dict]:
        """The ``limit`` nearest chunks by inner product, best first: rows with ``id``, ``distance`` and META_FIELDS.

        ``two_stage``: ``depth`` candidates at the Matryoshka small dim, reranked at the full dim, cut to ``limit``."""

    def bm25(self, query: str, limit: int, flt: ChunkFilter) -> list[dict]:
        """Chunks ranked by BM25 over ``keyword_text`` terms (positive ``distance``), best first."""

    def get(self, ids: Sequence[str], fields: Sequence[str] = OUTPUT_FIELDS) -> dict[str, dict]:
        """Rows by chunk id, as {id: row}."""

    def chunks_of(self, path: str) -> list[dict]:
        """Every chunk of one file: id, start_line, end_line, text."""

    def defining(self, names: set[str], flt: ChunkFilter, limit: int) -> list[dict]:
        """Chunks whose symbol is one of ``names`` (the qualified name or its last dotted part)."""

    def rows(self, fields: Sequence[str]) -> Iterator[dict]:
        """Every row: ``id`` and ``fields``."""

    def paths(self) -> set[str]:
        """The paths that have chunks."""

    def damage(self) -> str | None:
        """What is damaged in the store (rows a killed run cannot leave), None when nothing is."""

    def repair(self) -> list[str]:
        """Remove damaged rows; the paths whose chunks went with them (to be written again)."""


def make_row(chunk, vector: np.ndarray, small_dim: int, is_test: bool, repeat: int = 0) -> dict:
    """A store row for one chunk and its full-dim normalised vector (``repeat``: see ``chunk_id``)."""
    vector = np.asarray(vector, dtype=np.float32)
    return {
        "id": chunk_id(chunk.path, chunk.start_line, chunk.content_hash, repeat),
        "path": chunk.path,
        "language": (chunk.language or "")[:64],
        "symbol": clip_utf8(chunk.symbol or "", 1000),
        "kind": (chunk.kind or "")[:64],
        "start_line": int(chunk.start_line),
        "end_line": int(chunk.end_line),
        "is_test": bool(is_test),
        "content_hash": chunk.content_hash,
        "text": clip_utf8(chunk.text),
        "terms": clip_utf8(keyword_text(chunk.path + "\n" + (chunk.symbol or "") + "\n" + chunk.text)),
        "vector": vector,
        "vector_small": l2_normalize(vector[:small_dim]),
    }
