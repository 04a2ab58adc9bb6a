"""Build or update an index: walk, diff against the manifest, chunk, embed (cached), write the store.

A batch of changed files is chunked and embedded (vectors cached as they come), then committed: with the
SQLite store its file records and chunks in ONE transaction, so a run killed at any point leaves whole
batches only, and the next run finds the rest changed and does it. With a Milvus store, whose writes cannot
join that transaction, the files are marked ``pending`` (committed) before their chunks are replaced and
``done`` after; the next run redoes ``pending`` files. Deleted files go the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codesift.data.files import is_test_path
from codesift.data.walk import FileStat, walk_files
from codesift.index.config import DB_NAME, INDEX_DIRNAME, IndexConfig, collection_name
from codesift.index.engines import open_store
from codesift.index.manifest import FileRecord, Manifest, damaged_message
from codesift.index.store import Store, is_milvus_uri, make_row
from codesift.model.loading import canonical_model_name

if TYPE_CHECKING:
    from codesift.model.encoder import Encoder

log = logging.getLogger(__name__)

# An index directory of the layout before the SQLite store: the Milvus Lite file and its in-memory mirror.
OLD_LAYOUT = ("milvus.db", ".milvus.db.lock", "vectors.npz")

Progress = Callable[[str, int, int], None]  # (phase, done, total)
LoadEncoder = Callable[[str, str], "Encoder"]   # (model, dtype) -> the model that embeds an index's chunks


@dataclass
class IndexReport:
    """What one indexing run did (the ``--json`` summary of ``codesift index``)."""

    root: str
    index_dir: str
    files_seen: int = 0
    files_changed: int = 0          # added or modified (content differs from the index)
    files_added: int = 0
    files_deleted: int = 0          # deleted, or renamed away
    files_skipped: int = 0          # binary, huge, minified, generated, unreadable, unknown language
    chunks_embedded: int = 0        # chunks that went through the model
    chunks_cached: int = 0          # chunks whose vector came from the embedding cache
    chunks_deleted: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    walk_seconds: float = 0.0
    embed_seconds: float = 0.0
    store_seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)   # path -> reason (changed files only)

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)


def default_index_dir(root: str | Path) -> Path:
    """``ROOT/.codesift``."""
    return Path(root).resolve() / INDEX_DIRNAME


def pick_small_dim(dim: int, matryoshka_dims: tuple[int, ...] | list[int] | None, wanted: int | None) -> int:
    """The first-stage dim of two-stage search: ``wanted``, else the smallest Matryoshka dim >= 64, else dim // 4."""
    if wanted:
        if not 0 < wanted <= dim:
            raise ValueError(f"small_dim {wanted} must be between 1 and the model dimension {dim}")
        return wanted
    dims = sorted(d for d in (matryoshka_dims or ()) if d < dim)
    good = [d for d in dims if d >= 64]
    return good[0] if good else (dims[-1] if dims else max(1, dim // 4))


def load_index_encoder(model: str, dtype: str) -> Encoder:
    """The model of an index: an Embedder of ``model``; ``dtype`` "auto" is the fastest path that keeps quality."""
    from codesift.model.embedder import Embedder
    from codesift.model.int8 import fastest_dtype

    return Embedder(model, dtype=dtype if dtype != "auto" else fastest_dtype(model))


def sha256_text(text: str) -> str:
    """Hex sha256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


class DocumentTokens:
    """The chunker's ``PieceCounter`` over an Embedder: tokens as the model sees a chunk (nl2code document)."""

    def __init__(self, embedder: Encoder) -> None:
        self.embedder = embedder

    def spans(self, text: str):
        """``text`` tokenized once (offsets), or None where the tokenizer has no offsets."""
        from codesift.data.chunking import TokenSpans

        found = self.embedder.token_spans(text, task="nl2code", role="document")
        return None if found is None else TokenSpans.from_offsets(*found)

    def count(self, texts) -> list[int]:
        """Exact counts, prefix and special tokens included."""
        return self.embedder.count_tokens(list(texts), task="nl2code", role="document")


def ignore_itself(index_dir: Path) -> None:
    """Leave a ``.gitignore`` of ``*`` in the index folder, so that `git add -A` never stages the index (if there is
    none yet; never through a link planted at that name)."""
    try:
        fd = os.open(index_dir / ".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return
    except OSError as exc:  # a read-only folder: indexing may still fail later with its own message
        log.debug("no .gitignore in %s: %s", index_dir, exc)
        return
    with os.fdopen(fd, "w") as fh:
        fh.write("*\n")


def clear_index(index_dir: str | Path) -> None:
    """Delete an index's data (its SQLite file, a Milvus Lite file, the query server's files), keeping what
    ``KEPT_ON_REBUILD`` names; refuses a folder that holds no codesift index."""
    from codesift.index.config import KEPT_ON_REBUILD
    from codesift.index.engines import stop_holder

    index_dir = Path(index_dir)
    if not (index_dir / DB_NAME).is_file():
        raise ValueError(f"{index_dir} does not look like a codesift index; refusing to delete it")
    stop_holder(index_dir)  # a process holding the old store or model must not answer from it
    for entry in index_dir.iterdir():
        if entry.name in KEPT_ON_REBUILD:
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)


def store_mismatch(manifest: Manifest, store: Store, index_dir: Path) -> str | None:
    """Why ``store`` disagrees with ``manifest`` (a different chunk count), or None when they agree."""
    totals = manifest.totals()
    if totals["files_pending"]:
        return None  # an interrupted run: the next run settles it
    stored = store.count()
    if stored == totals["chunks"]:
        return None
    return (f"the store of {index_dir} holds {stored} chunks but the manifest lists {totals['chunks']} "
            "(rolled back to an earlier save, or damaged)")


class Indexer:
    """Keeps one index directory in step with one source tree."""

    def __init__(self, root: str | Path, index_dir: str | Path | None = None, config: IndexConfig | None = None,
                 embedder: Encoder | None = None, manifest: Manifest | None = None, store: Store | None = None,
                 release_holder: bool = True, load_encoder: LoadEncoder = load_index_encoder) -> None:
        """``embedder``: the model, given (no check against the index's); else ``load_encoder(model, dtype)`` loads
        it on first use (checked, and recorded in the index); pass one that shares a model between indexes."""
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory; pass the root of the source tree to index")
        self.index_dir = Path(index_dir).resolve() if index_dir else default_index_dir(self.root)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        ignore_itself(self.index_dir)
        self.manifest = manifest or Manifest(self.index_dir / DB_NAME)
        meta = self.manifest.get_meta()
        stored = IndexConfig.from_meta(meta)
        config = config or stored or IndexConfig()
        if isinstance(config.extra_excludes, list):
            config.extra_excludes = tuple(config.extra_excludes)
        if stored is not None and stored.dtype != "auto":  # new vectors must match the stored ones
            if config.dtype == "auto":
                config = replace(config, dtype=stored.dtype)
            elif config.dtype != stored.dtype:
                raise ValueError(f"index {self.index_dir} holds {stored.dtype} vectors, not {config.dtype}; "
                                 "rebuild it (`codesift index --rebuild`) to change the precision")
        if meta.get("root") and Path(meta["root"]) != self.root:
            raise ValueError(f"index {self.index_dir} belongs to {meta['root']}, not {self.root}; if the repository "
                             f"moved, rebuild it here with `codesift index {self.root} --rebuild`, else pass another --index")
        config = replace(config, model=canonical_model_name(config.model))
        if config.collection is None:  # a Milvus store: one collection per index, named when the index is created
            config = replace(config, collection=stored.collection if stored else collection_name(self.root, self.index_dir))
        if meta.get("config") and canonical_model_name(meta["config"].get("model") or "") != config.model:
            raise ValueError(
                f"index {self.index_dir} was built with model {meta['config'].get('model')!r}, not {config.model!r}; "
                "delete the index directory (or pass --rebuild) to re-embed with the new model"
            )
        self.config = config
        self._embedder = embedder
        self._load_encoder = load_encoder
        self._store = store
        self._chunked: dict[tuple[str, str], list] = {}   # (path, sha256) -> chunks, from ``chunks_to_embed``
        self._embedded_elsewhere: set[str] = set()         # see ``update``
        self._release_holder = release_holder  # see engines.open_store

    # lazily built parts: an unchanged tree never loads the model nor opens the store
    @property
    def embedder(self) -> Encoder:
        """The Embedder (loaded on first use)."""
        if self._embedder is None:
            self._embedder = self._load_encoder(self.config.model, self.config.dtype)
            self._record_loaded_model()
        return self._embedder

    def _record_loaded_model(self) -> None:
        """Store the name of the model that was actually loaded ($CODESIFT_MODEL or a fallback may stand in for
        the configured one), and refuse one whose weights differ from the index's vectors."""
        fingerprint = self.manifest.get_meta().get("fingerprint")
        if fingerprint and self._embedder.fingerprint != fingerprint:
            raise ValueError(f"model {self._embedder.name!r} is not the one that built index {self.index_dir} "
                             f"(weights {fingerprint}); pass --model with that model, or --rebuild to re-embed")
        loaded = canonical_model_name(self._embedder.name)
        precision = self._embedder.precision
        if loaded != self.config.model or precision != self.config.dtype:
            log.info("recording the loaded model %s, %s (configured: %s, %s)", loaded, precision, self.config.model,
                     self.config.dtype)
            self.config = replace(self.config, model=loaded, dtype=precision)
            self.manifest.set_meta(config=self.config.to_meta())

    @property
    def loaded_embedder(self) -> Encoder | None:
        """The Embedder if it was loaded or given (None: not needed yet)."""
        return self._embedder

    @property
    def opened_store(self) -> Store | None:
        """The store if it was opened or given (None: not needed yet)."""
        return self._store

    @property
    def store(self) -> Store:
        """The chunk store (opened on first use)."""
        if self._store is None:
            meta = self.manifest.get_meta()
            dim = meta.get("dim") or self.embedder.dimension
            small = meta.get("small_dim") or pick_small_dim(dim, self.embedder.matryoshka_dims, self.config.small_dim)
            self._store = open_store(self.index_dir, self.config, self.manifest, dim, small,
                                     release_holder=self._release_holder)
            if not meta.get("dim"):
                self.manifest.set_meta(dim=dim, small_dim=small, fingerprint=self.embedder.fingerprint)
        return self._store

    def close(self) -> None:
        """Close the store and the manifest."""
        if self._store is not None:
            self._store.close()
            self._store = None
        self.manifest.close()

    def scan(self) -> tuple[list[FileStat], dict[str, FileRecord], list[FileStat], list[str]]:
        """Walk and diff: (all files, manifest records, files to (re)check, paths gone from the tree)."""
        self.bad_names: list[tuple[str, str]] = []  # (escaped path, reason): names that are not UTF-8
        files = list(walk_files(self.root, self.config.extra_excludes, skipped=self.bad_names))
        records = self.manifest.files()
        todo = []
        for f in files:
            r = records.get(f.path)
            if r is None or r.status == "pending" or r.mtime_ns != f.mtime_ns or r.size != f.size:
                todo.append(f)
        seen = {f.path for f in files}
        gone = [p for p in records if p not in seen]
        return files, records, todo, gone

    def chunks_to_embed(self) -> dict[str, str]:
        """The texts (by chunk hash) that ``update`` would embed now: chunks of new or changed files without a
        cached vector. Embed them elsewhere (``codesift index --ray``), put the vectors in the manifest's cache, and
        ``update`` embeds nothing; the chunks are kept for it, so each file is chunked once."""
        _, records, todo, _ = self.scan()
        texts: dict[str, str] = {}
        for f in todo:
            text, _, language = self._read(f)
            if text is None:
                continue
            sha = sha256_text(text)
            if not self._content_changed(records.get(f.path), sha):
                continue
            for c in self._chunks(f.path, text, sha, language):
                texts.setdefault(c.content_hash, c.text)
        if not texts:
            return {}
        cached = self.manifest.cached_hashes(list(texts), self.embedder.fingerprint)
        return {h: t for h, t in texts.items() if h not in cached}

    @staticmethod
    def _content_changed(prev: FileRecord | None, sha: str) -> bool:
        """Whether a readable file's text differs from what the index holds (new, edited, or left unfinished)."""
        return prev is None or prev.status != "done" or prev.sha256 != sha

    def _chunks(self, path: str, text: str, sha: str, language: str | None) -> list:
        """The chunks of one file, cut once per content: those ``chunks_to_embed`` cut are kept for ``update``."""
        from codesift.data.chunking import chunk_text

        key = (path, sha)
        if key not in self._chunked:
            self._chunked[key] = chunk_text(text, path, language=language, max_tokens=self.chunk_limit(),
                                            counter=DocumentTokens(self.embedder))
        return self._chunked[key]

    def update(self, progress: Progress | None = None, embedded_elsewhere: Collection[str] = ()) -> IndexReport:
        """Bring the index in line with the tree; returns what changed.

        A store that lost rows the manifest lists (rolled back to an earlier save, or damaged) is
        repaired: every file is written again, its vectors from the embedding cache.

        ``embedded_elsewhere``: chunk hashes whose vectors were embedded for this run by someone else and put in
        the cache (``codesift index --ray``); the report counts them as embedded, not as cached.
        """
        self._embedded_elsewhere = set(embedded_elsewhere)
        if self.manifest.get_meta().get("dim"):
            damage = self.store.damage()
            if damage:  # rows a killed run cannot leave: remove them, write their files again (vectors from the cache)
                log.warning("%s; repairing it", damaged_message(self.manifest.path, damage))
                self.manifest.mark_pending(self.store.repair())
        report = self._update(progress)
        mismatch = self.store_mismatch()
        if mismatch:
            log.warning("%s; repairing it", mismatch)
            records = self.manifest.files()
            listed = {p for p, r in records.items() if r.status == "done" and r.n_chunks}
            stray = sorted(self.store.paths() - listed)
            if stray:  # rows of files the manifest does not list (e.g. it was lost and rebuilt)
                self.store.delete_paths(stray)
                self.store.flush()
            if self.store_mismatch():  # rows are missing: write every file again, vectors from the cache
                self.manifest.mark_pending([p for p, r in records.items() if r.status == "done"])
                return self._update(progress)
            self._update(progress)
        return report

    def store_mismatch(self) -> str | None:
        """Why the store disagrees with the manifest, or None when they agree (see ``store_mismatch``)."""
        if not self.manifest.get_meta().get("dim"):
            return None  # no store yet
        return store_mismatch(self.manifest, self.store, self.index_dir)

    def _update(self, progress: Progress | None = None) -> IndexReport:
        t0 = time.perf_counter()
        report = IndexReport(root=str(self.root), index_dir=str(self.index_dir))
        self.manifest.set_meta(root=str(self.root), config=self.config.to_meta(), started_at=time.time())
        files, records, todo, gone = self.scan()
        report.files_seen = len(files) + len(self.bad_names)
        report.files_skipped += len(self.bad_names)
        report.skipped.update(self.bad_names)
        report.walk_seconds = time.perf_counter() - t0

        if gone:
            report.files_deleted = len(gone)
            report.chunks_deleted += sum(records[p].n_chunks for p in gone)
            ts = time.perf_counter()
            self._commit(gone, [], [], forget=gone)
            report.store_seconds += time.perf_counter() - ts

        touched: list[FileRecord] = []         # mtime changed, content identical: metadata only
        batch: list[tuple[FileStat, str, str, str | None]] = []  # (stat, text, sha, language)
        batch_chunks = 0
        done = 0
        for f in todo:
            done += 1
            if progress:
                progress("files", done, len(todo))
            prev = records.get(f.path)
            text, reason, language = self._read(f)
            if text is None:
                if prev is None or prev.status != "skipped" or prev.skip_reason != reason:
                    report.skipped[f.path] = reason or "skipped"
                record = FileRecord(f.path, f.mtime_ns, f.size, None, language, 0, "skipped", reason)
                if prev is not None and prev.n_chunks:  # its chunks go with the record that says so
                    report.chunks_deleted += prev.n_chunks
                    self._commit([f.path], [], [record])
                else:
                    touched.append(record)
                report.files_skipped += 1
                continue
            sha = sha256_text(text)
            if not self._content_changed(prev, sha):
                touched.append(FileRecord(f.path, f.mtime_ns, f.size, sha, prev.language, prev.n_chunks, "done"))
                continue
            report.files_changed += 1
            report.files_added += prev is None
            if prev is not None:
                report.chunks_deleted += prev.n_chunks
            batch.append((f, text, sha, language))
            batch_chunks += 1 + len(text) // 2000
            if batch_chunks >= self.config.embed_batch_chunks or len(batch) >= self.config.files_per_commit:
                self._write_batch(batch, report)
                batch, batch_chunks = [], 0
            if len(touched) >= self.config.files_per_commit:
                self.manifest.put_files(touched)
                touched = []
        if batch:
            self._write_batch(batch, report)
        if touched:
            self.manifest.put_files(touched)
        todo_paths = {t.path for t in todo}
        report.files_skipped += sum(1 for f in files if f.path not in todo_paths
                                    and f.path in records and records[f.path].status == "skipped")
        if self._store is not None and (report.files_changed or report.files_deleted or report.chunks_deleted):
            ts = time.perf_counter()
            self._store.flush()
            report.store_seconds += time.perf_counter() - ts
        report.chunks_total = self.manifest.totals()["chunks"]
        report.seconds = time.perf_counter() - t0
        self.manifest.set_meta(indexed_at=time.time(), last_report=report.to_dict() | {"skipped": {}})
        self._drop_old_layout()
        return report

    def _drop_old_layout(self) -> None:
        """Delete the files of the old layout (``OLD_LAYOUT``) once this run has put every chunk in SQLite.

        Looks for the files first: an index without them opens no store and loads no model here."""
        leftovers = [self.index_dir / name for name in OLD_LAYOUT if (self.index_dir / name).exists()]
        if not leftovers or is_milvus_uri(self.config.store_uri) or self.store_mismatch():
            return
        for path in leftovers:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            log.info("removed %s, left by an older codesift (the chunks are in %s now)", path, DB_NAME)

    def _read(self, f: FileStat) -> tuple[str | None, str | None, str | None]:
        from codesift.data.files import read_source
        from codesift.data.languages import detect_language

        path = self.root / f.path
        language = detect_language(path)
        text, reason = read_source(path, max_bytes=self.config.max_file_bytes)
        if text is None:
            return None, reason, language
        if language is None:
            language = detect_language(path, text.split("\n", 1)[0])
        if language is None:
            return None, "unknown language", None
        return text, None, language

    def chunk_limit(self) -> int:
        """Tokens per chunk: the configured cap, or the model's own limit where that is lower (no chunk is truncated)."""
        return min(self.config.max_tokens, self.embedder.max_length)

    def _write_batch(self, batch: list[tuple[FileStat, str, str, str | None]], report: IndexReport) -> None:
        chunks_by_file = [self._chunks(f.path, text, sha, language) for f, text, sha, language in batch]
        for f, _, sha, _ in batch:
            self._chunked.pop((f.path, sha), None)
        all_chunks = [c for cs in chunks_by_file for c in cs]
        vectors = self._vectors(all_chunks, report)
        small = self.store.small_dim
        seen: Counter = Counter()  # identical pieces of one line (a table of repeated values) get distinct ids
        rows = []
        for c in all_chunks:
            key = (c.path, c.start_line, c.content_hash)
            rows.append(make_row(c, vectors[c.content_hash], small, is_test_path(c.path), repeat=seen[key]))
            seen[key] += 1
        ts = time.perf_counter()
        self._commit([f.path for f, *_ in batch], rows,
                     [FileRecord(f.path, f.mtime_ns, f.size, sha, language, len(cs), "done")
                      for (f, text, sha, language), cs in zip(batch, chunks_by_file)])
        report.store_seconds += time.perf_counter() - ts

    def _commit(self, paths: list[str], rows: list[dict], records: list[FileRecord], forget: list[str] = ()) -> None:
        """Replace the chunks of ``paths`` by ``rows``, store ``records`` and forget the files ``forget``.

        SQLite store: one transaction. Milvus store: ``paths`` are marked pending (committed) first, so that a
        run killed before the records are stored leaves them for the next run to redo.
        """
        if not self.store.shares_manifest:
            self.manifest.mark_pending(list(paths))
        with self.manifest.transaction():
            self.store.replace_files(paths, rows)
            if records:
                self.manifest.put_files(records)
            if forget:
                self.manifest.delete_files(list(forget))

    def _vectors(self, chunks: list, report: IndexReport) -> dict[str, np.ndarray]:
        """Full-dim vectors by chunk hash: from the cache, else embedded (nl2code document) and cached."""
        fingerprint = self.embedder.fingerprint
        hashes = list(dict.fromkeys(c.content_hash for c in chunks))
        found = self.manifest.cached_vectors(hashes, fingerprint)
        missing = [h for h in hashes if h not in found]
        fresh = self._embedded_elsewhere.intersection(found)  # embedded for this run, counted once
        self._embedded_elsewhere -= fresh
        report.chunks_embedded += len(fresh)
        # a chunk whose text another chunk of this batch also has is embedded once: the others count as cached,
        # so that embedded + cached = chunks written
        report.chunks_cached += len(chunks) - len(missing) - len(fresh)
        if missing:
            text_of = {c.content_hash: c.text for c in chunks}
            step = self.config.embed_batch_chunks
            for i in range(0, len(missing), step):
                part = missing[i:i + step]
                ts = time.perf_counter()
                vecs = self.embedder.encode([text_of[h] for h in part], task="nl2code", role="document",
                                            normalize=True, truncate=True, show_progress=False)
                report.embed_seconds += time.perf_counter() - ts
                new = dict(zip(part, vecs))
                self.manifest.cache_vectors(new, fingerprint)
                found.update(new)
            report.chunks_embedded += len(missing)
        return found
