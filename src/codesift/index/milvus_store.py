"""The distributed engine: one Milvus collection holding chunk text, metadata, dense vectors and BM25 sparse vectors.

Chosen by ``store_uri``: a Milvus server / cluster / Zilliz Cloud (``http://host:19530``), or a Milvus Lite
file (a path ending in ``.db``; no server, one process at a time). HNSW for the vectors, Milvus' own BM25
function over the ``keyword_text`` terms. Unlike the SQLite store its writes cannot join the manifest's
transaction, so the indexer marks files ``pending`` before touching them (see ``indexer.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from codesift.index.store import (
    MAX_VARCHAR,
    META_FIELDS,
    OUTPUT_FIELDS,
    ChunkFilter,
    StoreLockedError,
    is_milvus_lite,
    keyword_text,
    symbol_names,
)
from codesift.model.norm import l2_normalize

log = logging.getLogger(__name__)


def quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(value, ensure_ascii=False)


def in_list(field: str, values: Sequence[str], negate: bool = False) -> str:
    """``field in [...]`` (or ``not in``) as a Milvus filter expression."""
    return f"{field} {'not in' if negate else 'in'} [{', '.join(quote(v) for v in values)}]"


def filter_expr(flt: ChunkFilter) -> str:
    """The constraints as a Milvus filter expression ('' when there are none)."""
    parts: list[str] = []
    if flt.language:
        parts.append(f"language == {quote(flt.language)}")
    if flt.exclude_tests:
        parts.append("is_test == false")
    if flt.paths is not None:
        parts.append(in_list("path", flt.paths, negate=flt.negate_paths))
    if flt.exclude_ids:
        parts.append(in_list("id", flt.exclude_ids, negate=True))
    return " and ".join(parts)


class MilvusStore:
    """Chunks of one index in a Milvus collection (Milvus server URI or Milvus Lite file)."""

    def __init__(self, uri: str, collection: str, dim: int, small_dim: int, token: str | None = None,
                 vector_index: str | None = None, release: Callable[[], object] | None = None) -> None:
        """``vector_index``: HNSW or FLAT (default: FLAT for Milvus Lite, the server-free trial of this engine, which
        skips its slow HNSW build; HNSW for a server). ``release``: asks the process that may hold a Milvus Lite file
        (the index's query server) to let go; called before opening one, as such a file admits one process."""
        # gRPC's C core logs keepalive chatter ("GOAWAY ... too_many_pings") from Milvus Lite's socket to stderr;
        # it is not an error for us. Must be set before grpc loads; a user's own GRPC_VERBOSITY wins.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        from pymilvus import MilvusClient

        self.uri, self.collection, self.dim, self.small_dim = uri, collection, dim, small_dim
        vector_index = vector_index or ("FLAT" if self.is_local else "HNSW")
        if vector_index not in ("HNSW", "FLAT"):
            raise ValueError(f"vector_index must be HNSW or FLAT, got {vector_index!r}")
        self.vector_index = vector_index
        if self.is_local and release is not None:
            release()
        for attempt in range(3):
            try:
                with _quiet_milvus_lite():  # a locked file is logged with two tracebacks before it raises
                    self.client = MilvusClient(uri, token=token or "")
                break
            except Exception as exc:  # Milvus Lite refuses a second process on the same file
                if "lock" in str(exc).lower() or "Open local milvus failed" in str(exc):
                    raise StoreLockedError(
                        f"the index store {uri} is open in another codesift process (mcp, watch or serve); "
                        "stop it, or refresh through it: `POST /v1/index/refresh` on `codesift serve`, the reindex "
                        "tool of `codesift mcp`"
                    ) from None
                if self.is_local and attempt < 2 and "Fail connecting" in str(exc):
                    # Milvus Lite's server for this file was still starting, or closing after the last release
                    log.info("Milvus Lite at %s not reachable yet; retrying", uri)
                    time.sleep(1.0 + attempt)
                    continue
                raise
        with _quiet_milvus_lite():
            if not self.client.has_collection(collection):
                self._create()
            self.client.load_collection(collection)

    def _create(self) -> None:
        from pymilvus import DataType, Function, FunctionType

        c = self.client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("path", DataType.VARCHAR, max_length=4096)
        schema.add_field("language", DataType.VARCHAR, max_length=64)
        schema.add_field("symbol", DataType.VARCHAR, max_length=1024)
        schema.add_field("kind", DataType.VARCHAR, max_length=64)
        schema.add_field("start_line", DataType.INT64)
        schema.add_field("end_line", DataType.INT64)
        schema.add_field("is_test", DataType.BOOL)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("terms", DataType.VARCHAR, max_length=MAX_VARCHAR, enable_analyzer=True,
                         analyzer_params={"tokenizer": "standard", "filter": ["lowercase"]})
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("vector_small", DataType.FLOAT_VECTOR, dim=self.small_dim)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                     input_field_names=["terms"], output_field_names=["sparse"]))
        index = c.prepare_index_params()
        params = {"M": 16, "efConstruction": 200} if self.vector_index == "HNSW" else {}
        index.add_index("vector", index_type=self.vector_index, metric_type="IP", params=params)
        index.add_index("vector_small", index_type=self.vector_index, metric_type="IP", params=params)
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        c.create_collection(self.collection, schema=schema, index_params=index)

    shares_manifest = False

    @property
    def is_local(self) -> bool:
        """True for a Milvus Lite file (no server)."""
        return is_milvus_lite(self.uri)

    def describe(self) -> str:
        """The URI and collection."""
        return f"{self.uri} (collection {self.collection})"

    def close(self) -> None:
        """Release the client and, for Milvus Lite, the in-process engine and its file lock."""
        self.client.close()
        if self.is_local:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    def upsert(self, rows: list[dict]) -> None:
        """Insert or replace chunk rows (see ``store.make_row``)."""
        rows = [{**r, "vector": np.asarray(r["vector"], np.float32).tolist(),
                 "vector_small": np.asarray(r["vector_small"], np.float32).tolist()} for r in rows]
        for i in range(0, len(rows), 512):
            self.client.upsert(self.collection, rows[i:i + 512])

    def replace_files(self, paths: Sequence[str], rows: list[dict]) -> None:
        """Remove every chunk of ``paths``, then upsert ``rows`` (two steps: the manifest's pending marks cover a kill)."""
        self.delete_paths(paths)
        self.upsert(rows)

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Remove every chunk of these files."""
        paths = list(paths)
        for i in range(0, len(paths), 500):
            self.client.delete(self.collection, filter=in_list("path", paths[i:i + 500]))

    def flush(self) -> None:
        """Seal written rows into indexed segments (Milvus Lite searches unsealed rows much more slowly)."""
        self.client.flush(self.collection)

    def count(self) -> int:
        """Number of chunks stored."""
        res = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def _search(self, vector: np.ndarray, limit: int, expr: str, field: str, output_fields: Sequence[str]) -> list[dict]:
        res = self.client.search(self.collection, data=[np.asarray(vector, dtype=np.float32).tolist()], anns_field=field,
                                 limit=limit, filter=expr, output_fields=list(output_fields),
                                 search_params={"metric_type": "IP", "params": {"ef": max(64, 2 * limit)}})
        return [_flat(h) for h in res[0]]

    def dense(self, vector: np.ndarray, limit: int, flt: ChunkFilter, two_stage: bool = False,
              depth: int = 100) -> list[dict]:
        """Nearest chunks by inner product (cosine on normalised vectors), best first; HNSW, filter inside the search."""
        qv = np.asarray(vector, dtype=np.float32)
        if not two_stage:
            return self._search(qv, limit, filter_expr(flt), "vector", META_FIELDS)
        rows = self._search(l2_normalize(qv[:self.small_dim]), depth, filter_expr(flt), "vector_small", [*META_FIELDS, "vector"])
        if not rows:
            return []
        full = np.asarray([r.pop("vector") for r in rows], dtype=np.float32) @ qv
        for r, s in zip(rows, full):
            r["distance"] = float(s)
        return sorted(rows, key=lambda r: -r["distance"])[:limit]

    def bm25(self, query: str, limit: int, flt: ChunkFilter) -> list[dict]:
        """Chunks ranked by Milvus' BM25 over the identifier-split terms, best first (positive scores)."""
        res = self.client.search(self.collection, data=[keyword_text(query)], anns_field="sparse", limit=limit,
                                 filter=filter_expr(flt), output_fields=list(META_FIELDS), search_params={"metric_type": "BM25"})
        rows = [_flat(h) for h in res[0]]
        for r in rows:  # Milvus Lite reports BM25 as a negated distance
            r["distance"] = abs(r["distance"])
        return rows

    def get(self, ids: Sequence[str], fields: Sequence[str] = OUTPUT_FIELDS) -> dict[str, dict]:
        """Rows by primary key, as {id: row}."""
        if not ids:
            return {}
        rows = self.client.get(self.collection, ids=list(ids), output_fields=list(fields))
        return {r["id"]: dict(r) for r in rows}

    def chunks_of(self, path: str) -> list[dict]:
        """Every chunk of one file."""
        return self._query(f"path == {quote(path)}", ["path", "start_line", "end_line", "text"])

    def defining(self, names: set[str], flt: ChunkFilter, limit: int) -> list[dict]:
        """Chunks whose symbol is one of ``names`` (one of a merged chunk's ``", "``-separated symbols, whole or by
        its last dotted part, as ``symbol_names`` reads them), filter applied.

        Milvus has no table of names: a substring match (``like``; its ``_`` wildcard matches ``_`` too) finds the
        chunks that may define one, and ``symbol_names`` keeps those that do."""
        if not names:
            return []
        found = " or ".join(f"symbol like {quote('%' + n + '%')}" for n in sorted(names))
        expr = " and ".join(p for p in (f"({found})", filter_expr(flt)) if p)
        rows = [r for r in self._query(expr, META_FIELDS) if symbol_names(r.get("symbol") or "") & names]
        return rows[:limit]

    def rows(self, fields: Sequence[str], batch_size: int = 4096) -> Iterator[dict]:
        """Every row (id and ``fields``)."""
        it = None
        with _quiet_milvus_lite():
            try:
                it = self.client.query_iterator(self.collection, batch_size=batch_size, filter="",
                                                output_fields=["id", *fields])
                while True:
                    batch = it.next()
                    if not batch:
                        return
                    yield from (dict(r) for r in batch)
            finally:
                if it is not None:
                    it.close()

    def paths(self) -> set[str]:
        """The paths that have chunks."""
        return {r["path"] for r in self.rows(["path"])}

    def damage(self) -> str | None:
        """Nothing to find: Milvus keeps a chunk and its vectors in one entity."""
        return None

    def repair(self) -> list[str]:
        """Nothing to repair (see ``damage``)."""
        return []

    def _query(self, expr: str, fields: Sequence[str], limit: int | None = None) -> list[dict]:
        kwargs = {"limit": limit} if limit else {}
        return [dict(r) for r in self.client.query(self.collection, filter=expr, output_fields=["id", *fields], **kwargs)]


@contextlib.contextmanager
def _quiet_milvus_lite():
    """Hide what Milvus Lite logs for the AllocTimestamp call it lacks (creating a collection, iterating),
    and the tracebacks it logs for a locked file (raised as StoreLockedError instead).

    pymilvus falls back to a client-side timestamp, after the in-process gRPC server has logged the
    miss as an error with a traceback and pymilvus as a warning: noise, not a failure.
    """
    quiet = [logging.getLogger(n) for n in ("grpc._server", "pymilvus.client.iterator.query_iterator",
                                            "milvus_lite.server_manager")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _flat(hit) -> dict:
    row = dict(hit["entity"])
    row["id"] = hit["id"]
    row["distance"] = float(hit["distance"])
    return row


