"""Which chunk store an index uses: SQLite inside the index's own file by default, Milvus for a Milvus URI.

The one place that knows both engines (``store.py`` knows neither; each engine knows only itself), and the one
place that says who may be holding an index's store: its query server (``daemon_client.stop`` asks it to exit).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from codesift.index.config import DB_NAME, IndexConfig
from codesift.index.manifest import Manifest
from codesift.index.store import Store, is_milvus_uri


def store_location(index_dir: Path, config: IndexConfig) -> str:
    """The configured Milvus URI, else the index's SQLite file."""
    return config.store_uri or str(Path(index_dir) / DB_NAME)


def stop_holder(index_dir: str | Path) -> bool:
    """Ask the process that may hold ``index_dir``'s store and model (its query server) to exit; True if one ran."""
    from codesift.index.daemon_client import stop

    return stop(index_dir)


def open_store(index_dir: Path, config: IndexConfig, manifest: Manifest, dim: int, small_dim: int,
               release_holder: bool = True) -> Store:
    """The store of an index: SQLite inside the manifest's database, or Milvus for a Milvus URI.

    ``release_holder``: a store that admits one process (Milvus Lite) may ask the index's query server to let go of
    it first; the query server itself passes False."""
    if is_milvus_uri(config.store_uri):
        from codesift.index.milvus_store import MilvusStore

        token = config.store_token or os.environ.get("CODESIFT_STORE_TOKEN")  # never stored in the index
        release = functools.partial(stop_holder, index_dir) if release_holder else None
        return MilvusStore(config.store_uri, config.collection, dim, small_dim, token=token, release=release)
    from codesift.index.sqlite_store import SQLiteStore

    return SQLiteStore(manifest, dim, small_dim, config.vectors)
