"""Code search over a source tree: walking, incremental indexing into Milvus, hybrid search, MCP tools."""

from __future__ import annotations

from codesift.index.config import IndexConfig, SearchConfig
from codesift.index.indexer import Indexer, IndexReport, default_index_dir
from codesift.index.search import CodeIndex, SearchResult, open_index

__all__ = ["CodeIndex", "IndexConfig", "IndexReport", "Indexer", "SearchConfig", "SearchResult", "build_index",
           "default_index_dir", "open_index"]


def build_index(root, index_dir=None, config: IndexConfig | None = None, embedder=None, progress=None) -> IndexReport:
    """Build or update the index of ``root`` (default index dir: ``root/.codesift``); returns the run's report."""
    ix = Indexer(root, index_dir, config, embedder=embedder)
    try:
        return ix.update(progress)
    finally:
        ix.close()
