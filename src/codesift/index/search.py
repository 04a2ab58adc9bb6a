"""An index directory opened for search, status and refresh: ``CodeIndex``, the handle every door holds.

The handle opens the manifest, reads the index's configuration once, opens the store and the model when first
needed, and answers freshness (``staleness``, ``replaced``), ``status`` and ``refresh``. Searching is the
``Searcher``'s (``searcher.py``): ``run(SearchRequest)`` is the one entry; ``search``, ``search_files``, ``like`` and
``explain`` are the library's shorthands for requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codesift.data.walk import walk_files
from codesift.index.config import DB_NAME, IndexConfig, SearchConfig
from codesift.index.engines import open_store, store_location
from codesift.index.indexer import Indexer, IndexReport, default_index_dir, store_mismatch
from codesift.index.manifest import Manifest, damaged_message
from codesift.index.request import SearchRequest
from codesift.index.searcher import FileResult, Searcher, SearchResult
from codesift.index.store import ChunkFilter, Store, StoreLockedError, is_milvus_uri

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

    from codesift.model.encoder import Encoder


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, None if it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class CodeIndex:
    """An index directory opened for search, status and refresh."""

    def __init__(self, index_dir: str | Path, embedder: Encoder | None = None, search_config: SearchConfig | None = None,
                 release_holder: bool = True) -> None:
        self.index_dir = Path(index_dir).resolve()
        # a store one process at a time may open (Milvus Lite): ask its holder to let go first (see engines.open_store);
        # the holder itself (the query server) passes False
        self._release_holder = release_holder
        manifest_path = self.index_dir / DB_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no codesift index at {self.index_dir}; build one with `codesift index PATH`")
        self.manifest = Manifest(manifest_path)
        self._file_identity = _file_identity(manifest_path)
        meta = self.manifest.get_meta()
        if "root" not in meta:
            raise FileNotFoundError(f"index at {self.index_dir} was never built; run `codesift index PATH`")
        self.root = Path(meta["root"])
        self.config = IndexConfig.from_meta(meta) or IndexConfig()
        self.search_config = search_config or SearchConfig()
        self._embedder = embedder
        self._store: Store | None = None
        self.searcher = Searcher(self)

    def replaced(self) -> bool:
        """Whether the index file at this path is no longer the one opened (deleted, or restored from a backup):
        reading on would answer from a file that no later `codesift index` writes to."""
        return _file_identity(self.index_dir / DB_NAME) != self._file_identity

    # ---- lazily opened parts
    @property
    def embedder(self) -> Encoder:
        """The index's Embedder (loaded on first use, from the model the index was built with)."""
        if self._embedder is None:
            from codesift.model.embedder import Embedder

            self._embedder = Embedder(self.config.model, dtype=self.config.dtype)  # as the documents were
        fp = self.manifest.get_meta().get("fingerprint")
        if fp and self._embedder.fingerprint != fp:
            raise ValueError(f"the embedder {self._embedder.fingerprint} differs from the one that built this index ({fp}); "
                             "search with the index's model or rebuild the index")
        return self._embedder

    @property
    def store(self) -> Store:
        """The chunk store."""
        if self._store is None:
            meta = self.manifest.get_meta()
            if not meta.get("dim"):
                raise ValueError(f"the index {self.index_dir} holds no chunks yet (no source files were indexed); "
                                 f"run `codesift index {self.root}` on a tree with source files")
            self._store = open_store(self.index_dir, self.config, self.manifest, meta["dim"], meta["small_dim"],
                                     release_holder=self._release_holder)
            mismatch = store_mismatch(self.manifest, self._store, self.index_dir)
            if mismatch:  # searching it would silently miss chunks: say so, and how to repair it
                self.close_store()
                raise ValueError(f"{mismatch}; run `codesift index {self.root}` to repair it "
                                 "(or `--rebuild` to start over)")
        return self._store

    def close_store(self) -> None:
        """Release the store only (a Milvus Lite file lock), keeping the manifest open."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def close(self) -> None:
        """Release the store and the manifest."""
        self.close_store()
        self.manifest.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- freshness
    def refresh(self, progress=None) -> IndexReport:
        """Re-index what changed in the tree since the last run."""
        # the store is opened here, by this index's rules (the indexer reuses it)
        store = self.store if self.manifest.get_meta().get("dim") else self._store
        ix = Indexer(self.root, self.index_dir, self.config, embedder=self._embedder, manifest=self.manifest,
                     store=store, release_holder=self._release_holder)
        report = ix.update(progress)
        self._store, self._embedder = ix.opened_store, ix.loaded_embedder
        return report

    def staleness(self) -> dict:
        """Files added, changed (mtime or size) or deleted since the last run, and pending (interrupted) files."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"the indexed source root {self.root} no longer exists; if the repository moved, "
                                    "rebuild its index there with `codesift index NEW_PATH --rebuild`")
        records = self.manifest.files()
        seen: set[str] = set()
        added = changed = 0
        for f in walk_files(self.root, self.config.extra_excludes):
            seen.add(f.path)
            r = records.get(f.path)
            if r is None:
                added += 1
            elif r.mtime_ns != f.mtime_ns or r.size != f.size:
                changed += 1
        deleted = sum(1 for p in records if p not in seen)
        pending = sum(1 for r in records.values() if r.status == "pending")
        return {"stale": bool(added or changed or deleted or pending), "added": added, "changed": changed,
                "deleted": deleted, "pending": pending}

    def status(self, check_staleness: bool = True) -> dict:
        """Files, chunks, languages, model, store and (optionally) staleness of the index."""
        meta = self.manifest.get_meta()
        langs: dict[str, int] = {}
        for r in self.manifest.files().values():
            if r.status == "done" and r.language:
                langs[r.language] = langs.get(r.language, 0) + 1
        out = {"root": str(self.root), "index_dir": str(self.index_dir), "model": self.config.model,
               "dtype": self.config.dtype, "vectors": self.config.vectors,
               "fingerprint": meta.get("fingerprint"), "dim": meta.get("dim"), "small_dim": meta.get("small_dim"),
               "store": store_location(self.index_dir, self.config),
               "engine": "milvus" if is_milvus_uri(self.config.store_uri) else "sqlite",
               **self.manifest.totals(), "languages": dict(sorted(langs.items(), key=lambda t: -t[1])),
               "indexed_at": meta.get("indexed_at")}
        out["tuned"] = tuned_record(self.index_dir, self.config.model)
        out["problem"] = self.manifest.check()
        if meta.get("dim") and out["problem"] is None:
            try:
                damage = self.store.damage()  # opening it checks it against the manifest
                if damage:
                    out["problem"] = damaged_message(self.manifest.path, damage)
            except StoreLockedError:
                pass  # another process (a server) has it open: nothing to say about it from here
            except ValueError as exc:
                out["problem"] = str(exc)
        if check_staleness:
            out["staleness"] = self.staleness()
            out["staleness"]["stale"] = out["staleness"]["stale"] or out["problem"] is not None
        return out

    # ---- searching: one request, one answer
    def run(self, request: SearchRequest) -> list[SearchResult] | list[FileResult]:
        """The answer to one search request (chunks, or files with ``request.files``)."""
        return self.searcher.run(request)

    def search(self, query: str, limit: int = 10, language: str | None = None, path_globs=(), mode: str = "hybrid",
               exclude_tests: bool = False, two_stage: bool = False, rerank: bool = True, budget: int | None = None,
               task: str = "nl2code") -> list[SearchResult]:
        """Top ``limit`` chunks for a query of any length (``mode``: hybrid, dense or bm25); see ``SearchRequest``."""
        return self.run(SearchRequest.of(query=query, limit=limit, language=language, path_globs=list(path_globs),
                                         mode=mode, exclude_tests=exclude_tests, two_stage=two_stage, rerank=rerank,
                                         budget=budget, task=task))

    def search_files(self, query: str, limit: int = 10, language: str | None = None, path_globs=(),
                     mode: str = "hybrid", exclude_tests: bool = False, two_stage: bool = False, rerank: bool = True,
                     budget: int | None = None, task: str = "nl2code") -> list[FileResult]:
        """Top ``limit`` files, ranked by the evidence of their chunks (``ranking.rank_files``); same options as ``search``."""
        return self.run(SearchRequest.of(query=query, limit=limit, language=language, path_globs=list(path_globs),
                                         mode=mode, exclude_tests=exclude_tests, two_stage=two_stage, rerank=rerank,
                                         budget=budget, task=task, files=True))

    def like(self, path: str, line: int, limit: int = 10, language: str | None = None, path_globs=(),
             exclude_tests: bool = False) -> list[SearchResult]:
        """Chunks similar to the indexed chunk covering ``path:line`` (code2code task), the chunk itself excluded."""
        return self.run(SearchRequest.of(like=f"{path}:{line}", limit=limit, language=language,
                                         path_globs=list(path_globs), exclude_tests=exclude_tests))

    def explain(self, code: str | None = None, path: str | None = None, line: int | None = None, limit: int = 5,
                budget: int | None = None) -> list[SearchResult]:
        """The docs and comments that explain a piece of code (code2nl task): pasted ``code``, or the chunk at
        ``path:line`` (which is itself left out of the answer)."""
        if code is None:
            if path is None or line is None:
                raise ValueError("pass the code to explain, or a path and line of indexed code")
            return self.run(SearchRequest.of(like=f"{path}:{line}", task="code2nl", mode="hybrid", rerank=True,
                                             limit=limit, budget=budget))
        return self.run(SearchRequest.of(query=code, task="code2nl", limit=limit, budget=budget))

    def chunk_at(self, path: str, line: int) -> dict:
        """The indexed chunk covering ``path:line`` (the smallest one): id, path, start_line, end_line, text."""
        return self.searcher.chunk_at(path, line)

    def relative_path(self, path: str) -> str:
        """``path`` (absolute, or relative to the root) as a root-relative posix path; refuses paths outside the root."""
        return self.searcher.relative_path(path)

    def build_filter(self, language: str | None = None, path_globs=(), exclude_tests: bool = False) -> ChunkFilter | None:
        """The store filter for these constraints (``ChunkFilter()`` for none), None when nothing can match."""
        return self.searcher.build_filter(language, path_globs, exclude_tests)

    def query_vectors(self, text: str, task: str = "nl2code") -> np.ndarray:
        """The dense query vectors of ``text`` (one per window when it is over the model's limit)."""
        return self.searcher.query_vectors(text, task)

    def dense_vector_search(self, vector: np.ndarray, limit: int = 10, filter: ChunkFilter | None = None,
                            two_stage: bool = False) -> list[SearchResult]:
        """Top chunks for a query vector already embedded (benchmarks, the HTTP server)."""
        hits = self.searcher.dense(vector, limit, filter or ChunkFilter(), two_stage)[:limit]
        return self.searcher.results([(r["distance"], r) for r in hits])


