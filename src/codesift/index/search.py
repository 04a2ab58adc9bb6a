"""Searching an index: dense (nl2code query prefix), BM25, and their reciprocal-rank fusion.

Filters (language, path globs with ``!negation``, excluding tests) become one ``ChunkFilter``, which the
store (``store.py``: SQLite by default, Milvus by URI) applies BEFORE its top-k cut, never to a cut list.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pathspec

from codesift.data.files import is_test_path
from codesift.data.walk import walk_files
from codesift.index.config import DB_NAME, IndexConfig, SearchConfig
from codesift.index.indexer import Indexer, IndexReport, default_index_dir, store_mismatch
from codesift.index.manifest import Manifest, damaged_message
from codesift.index.ranking import Candidate, fit_budget, fuse_windows, query_identifiers, query_windows, rank_files
from codesift.index.ranking import rerank as code_rerank
from codesift.index.store import (
    META_FIELDS,
    OUTPUT_FIELDS,
    ChunkFilter,
    Store,
    StoreLockedError,
    is_milvus_lite,
    is_milvus_uri,
    open_store,
    store_location,
)
from codesift.model.inputs import check_text
from codesift.model.norm import l2_normalize

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

log = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "bm25")
SEARCH_TASKS = ("nl2code", "code2code", "code2nl", "qa")


@dataclass
class SearchResult:
    """One hit: a chunk of a file, its line span (1-based, inclusive) and its score."""

    path: str
    start_line: int
    end_line: int
    symbol: str | None
    language: str | None
    score: float
    snippet: str
    kind: str | None = None
    id: str = ""

    def to_dict(self) -> dict:
        """JSON-able dict: path, start_line, end_line, symbol, kind, language, score, snippet."""
        d = asdict(self)
        return {k: d[k] for k in ("path", "start_line", "end_line", "symbol", "kind", "language", "score", "snippet")}


@dataclass
class FileResult:
    """One file, ranked by the evidence of its chunks: its best chunk's span and snippet, and its top chunks."""

    path: str
    score: float
    language: str | None
    start_line: int
    end_line: int
    symbol: str | None
    kind: str | None
    snippet: str
    chunks: list[dict]

    def to_dict(self) -> dict:
        """JSON-able dict: path, score, language, the best chunk's start_line/end_line/symbol/kind/snippet, chunks."""
        return asdict(self)


def rrf_fuse(lists: list[list[dict]], weights: list[float], k: float) -> list[tuple[float, dict]]:
    """Weighted reciprocal-rank fusion: score = sum_i w_i / (k + rank_i), ranks from 1; best first."""
    scores: dict[str, float] = {}
    rows: dict[str, dict] = {}
    for hits, w in zip(lists, weights):
        for rank, row in enumerate(hits, start=1):
            scores[row["id"]] = scores.get(row["id"], 0.0) + w / (k + rank)
            prev = rows.get(row["id"])  # keep the first list's distance, fill in fields a later list has
            rows[row["id"]] = row if prev is None else {**row, **prev}
    return sorted(((s, rows[i]) for i, s in scores.items()), key=lambda t: -t[0])


