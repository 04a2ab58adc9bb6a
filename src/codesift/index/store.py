"""The chunk store: one Milvus collection holding chunk text, metadata, dense vectors and BM25 sparse vectors.

The same code reaches Milvus Lite (a local file: ``./index/milvus.db``, no server) or a Milvus
server / cluster / Zilliz Cloud (``http://host:19530``); pymilvus picks by the URI.
"""

from __future__ import annotations

import os

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

MAX_VARCHAR = 65535
OUTPUT_FIELDS = ["path", "language", "symbol", "kind", "start_line", "end_line", "text"]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


_STOP = frozenset(
    "a an and are as at be by for from in into is it of on or that the this to with".split()
)


def stem(word: str) -> str:
    """A deliberately small English suffix stripper (Milvus Lite's tokenizer has no stemmer)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ied"):
        return word[:-3] + "y"
    for suffix, keep in (("ing", 3), ("ed", 3), ("es", 3), ("s", 3)):
        if word.endswith(suffix) and len(word) - len(suffix) >= keep and not word.endswith("ss"):
            if suffix == "es" and not word[:-2].endswith(("s", "x", "z", "ch", "sh")):
                continue
            word = word[: -len(suffix)]
            break
    # "parse"/"parsing"/"parsed" all end as "pars"
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def keyword_text(text: str) -> str:
    """BM25 terms of a text: identifiers whole and split (snake_case, camelCase), lowercased, stemmed, no stop words.

    Documents and queries both go through this, so "parse configs" matches ``parseConfig``.
    """
    terms: list[str] = []
    for ident in _IDENT.findall(text):
        low = ident.lower()
        pieces = [p.lower() for part in ident.split("_") for p in _CAMEL.findall(part)]
        if low not in _STOP:
            terms.append(stem(low))
        if len(pieces) > 1:
            terms.extend(stem(p) for p in pieces if p not in _STOP and not p.isdigit())
    return " ".join(terms)


def clip_utf8(text: str, max_bytes: int = MAX_VARCHAR - 16) -> str:
    """Cut a string so that its UTF-8 encoding fits in ``max_bytes``."""
    raw = text.encode("utf-8")
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", errors="ignore")


def chunk_id(path: str, start_line: int, content_hash: str) -> str:
    """Deterministic primary key of a chunk (so re-inserting after an interruption is an upsert)."""
    return hashlib.sha256(f"{path}\0{start_line}\0{content_hash}".encode()).hexdigest()[:32]


def quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(value, ensure_ascii=False)


def in_list(field: str, values: Sequence[str], negate: bool = False) -> str:
    """``field in [...]`` (or ``not in``) as a Milvus filter expression."""
    return f"{field} {'not in' if negate else 'in'} [{', '.join(quote(v) for v in values)}]"


def is_local_uri(uri: str) -> bool:
    """True for a Milvus Lite file, False for a server URI."""
    return not uri.startswith(("http://", "https://", "tcp://", "unix:"))


class StoreLockedError(ValueError):
    """The store is a Milvus Lite file another process has open."""


class ChunkStore:
    """Chunks of one index in a Milvus collection (Milvus Lite file or server URI)."""

    def __init__(self, uri: str, collection: str, dim: int, small_dim: int, token: str | None = None,
                 vector_index: str = "HNSW") -> None:
        # gRPC's C core logs keepalive chatter ("GOAWAY ... too_many_pings") from Milvus Lite's socket to stderr;
        # it is not an error for us. Must be set before grpc loads; a user's own GRPC_VERBOSITY wins.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        from pymilvus import MilvusClient

        if vector_index not in ("HNSW", "FLAT"):
            raise ValueError(f"vector_index must be HNSW or FLAT, got {vector_index!r}")
        self.uri, self.collection, self.dim, self.small_dim = uri, collection, dim, small_dim
        self.vector_index = vector_index
        try:
            with _quiet_milvus_lite():  # a locked file is logged with two tracebacks before it raises
                self.client = MilvusClient(uri, token=token or "")
        except Exception as exc:  # Milvus Lite refuses a second process on the same file
            if "lock" in str(exc).lower() or "Open local milvus failed" in str(exc):
                raise StoreLockedError(
                    f"the index store {uri} is open in another codesift process (mcp, watch or serve); "
                    "stop it, or refresh through it: `POST /v1/index/refresh` on `codesift serve`, the reindex "
                    "tool of `codesift mcp`"
                ) from None
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

    @property
    def is_local(self) -> bool:
        """True for a Milvus Lite file (no server)."""
        return is_local_uri(self.uri)

    def close(self) -> None:
        """Release the client and, for Milvus Lite, the in-process engine and its file lock."""
        self.client.close()
        if self.is_local:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    def upsert(self, rows: list[dict]) -> None:
        """Insert or replace chunk rows (see ``make_row``)."""
        for i in range(0, len(rows), 512):
            self.client.upsert(self.collection, rows[i:i + 512])

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Remove every chunk of these files."""
        for i in range(0, len(paths), 500):
            self.client.delete(self.collection, filter=in_list("path", paths[i:i + 500]))

    def flush(self) -> None:
        """Seal written rows into indexed segments (Milvus Lite searches unsealed rows much more slowly)."""
        self.client.flush(self.collection)

    def count(self) -> int:
        """Number of chunks stored."""
        res = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def dense(self, vector: np.ndarray, limit: int, filter: str = "", field: str = "vector",
              output_fields: Sequence[str] = OUTPUT_FIELDS) -> list[dict]:
        """Nearest chunks by inner product (cosine on normalised vectors), best first."""
        res = self.client.search(self.collection, data=[np.asarray(vector, dtype=np.float32).tolist()], anns_field=field,
                                 limit=limit, filter=filter, output_fields=list(output_fields),
                                 search_params={"metric_type": "IP", "params": {"ef": max(64, 2 * limit)}})
        return [_flat(h) for h in res[0]]

    def bm25(self, query: str, limit: int, filter: str = "", output_fields: Sequence[str] = OUTPUT_FIELDS) -> list[dict]:
        """Chunks ranked by BM25 over identifier-split chunk text, best first."""
        res = self.client.search(self.collection, data=[keyword_text(query)], anns_field="sparse", limit=limit,
                                 filter=filter, output_fields=list(output_fields),
                                 search_params={"metric_type": "BM25"})
        return [_flat(h) for h in res[0]]

    def get(self, ids: Sequence[str], output_fields: Sequence[str] = OUTPUT_FIELDS) -> dict[str, dict]:
        """Rows by primary key, as {id: row}."""
        if not ids:
            return {}
        rows = self.client.get(self.collection, ids=list(ids), output_fields=list(output_fields))
        return {r["id"]: dict(r) for r in rows}

    def iterate(self, output_fields: Sequence[str], batch_size: int = 4096):
        """Every row (id and ``output_fields``), in batches (lists of dicts)."""
        it = None
        with _quiet_milvus_lite():
            try:
                it = self.client.query_iterator(self.collection, batch_size=batch_size, filter="",
                                                output_fields=["id", *output_fields])
                while True:
                    rows = it.next()
                    if not rows:
                        return
                    yield [dict(r) for r in rows]
            finally:
                if it is not None:
                    it.close()

    def query(self, filter: str, output_fields: Sequence[str] = OUTPUT_FIELDS, limit: int | None = None) -> list[dict]:
        """Rows matching a filter expression."""
        kwargs = {"limit": limit} if limit else {}
        return [dict(r) for r in self.client.query(self.collection, filter=filter, output_fields=["id", *output_fields], **kwargs)]


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


def make_row(chunk, vector: np.ndarray, small_dim: int, is_test: bool) -> dict:
    """A store row for one chunk and its full-dim normalised vector."""
    vector = np.asarray(vector, dtype=np.float32)
    small = vector[:small_dim]
    small = small / max(float(np.linalg.norm(small)), 1e-12)
    return {
        "id": chunk_id(chunk.path, chunk.start_line, chunk.content_hash),
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
        "vector": vector.tolist(),
        "vector_small": small.tolist(),
    }
