"""Answering a ``SearchRequest`` over an open index: dense (nl2code query prefix), BM25, their reciprocal-rank fusion,
code-aware ranking, file ranking, and the results.

Filters (language, path globs with ``!negation``, excluding tests) become one ``ChunkFilter``, which the store
applies BEFORE its top-k cut, never to a cut list. The searcher keeps no index state of its own beyond caches: it
reads the store, the model, the manifest and the search settings from the ``OpenIndex`` it serves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from codesift.data.files import is_test_path
from codesift.index.ranking import Candidate, fit_budget, fuse_windows, query_identifiers, query_windows, rank_files
from codesift.index.ranking import rerank as code_rerank
from codesift.index.request import SearchRequest, glob_spec, split_globs
from codesift.index.store import META_FIELDS, OUTPUT_FIELDS, ChunkFilter, Store
from codesift.model.norm import l2_normalize

if TYPE_CHECKING:
    from codesift.index.config import SearchConfig
    from codesift.index.manifest import Manifest
    from codesift.model.encoder import Encoder


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


class OpenIndex(Protocol):
    """What a searcher reads from the index it serves (``CodeIndex``; test stubs implement it too)."""

    root: Path
    manifest: Manifest
    search_config: SearchConfig

    @property
    def store(self) -> Store: ...

    @property
    def embedder(self) -> Encoder: ...


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


class Searcher:
    """Runs search requests against one open index (filters, fusion, query windows, ranking, results)."""

    def __init__(self, index: OpenIndex) -> None:
        self.index = index
        self._files_view: tuple | None = None       # (generation, paths with chunks, languages)
        self._glob_cache: dict[tuple, tuple | None] = {}

    @property
    def config(self) -> SearchConfig:
        """The index's search settings (read on every use: callers may change them)."""
        return self.index.search_config

    # ---- the one entry
    def run(self, request: SearchRequest) -> list[SearchResult] | list[FileResult]:
        """The answer to ``request``: chunks best first, or files with ``request.files``; cut to its budget."""
        cfg = dataclasses.replace(self.config, **request.fusion()) if request.fusion() else self.config
        text, exclude = request.query, ()
        if request.like_target is not None:
            src = self.chunk_at(*request.like_target)
            text, exclude = src["text"], (src["id"],)
        if request.files:
            depth = min(1000, max(request.limit * 4, 40))  # lists 5x deeper (20 x limit, >= 200): files need evidence
            return apply_budget(self._files(self._candidates(request, text, depth, cfg, exclude), request.limit, cfg),
                                request.budget)
        ranked = self._candidates(request, text, request.limit, cfg, exclude)
        return apply_budget(self.results([(c.score, c.row or {"id": c.id}) for c in ranked[:request.limit]], cfg),
                            request.budget)

    # ---- filters
    def forget_file_list(self) -> None:
        """Drop the cached file list and glob matches: the next filter reads the manifest again (a cold filter)."""
        self._files_view = None
        self._glob_cache.clear()

    def _indexed_files(self) -> tuple[list[str], set[str]]:
        """(sorted paths of indexed files with chunks, their languages), re-read only when the index changed."""
        meta = self.index.manifest.get_meta()
        generation = (meta.get("started_at"), meta.get("indexed_at"))
        if self._files_view is None or self._files_view[0] != generation:
            done = [r for r in self.index.manifest.files().values() if r.status == "done"]
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
            cached = self._path_choice(paths, inc, exc)
            if cached is None:
                return None
            if cached:
                flt = dataclasses.replace(flt, paths=cached[0], negate_paths=cached[1])
        return flt

    def _path_choice(self, paths: list[str], inc: list[str], exc: list[str]) -> tuple | None:
        """The paths the globs keep, as (paths, negate) (the shorter list), ``()`` for all, None for none."""
        key = (tuple(inc), tuple(exc))
        if key not in self._glob_cache:  # agents repeat the same globs: match the file list once
            if len(self._glob_cache) >= 64:
                self._glob_cache.clear()
            inc_spec, exc_spec = glob_spec(inc), glob_spec(exc)
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
        return self._glob_cache[key]

    def _root_relative_globs(self, globs: list[str]) -> list[str]:
        """Globs as the indexed paths are written: ``./src/**`` is ``src/**``, and an absolute glob inside the root
        is made relative to it (else it could never match)."""
        root = self.index.root
        out = []
        for g in globs:
            anchored = g.startswith("/")
            if anchored:
                for r in (str(root), str(root.resolve())):
                    if g == r or g.startswith(r.rstrip("/") + "/"):
                        g, anchored = "/" + g[len(r.rstrip("/")):].lstrip("/"), False
                        break
            while g.startswith("./"):
                g = "/" + g[2:].lstrip("/")  # gitignore's anchor: relative to the root, as ./ means
            out.append(g)
        return out

    # ---- candidates
    def _candidates(self, req: SearchRequest, text: str, limit: int, cfg: SearchConfig,
                    exclude_ids: tuple[str, ...] = ()) -> list[Candidate]:
        """Fused (and, with ``req.rerank``, code-aware re-ranked) candidates for ``text``, best first, at least
        ``limit`` deep."""
        flt = self.build_filter(req.language, req.path_globs, req.exclude_tests)
        if flt is None or not self.index.manifest.has_chunks():
            return []
        if exclude_ids:
            flt = dataclasses.replace(flt, exclude_ids=tuple(exclude_ids))
        depth = max(cfg.candidates, 5 * limit)
        lists, weights = [], []
        qvs = None
        if req.mode in ("hybrid", "dense"):
            qvs = self.query_vectors(text, req.task)
            lists.append(self._dense_windows(qvs, depth, flt, req.two_stage))
            weights.append(cfg.dense_weight)
        if req.mode in ("hybrid", "bm25"):
            lists.append(self.index.store.bm25(text, depth, flt))  # BM25 always reads the whole query
            weights.append(cfg.bm25_weight)
        if req.mode == "hybrid":
            fused = rrf_fuse(lists, weights, cfg.rrf_k)
        else:
            fused = [(row["distance"], row) for row in lists[0]]
        cands = self._to_candidates(fused)
        if not req.rerank:
            return cands
        idents = query_identifiers(text) if req.task == "nl2code" else (set(), False)
        if idents[0]:
            cands += self._definitions(idents[0], flt, cands)
        keep_docs_query = text if req.task == "nl2code" else text + " docs"  # code2nl and qa look for docs
        cands = code_rerank(cands, keep_docs_query, cfg.priors(), req.path_globs, identifiers=idents)
        if qvs is not None and req.task in ("qa", "code2nl"):
            cands = self._task_rescore(cands, qvs, req.task, cfg)
        return cands

    def query_vectors(self, text: str, task: str = "nl2code") -> np.ndarray:
        """The dense query vectors of ``text``: one row when it fits the model, else one per window.

        Over the model's limit, ``SearchConfig.long_query`` decides: ``max`` or ``rrf`` (windows searched apart and
        fused), ``mean`` (the windows' mean vector) or ``truncate`` (the head only). See docs/search.md.
        """
        emb = self.index.embedder
        cfg = self.config
        count, limit = emb.count_tokens, emb.max_length
        if count([text], task=task, role="query")[0] <= limit or cfg.long_query == "truncate":
            return emb.encode([text], task=task, role="query", normalize=True, truncate=True, show_progress=False)
        overhead = count([""], task=task, role="query")[0]  # prefix and special tokens, paid by every window
        budget = max(8, limit - overhead - 2)
        windows = query_windows(text, lambda xs: [max(0, n - overhead) for n in count(xs, task=task, role="query")],
                                budget, cfg.max_query_windows, cfg.window_min_tokens)
        vecs = emb.encode(windows, task=task, role="query", normalize=True, truncate=True, show_progress=False)
        if cfg.long_query == "mean":
            return l2_normalize(vecs.mean(axis=0))[None, :]
        return vecs

    def _dense_windows(self, qvs: np.ndarray, depth: int, flt: ChunkFilter, two_stage: bool) -> list[dict]:
        """The dense list of one query vector, or the fusion (``long_query``) of several windows' lists."""
        if len(qvs) == 1:
            return self.dense(qvs[0], depth, flt, two_stage)
        rows: dict[str, dict] = {}
        lists = []
        for qv in qvs:
            hits = self.dense(qv, depth, flt, two_stage)
            for r in hits:
                rows.setdefault(r["id"], r)
            lists.append([(r["id"], r["distance"]) for r in hits])
        how = self.config.long_query
        fused = fuse_windows(lists, "rrf" if how == "rrf" else "max", self.config.rrf_k)
        return [{**rows[i], "distance": s} for i, s in fused[:depth]]

    def dense(self, qv: np.ndarray, limit: int, flt: ChunkFilter, two_stage: bool) -> list[dict]:
        """Dense candidates, best first (two-stage: the small-dim scan ``rerank_factor`` x deeper, reranked)."""
        depth = max(self.config.rerank_factor * limit, 100)
        return self.index.store.dense(np.asarray(qv, dtype=np.float32), limit, flt, two_stage=two_stage, depth=depth)

    def _to_candidates(self, fused: list[tuple[float, dict]]) -> list[Candidate]:
        """Ranking candidates of (score, row) pairs; rows that carry only an id get their features in one lookup."""
        missing = [row["id"] for _, row in fused if "path" not in row]
        fetched = self.index.store.get(missing, META_FIELDS) if missing else {}
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
        found = self.index.store.defining(names, flt, limit=200)
        return self._to_candidates([(floor, r) for r in found if r["id"] not in seen])

    def _task_rescore(self, cands: list[Candidate], qvs: np.ndarray, task: str, cfg: SearchConfig) -> list[Candidate]:
        """qa and code2nl: re-embed the top candidates with the task's document prefix and rank them by it.

        The index embeds every chunk as an nl2code document; a model trained with task prefixes matches
        answers and comments best under their own. Plain encoders (no prefixes) skip this.
        """
        emb = self.index.embedder
        if emb.prefix(task, "document") == emb.prefix("nl2code", "document"):
            return cands
        top = cands[: cfg.task_rerank_depth]
        results = self.results([(c.score, c.row or {"id": c.id}) for c in top], cfg)
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

    # ---- chunks by place
    def chunk_at(self, path: str, line: int) -> dict:
        """The indexed chunk covering ``path:line`` (the smallest one): id, path, start_line, end_line, text."""
        rel = self.relative_path(path)
        if not isinstance(line, int) or isinstance(line, bool) or line < 1:
            raise ValueError(f"line must be a positive integer, got {line!r}")
        rows = [r for r in self.index.store.chunks_of(rel) if r["start_line"] <= line <= r["end_line"]]
        if not rows:
            raise ValueError(f"no indexed chunk covers {rel}:{line}; check the line number or re-index the file")
        return min(rows, key=lambda r: r["end_line"] - r["start_line"])

    def relative_path(self, path: str) -> str:
        """``path`` (absolute, or relative to the root) as a root-relative posix path; refuses paths outside the root."""
        if not isinstance(path, str) or not path.strip():
            raise ValueError("path is empty; pass a file path inside the indexed root")
        root = self.index.root
        p = Path(path)
        full = (p if p.is_absolute() else root / p).resolve()
        try:
            return full.relative_to(root.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"{path} is outside the indexed root {root}") from None

    # ---- results
    def _files(self, ranked: list[Candidate], limit: int, cfg: SearchConfig) -> list[FileResult]:
        """The top ``limit`` files by the evidence of their chunks (``ranking.rank_files``)."""
        files = rank_files(ranked, cfg.file_chunk_weights)[:limit]
        fetched = self.results([(c.score, c.row or {"id": c.id}) for f in files for c in f.chunks], cfg)
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
        return out

    def results(self, ranked: list[tuple[float, dict]], cfg: SearchConfig | None = None) -> list[SearchResult]:
        """Results for (score, row) pairs, fetching the text (and fields) of rows that lack it."""
        missing = [row["id"] for _, row in ranked if "text" not in row]
        fetched = self.index.store.get(missing, OUTPUT_FIELDS) if missing else {}
        lines = (cfg or self.config).snippet_lines
        out = []
        for score, row in ranked:
            if "text" not in row:
                if row["id"] not in fetched:  # gone from the store since it was found
                    continue
                row = {**fetched[row["id"]], **row}
            out.append(result_of(row, score, lines))
        return out


def result_of(row: dict, score: float, snippet_lines: int) -> SearchResult:
    """The result of one store row: its first ``snippet_lines`` lines as the snippet."""
    snippet = "\n".join(row.get("text", "").split("\n")[:snippet_lines])
    return SearchResult(path=row["path"], start_line=int(row["start_line"]), end_line=int(row["end_line"]),
                        symbol=row.get("symbol") or None, language=row.get("language") or None,
                        score=round(float(score), 6), snippet=snippet, kind=row.get("kind") or None, id=row["id"])
