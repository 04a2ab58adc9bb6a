"""Code search over a source tree: walking, incremental indexing (SQLite by default, Milvus by URI), hybrid search.

The names below are imported on first use, so that ``codesift.index.config`` or the query-server client
can be imported without numpy, pymilvus or torch (a cold `codesift search` stays fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["CodeIndex", "FileResult", "IndexConfig", "IndexReport", "Indexer", "SearchConfig", "SearchRequest",
           "SearchResult",
           "build_index", "default_index_dir", "open_index", "stored_dtype"]

_WHERE = {"IndexConfig": "config", "SearchConfig": "config", "Indexer": "indexer", "IndexReport": "indexer",
          "default_index_dir": "indexer", "CodeIndex": "search", "FileResult": "searcher", "SearchResult": "searcher",
          "SearchRequest": "request",
          "open_index": "search", "stored_dtype": "search"}

if TYPE_CHECKING:
    from codesift.index.config import IndexConfig, SearchConfig
    from codesift.index.indexer import Indexer, IndexReport, default_index_dir
    from codesift.index.request import SearchRequest
    from codesift.index.search import CodeIndex, open_index, stored_dtype
    from codesift.index.searcher import FileResult, SearchResult
    from codesift.model.encoder import Encoder


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"codesift.index.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'codesift.index' has no attribute {name!r}")


def build_index(root, index_dir=None, config: IndexConfig | None = None, embedder: Encoder | None = None, progress=None) -> IndexReport:
    """Build or update the index of ``root`` (default index dir: ``root/.codesift``); returns the run's report."""
    from codesift.index.indexer import Indexer

    ix = Indexer(root, index_dir, config, embedder=embedder)
    try:
        return ix.update(progress)
    finally:
        ix.close()