def visible(text: str) -> str:
    """``text`` without format characters (zero-width spaces, BOMs, direction marks), stripped."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf").strip()


def _glob_spec(globs: list[str]) -> pathspec.GitIgnoreSpec | None:
    """The gitignore-style matcher of ``globs`` (None for none); a glob that is not one is a ValueError naming it."""
    if not globs:
        return None
    try:
        return pathspec.GitIgnoreSpec.from_lines(globs)
    except (re.error, ValueError, TypeError) as exc:
        raise ValueError(f"bad path glob in {globs!r} ({exc}); use gitignore syntax, e.g. --path 'src/**/*.py'") from None


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, None if it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def split_globs(path_globs) -> tuple[list[str], list[str]]:
    """(include globs, exclude globs) from a list where ``!glob`` excludes."""
    if isinstance(path_globs, str):
        path_globs = [path_globs]
    inc, exc = [], []
    for g in path_globs or ():
        g = g.strip()
        if not g or g == "!":
            raise ValueError("empty path glob; pass e.g. --path 'src/**/*.py' or --path '!tests/'")
        (exc if g.startswith("!") else inc).append(g.lstrip("!"))
    return inc, exc


class CodeIndex:
    """An index directory opened for search, status and refresh."""

    def __init__(self, index_dir: str | Path, embedder=None, search_config: SearchConfig | None = None,
                 stop_query_server: bool = True) -> None:
        self.index_dir = Path(index_dir).resolve()
        # a Milvus Lite file admits one process: opening it first asks the index's query server (if any) to exit
        self._stop_query_server = stop_query_server
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
        self._files_view: tuple | None = None       # (generation, paths with chunks, languages)
        self._glob_cache: dict[tuple, tuple | None] = {}

    def replaced(self) -> bool:
        """Whether the index file at this path is no longer the one opened (deleted, or restored from a backup):
        reading on would answer from a file that no later `codesift index` writes to."""
        return _file_identity(self.index_dir / DB_NAME) != self._file_identity

    # ---- lazily opened parts
    @property
    def embedder(self):
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
            if self._stop_query_server and is_milvus_lite(self.config.store_uri):
                from codesift.index import query_server

                query_server.stop(self.index_dir)
            self._store = open_store(self.index_dir, self.config, self.manifest, meta["dim"], meta["small_dim"])
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
                     store=store)
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
               "dtype": self.config.dtype,
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

    # ---- filters
    def _indexed_files(self) -> tuple[list[str], set[str]]:
        """(sorted paths of indexed files with chunks, their languages), re-read only when the index changed."""
        meta = self.manifest.get_meta()
        generation = (meta.get("started_at"), meta.get("indexed_at"))
        if self._files_view is None or self._files_view[0] != generation:
            done = [r for r in self.manifest.files().values() if r.status == "done"]
            self._files_view = (generation, sorted(r.path for r in done if r.n_chunks),
                                {r.language for r in done if r.language})
            self._glob_cache.clear()
        return self._files_view[1], self._files_view[2]

    def build_filter(self, language: str | None = None, path_globs=(), exclude_tests: bool = False) -> ChunkFilter | None:
        """The filter for these constraints (``ChunkFilter()`` for none), None when nothing can match."""
        flt = ChunkFilter()
        paths, indexed = self._indexed_files()
        if language:
            language = language.strip().lower()
            if language not in indexed:
                raise ValueError(f"no indexed files in language {language!r}; indexed languages: "
                                 f"{', '.join(sorted(indexed)) or 'none'}")
            flt = dataclasses.replace(flt, language=language)
        if exclude_tests:
            flt = dataclasses.replace(flt, exclude_tests=True)
        inc, exc = (self._root_relative_globs(g) for g in split_globs(path_globs))
        if inc or exc:
            key = (tuple(inc), tuple(exc))
            if key not in self._glob_cache:  # agents repeat the same globs: match the file list once
                if len(self._glob_cache) >= 64:
                    self._glob_cache.clear()
                inc_spec, exc_spec = _glob_spec(inc), _glob_spec(exc)
                keep = [p for p in paths if (inc_spec is None or inc_spec.match_file(p))
                        and not (exc_spec is not None and exc_spec.match_file(p))]
                if not keep:
                    self._glob_cache[key] = None
                elif len(keep) == len(paths):
                    self._glob_cache[key] = ()
                else:
                    keep_set = set(keep)
                    drop = [p for p in paths if p not in keep_set]
                    negate = len(drop) < len(keep)
                    self._glob_cache[key] = (tuple(drop if negate else keep), negate)
            cached = self._glob_cache[key]
            if cached is None:
                return None
            if cached:
                flt = dataclasses.replace(flt, paths=cached[0], negate_paths=cached[1])
        return flt

    def _root_relative_globs(self, globs: list[str]) -> list[str]:
        """Globs as the indexed paths are written: ``./src/**`` is ``src/**``, and an absolute glob inside the root
        is made relative to it (else it could never match)."""
        out = []
        for g in globs:
            anchored = g.startswith("/")
            if anchored:
                for root in (str(self.root), str(self.root.resolve())):
                    if g == root or g.startswith(root.rstrip("/") + "/"):
                        g, anchored = "/" + g[len(root.rstrip("/")):].lstrip("/"), False
                        break
            while g.startswith("./"):
                g = "/" + g[2:].lstrip("/")  # gitignore's anchor: relative to the root, as ./ means
            out.append(g)
        return out

    # ---- search
    def search(self, query: str, limit: int = 10, language: str | None = None, path_globs=(), mode: str = "hybrid",
               exclude_tests: bool = False, two_stage: bool = False, rerank: bool = True, budget: int | None = None,
               task: str = "nl2code") -> list[SearchResult]:
        """Top ``limit`` chunks for a query of any length (``mode``: hybrid, dense or bm25).

        ``rerank``: code-aware ranking (definitions, exact identifiers, tests and docs lower; see ``ranking.py``).
        ``budget``: cap on the snippets' total tokens (``ranking.snippet_tokens``). ``task``: the model task of the
        dense leg: nl2code (a description), code2code (a piece of code), code2nl (docs for code), qa (a question).
        """
        ranked = self._candidates(query, limit, language, path_globs, mode, exclude_tests, two_stage, rerank, task)
        return apply_budget(self._results([(c.score, c.row or {"id": c.id}) for c in ranked[:limit]]), budget)

    def search_files(self, query: str, limit: int = 10, language: str | None = None, path_globs=(),
                     mode: str = "hybrid", exclude_tests: bool = False, two_stage: bool = False, rerank: bool = True,
                     budget: int | None = None, task: str = "nl2code") -> list[FileResult]:
        """Top ``limit`` files, ranked by the evidence of their chunks (``ranking.rank_files``); same options as ``search``."""
        self._check_limit(limit)
        depth_limit = min(1000, max(limit * 4, 40))  # lists 5x deeper (20 x limit, >= 200): files need evidence
        ranked = self._candidates(query, depth_limit, language, path_globs, mode, exclude_tests, two_stage, rerank, task)
        files = rank_files(ranked, self.search_config.file_chunk_weights)[:limit]
        fetched = self._results([(c.score, c.row or {"id": c.id}) for f in files for c in f.chunks])
        by_id = {r.id: r for r in fetched}
        out = []
        for f in files:
            chunks = [by_id[c.id] for c in f.chunks if c.id in by_id]
            if not chunks:  # gone from the store since it was found
                continue
            top = chunks[0]
            out.append(FileResult(path=f.path, score=round(float(f.score), 6), language=f.language,
                                  start_line=top.start_line, end_line=top.end_line, symbol=top.symbol, kind=top.kind,
                                  snippet=top.snippet,
                                  chunks=[{"start_line": r.start_line, "end_line": r.end_line, "symbol": r.symbol,
                                           "kind": r.kind, "score": r.score} for r in chunks]))
        return apply_budget(out, budget)

    def _candidates(self, query: str, limit: int, language, path_globs, mode: str, exclude_tests: bool,
                    two_stage: bool, rerank: bool, task: str, exclude_ids: tuple[str, ...] = ()) -> list[Candidate]:
        """Fused (and, with ``rerank``, code-aware re-ranked) candidates, best first, at least ``limit`` deep."""
        if not isinstance(query, str) or not visible(query):
            raise ValueError("the query is empty; describe the code you are looking for, e.g. 'parse a config file'")
        check_text(query, "the query")
        self._check_limit(limit)
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; valid modes: {', '.join(MODES)}")
        if task not in SEARCH_TASKS:
            raise ValueError(f"unknown search task {task!r}; valid tasks: {', '.join(SEARCH_TASKS)}")
        flt = self.build_filter(language, path_globs, exclude_tests)
        if flt is None or not self.manifest.has_chunks():
            return []
        if exclude_ids:
            flt = dataclasses.replace(flt, exclude_ids=tuple(exclude_ids))
        cfg = self.search_config
        depth = max(cfg.candidates, 5 * limit)
        lists, weights = [], []
        qvs = None
        if mode in ("hybrid", "dense"):
            qvs = self.query_vectors(query, task)
            lists.append(self._dense_windows(qvs, depth, flt, two_stage))
            weights.append(cfg.dense_weight)
        if mode in ("hybrid", "bm25"):
            lists.append(self._bm25(query, depth, flt))  # BM25 always reads the whole query
            weights.append(cfg.bm25_weight)
        if mode == "hybrid":
            fused = rrf_fuse(lists, weights, cfg.rrf_k)
        else:
            fused = [(row["distance"], row) for row in lists[0]]
        cands = self._to_candidates(fused)
        if not rerank:
            return cands
        idents = query_identifiers(query) if task == "nl2code" else (set(), False)
        if idents[0]:
            cands += self._definitions(idents[0], flt, cands)
        keep_docs_query = query if task == "nl2code" else query + " docs"  # code2nl and qa look for docs
        cands = code_rerank(cands, keep_docs_query, cfg.priors(), path_globs if not isinstance(path_globs, str)
                            else [path_globs], identifiers=idents)
        if qvs is not None and task in ("qa", "code2nl"):
            cands = self._task_rescore(cands, qvs, task)
        return cands

    def query_vectors(self, text: str, task: str = "nl2code") -> np.ndarray:
        """The dense query vectors of ``text``: one row when it fits the model, else one per window.

        Over the model's limit, ``SearchConfig.long_query`` decides: ``max`` or ``rrf`` (windows searched apart and
        fused), ``mean`` (the windows' mean vector) or ``truncate`` (the head only). See docs/search.md.
        """
        emb = self.embedder
        how = self.search_config.long_query
        count = getattr(emb, "count_tokens", None)
        limit = getattr(emb, "max_length", None)
        if count is None or limit is None:  # an embedder without a tokenizer (stubs): let it cut
            return emb.encode([text], task=task, role="query", normalize=True, truncate=True, show_progress=False)
        if count([text], task=task, role="query")[0] <= limit or how == "truncate":
            return emb.encode([text], task=task, role="query", normalize=True, truncate=True, show_progress=False)
        overhead = count([""], task=task, role="query")[0]  # prefix and special tokens, paid by every window
        budget = max(8, limit - overhead - 2)
        windows = query_windows(text, lambda xs: [max(0, n - overhead) for n in count(xs, task=task, role="query")],
                                budget, self.search_config.max_query_windows, self.search_config.window_min_tokens)
        vecs = emb.encode(windows, task=task, role="query", normalize=True, truncate=True, show_progress=False)
        if how == "mean":
            mean = vecs.mean(axis=0)
            return l2_normalize(mean)[None, :]
        return vecs

    def _dense_windows(self, qvs: np.ndarray, depth: int, flt: ChunkFilter, two_stage: bool) -> list[dict]:
        """The dense list of one query vector, or the fusion (``long_query``) of several windows' lists."""
        if len(qvs) == 1:
            return self._dense(qvs[0], depth, flt, two_stage)
        rows: dict[str, dict] = {}
        lists = []
        for qv in qvs:
            hits = self._dense(qv, depth, flt, two_stage)
            for r in hits:
                rows.setdefault(r["id"], r)
            lists.append([(r["id"], r["distance"]) for r in hits])
        how = self.search_config.long_query
        fused = fuse_windows(lists, "rrf" if how == "rrf" else "max", self.search_config.rrf_k)
        return [{**rows[i], "distance": s} for i, s in fused[:depth]]

    def _to_candidates(self, fused: list[tuple[float, dict]]) -> list[Candidate]:
        """Ranking candidates of (score, row) pairs; rows that carry only an id get their features in one lookup."""
        missing = [row["id"] for _, row in fused if "path" not in row]
        fetched = self.store.get(missing, META_FIELDS) if missing else {}
        out = []
        for score, row in fused:
            row = row if "path" in row else {**fetched.get(row["id"], {"path": ""}), **row}
            out.append(Candidate(row["id"], float(score), row["path"], row.get("language") or "",
                                 row.get("symbol") or "", row.get("kind") or "",
                                 bool(row["path"]) and is_test_path(row["path"]), row))
        return out

    def _definitions(self, names: set[str], flt: ChunkFilter, have: list[Candidate]) -> list[Candidate]:
        """Chunks defining a query identifier that fusion left out, entering at the weakest candidate's score
        (the identifier factor then lifts them, as it lifts the definitions fusion found)."""
        seen = {c.id for c in have}
        floor = min((c.score for c in have), default=1.0)
        found = self.store.defining(names, flt, limit=200)
        return self._to_candidates([(floor, r) for r in found if r["id"] not in seen])

    def _task_rescore(self, cands: list[Candidate], qvs: np.ndarray, task: str) -> list[Candidate]:
        """qa and code2nl: re-embed the top candidates with the task's document prefix and rank them by it.

        The index embeds every chunk as an nl2code document; a model trained with task prefixes matches
        answers and comments best under their own. Plain encoders (no prefixes) skip this.
        """
        emb = self.embedder
        prefix = getattr(emb, "prefix", None)
        if prefix is None or prefix(task, "document") == prefix("nl2code", "document"):
            return cands
        top = cands[: self.search_config.task_rerank_depth]
        results = self._results([(c.score, c.row or {"id": c.id}) for c in top])
        texts = {r.id: r.snippet for r in results}
        top = [c for c in top if c.id in texts]
        if not top:
            return cands
        docs = emb.encode([texts[c.id] for c in top], task=task, role="document", normalize=True, truncate=True,
                          show_progress=False)
        sims = (docs @ np.asarray(qvs, dtype=np.float32).T).max(axis=1)
        for c, s in zip(top, sims):
            c.score = float(s)
        top.sort(key=lambda c: -c.score)
        return top + cands[len(top):]

    def dense_vector_search(self, vector: np.ndarray, limit: int = 10, filter: ChunkFilter | None = None,
                            two_stage: bool = False) -> list[SearchResult]:
        """Top chunks for a query vector already embedded (benchmarks, the HTTP server)."""
        return self._results([(r["distance"], r) for r in self._dense(vector, limit, filter or ChunkFilter(), two_stage)[:limit]])

    def like(self, path: str, line: int, limit: int = 10, language: str | None = None, path_globs=(),
             exclude_tests: bool = False) -> list[SearchResult]:
        """Chunks similar to the indexed chunk covering ``path:line`` (code2code task), the chunk itself excluded."""
        self._check_limit(limit)
        src = self.chunk_at(path, line)
        flt = self.build_filter(language, path_globs, exclude_tests)
        if flt is None:
            return []
        flt = dataclasses.replace(flt, exclude_ids=(src["id"],))
        qv = self.embedder.encode([src["text"]], task="code2code", role="query", normalize=True, truncate=True,
                                  show_progress=False)[0]
        return self._results([(r["distance"], r) for r in self._dense(qv, limit, flt, False)[:limit]])

    def chunk_at(self, path: str, line: int) -> dict:
        """The indexed chunk covering ``path:line`` (the smallest one): id, path, start_line, end_line, text."""
        rel = self.relative_path(path)
        if not isinstance(line, int) or isinstance(line, bool) or line < 1:
            raise ValueError(f"line must be a positive integer, got {line!r}")
        rows = [r for r in self.store.chunks_of(rel) if r["start_line"] <= line <= r["end_line"]]
        if not rows:
            raise ValueError(f"no indexed chunk covers {rel}:{line}; check the line number or re-index the file")
        return min(rows, key=lambda r: r["end_line"] - r["start_line"])

    def explain(self, code: str | None = None, path: str | None = None, line: int | None = None, limit: int = 5,
                budget: int | None = None) -> list[SearchResult]:
        """The docs and comments that explain a piece of code (code2nl task): pasted ``code``, or the chunk at
        ``path:line`` (which is itself left out of the answer)."""
        exclude: tuple[str, ...] = ()
        if code is None:
            if path is None or line is None:
                raise ValueError("pass the code to explain, or a path and line of indexed code")
            src = self.chunk_at(path, line)
            code, exclude = src["text"], (src["id"],)
        ranked = self._candidates(code, limit, None, (), "hybrid", False, False, True, "code2nl", exclude)
        return apply_budget(self._results([(c.score, c.row or {"id": c.id}) for c in ranked[:limit]]), budget)

    def relative_path(self, path: str) -> str:
        """``path`` (absolute, or relative to the root) as a root-relative posix path; refuses paths outside the root."""
        if not isinstance(path, str) or not path.strip():
            raise ValueError("path is empty; pass a file path inside the indexed root")
        p = Path(path)
        full = (p if p.is_absolute() else self.root / p).resolve()
        try:
            return full.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"{path} is outside the indexed root {self.root}") from None

    # ---- internals
    @staticmethod
    def _check_limit(limit) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ValueError(f"limit must be an integer from 1 to 1000, got {limit!r}")

    def _dense(self, qv: np.ndarray, limit: int, flt: ChunkFilter, two_stage: bool) -> list[dict]:
        """Dense candidates, best first (two-stage: the small-dim scan ``rerank_factor`` x deeper, reranked)."""
        depth = max(self.search_config.rerank_factor * limit, 100)
        return self.store.dense(np.asarray(qv, dtype=np.float32), limit, flt, two_stage=two_stage, depth=depth)

    def _bm25(self, query: str, limit: int, flt: ChunkFilter) -> list[dict]:
        return self.store.bm25(query, limit, flt)

    def _results(self, ranked: list[tuple[float, dict]]) -> list[SearchResult]:
        """Results for (score, row) pairs, fetching the text (and fields) of rows that lack it."""
        missing = [row["id"] for _, row in ranked if "text" not in row]
        fetched = self.store.get(missing, OUTPUT_FIELDS) if missing else {}
        out = []
        for score, row in ranked:
            if "text" not in row:
                if row["id"] not in fetched:  # gone from the store since it was found
                    continue
                row = {**fetched[row["id"]], **row}
            out.append(self._result(row, score))
        return out

    def _result(self, row: dict, score: float) -> SearchResult:
        lines = row.get("text", "").split("\n")
        snippet = "\n".join(lines[: self.search_config.snippet_lines])
        return SearchResult(path=row["path"], start_line=int(row["start_line"]), end_line=int(row["end_line"]),
                            symbol=row.get("symbol") or None, language=row.get("language") or None,
                            score=round(float(score), 6), snippet=snippet, kind=row.get("kind") or None, id=row["id"])


def apply_budget(results: list, budget: int | None) -> list:
    """The leading results whose snippets fit ``budget`` tokens in all (``ranking.snippet_tokens``): the last one
    kept may be cut at a line boundary; at least one result is kept (with an empty snippet if need be)."""
    if budget is None:
        return results
    fitted = fit_budget([r.snippet for r in results], budget)  # checks the budget even when nothing matched
    if not results:
        return results
    out = []
    for r, text in zip(results, fitted):
        if text is None:
            break
        out.append(dataclasses.replace(r, snippet=text))
    return out or [dataclasses.replace(results[0], snippet="")]


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


def open_index(index_dir: str | Path, embedder=None) -> CodeIndex:
    """Open an existing index (a ``.codesift`` dir, or a source root that holds one) for search."""
    p = Path(index_dir)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; pass an index directory or an indexed source root")
    if not (p / DB_NAME).is_file() and (default_index_dir(p) / DB_NAME).is_file():
        p = default_index_dir(p)
    return CodeIndex(p, embedder=embedder)