def stored_dtype(index_dir: str | Path) -> str | None:
    """The model precision an index's vectors were made with (None: no index there, or nothing embedded yet)."""
    p = Path(index_dir)
    if not (p / DB_NAME).is_file() and (default_index_dir(p) / DB_NAME).is_file():
        p = default_index_dir(p)
    if not (p / DB_NAME).is_file():
        return None
    manifest = Manifest(p / DB_NAME)
    try:
        config = IndexConfig.from_meta(manifest.get_meta())
    finally:
        manifest.close()
    return config.dtype if config is not None and config.dtype != "auto" else None


def tuned_record(index_dir: str | Path, model: str) -> dict | None:
    """What `codesift tune` recorded when ``model`` is the tuned model it installed in ``index_dir`` (base model,
    held-out Acc@k before and after), else None."""
    from codesift.index.config import read_tune_record

    record = read_tune_record(index_dir)
    if not record or not record.get("installed") or Path(record.get("model", "")) != Path(model):
        return None
    return {k: record.get(k) for k in ("base_model", "before", "after", "head", "installed_at")}


def open_index(index_dir: str | Path, embedder: Encoder | None = None) -> CodeIndex:
    """Open an existing index (a ``.codesift`` dir, or a source root that holds one) for search."""
    p = Path(index_dir)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; pass an index directory or an indexed source root")
    if not (p / DB_NAME).is_file() and (default_index_dir(p) / DB_NAME).is_file():
        p = default_index_dir(p)
    return CodeIndex(p, embedder=embedder)
