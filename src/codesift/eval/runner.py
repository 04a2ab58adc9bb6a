"""Run retrieval benchmarks: embed (or BM25-index) the corpus, search exactly, score with trec_eval metrics."""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codesift.eval.cache import EmbeddingCache
from codesift.eval.data import RetrievalTask, load_beir_task
from codesift.eval.metrics import evaluate_run
from codesift.eval.search import exact_top_k, to_run
from codesift.model.norm import truncate_normalize

if TYPE_CHECKING:
    from codesift.model.encoder import Encoder

logger = logging.getLogger(__name__)

BM25 = "bm25"


@dataclass
class EvalConfig:
    """What `codesift eval` runs; defaults follow the paper (nDCG@10 over exact top-100 search)."""

    model: str
    data: list[Path]
    out: Path | None = None
    name: str | None = None  # label of this run in tables and plots
    dims: list[int] | None = None  # Matryoshka dimensions; None: the model's full dimension only
    batch_tokens: int | None = None
    task: str | None = None  # override the instruction task of every dataset
    top_k: int = 100
    device: str = "auto"
    dtype: str = "auto"
    max_length: int | None = None  # None: the Embedder's default
    cache_dir: Path | None = None  # None: ~/.cache/codesift/embeddings ($CODESIFT_CACHE)
    use_cache: bool = True
    show_progress: bool = True

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("no dataset given; pass --data DIR (a BEIR folder) one or more times")
        if self.dims is not None and any(d <= 0 for d in self.dims):
            raise ValueError(f"--dims must be positive integers, got {self.dims}")
        if self.top_k < 100:
            raise ValueError(f"--top-k must be at least 100 (Recall@100 and MAP@100 need 100 results), got {self.top_k}")
        self.data = [Path(p) for p in self.data]


def default_label(model: str) -> str:
    """A short name for a model path or hub id (the folder name, or its parent for generic names)."""
    if model.lower() == BM25:
        return BM25
    p = Path(model)
    name = p.stem if p.suffix == ".gguf" else p.name
    if name in {"model", "final", "checkpoint", "snapshot"} and p.parent.name:
        name = p.parent.name
    return name or model


class Progress:
    """Status lines on a rich console (quiet when ``enabled`` is False)."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, quiet=not enabled, log_path=False)

    def __call__(self, msg: str) -> None:
        self.console.log(msg)


def _embed(
    embedder: Encoder, texts: list[str], task: str, role: str, config: EvalConfig, cache: EmbeddingCache | None
) -> tuple[np.ndarray, bool]:
    """Full-dimension normalised embeddings of ``texts``; from the cache when present."""
    key = None
    if cache is not None:
        fp = f"{embedder.fingerprint}|max_length={embedder.max_length}"
        key = cache.key(fp, task, role, None, texts)
        hit = cache.get(key)
        if hit is not None and hit.shape[0] == len(texts):
            return hit, True
    vecs = embedder.encode(
        texts, task=task, role=role, dim=None, normalize=True, truncate=True,
        batch_tokens=config.batch_tokens, show_progress=None if config.show_progress else False,
    )
    vecs = np.asarray(vecs, dtype=np.float32)
    if cache is not None and key is not None:
        cache.put(key, vecs, {"fingerprint": embedder.fingerprint, "task": task, "role": role, "n": len(texts)})
    return vecs, False


def evaluate_dense(
    task: RetrievalTask, embedder: Encoder, config: EvalConfig, label: str, log: Callable[[str], None] = logger.info
) -> list[dict]:
    """Rows of metrics for one dataset and each requested Matryoshka dimension."""
    cache = EmbeddingCache(config.cache_dir) if config.use_cache else None
    t0 = time.perf_counter()
    log(f"{task.name}: embedding {len(task.corpus)} documents ({task.task}.document)")
    docs, cached = _embed(embedder, list(task.corpus.values()), task.task, "document", config, cache)
    if cached:
        log(f"{task.name}: document embeddings from cache")
    t_docs = time.perf_counter() - t0
    log(f"{task.name}: embedding {len(task.queries)} queries ({task.task}.query)")
    t1 = time.perf_counter()
    queries = np.asarray(
        embedder.encode(
            list(task.queries.values()), task=task.task, role="query", dim=None, normalize=True, truncate=True,
            batch_tokens=config.batch_tokens, show_progress=None if config.show_progress else False,
        ),
        dtype=np.float32,
    )
    t_queries = time.perf_counter() - t1
    full = docs.shape[1]
    dims = sorted({full if d is None else d for d in (config.dims or [None])})
    too_big = [d for d in dims if d > full]
    if too_big:
        raise ValueError(f"--dims {too_big} exceed the model's dimension {full}")
    rows = []
    for dim in dims:
        t2 = time.perf_counter()
        scores, idx = exact_top_k(truncate_normalize(queries, dim), truncate_normalize(docs, dim), config.top_k)
        metrics = evaluate_run(task.qrels, to_run(task.query_ids, task.doc_ids, scores, idx))
        t_search = time.perf_counter() - t2
        rows.append(_row(task, label, dim, metrics, t_docs + t_queries + t_search,
                         corpus_cached=cached, embed_docs_seconds=t_docs, embed_queries_seconds=t_queries,
                         search_seconds=t_search))
    return rows


def evaluate_bm25(task: RetrievalTask, config: EvalConfig, label: str = BM25) -> list[dict]:
    """One row of metrics for the BM25 baseline on one dataset."""
    from codesift.eval.bm25 import BM25Index

    t0 = time.perf_counter()
    index = BM25Index(list(task.corpus.values()))
    scores, idx = index.search(list(task.queries.values()), config.top_k)
    metrics = evaluate_run(task.qrels, to_run(task.query_ids, task.doc_ids, scores, idx))
    return [_row(task, label, None, metrics, time.perf_counter() - t0)]


def _row(task: RetrievalTask, label: str, dim: int | None, metrics: dict, seconds: float, **extra: Any) -> dict:
    return {
        "dataset": task.name, "task": task.task, "model": label, "dim": dim, **metrics,
        "n_queries": len(task.queries), "n_docs": len(task.corpus), "seconds": round(seconds, 3),
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in extra.items()},
    }


def load_embedder(config: EvalConfig) -> Encoder:
    """Load the model named in ``config`` as a codesift ``Embedder``."""
    from codesift import Embedder

    kwargs: dict[str, Any] = {"device": config.device, "dtype": config.dtype}
    if config.max_length is not None:
        kwargs["max_length"] = config.max_length
    return Embedder(model=config.model, **kwargs)


def run_eval(config: EvalConfig, embedder: Encoder | None = None) -> dict:
    """Evaluate one model on every dataset of ``config``; return (and, with ``config.out``, write) the results."""
    log = Progress(config.show_progress)
    tasks = [load_beir_task(p, task=config.task) for p in config.data]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"two datasets share a name: {names}; pass each folder once")
    label = config.name or default_label(config.model)
    is_bm25 = config.model.lower() == BM25 and embedder is None
    if is_bm25 and config.dims:
        raise ValueError("--dims applies to embedding models, not to bm25")
    if not is_bm25 and embedder is None:
        log(f"loading {config.model}")
        embedder = load_embedder(config)
    full = embedder.dimension if embedder is not None else None
    if full and config.dims and max(config.dims) > full:
        raise ValueError(f"--dims {config.dims} exceed the model's dimension {full}; use values up to {full}")
    rows: list[dict] = []
    t0 = time.perf_counter()
    for i, task in enumerate(tasks, 1):
        log(f"[{i}/{len(tasks)}] {task.name}: {len(task.queries)} queries, {len(task.corpus)} documents, task {task.task}")
        new = evaluate_bm25(task, config, label) if is_bm25 else evaluate_dense(task, embedder, config, label, log)
        for r in new:
            log(f"{task.name} dim={r['dim']}: nDCG@10 {100 * r['ndcg_at_10']:.2f} ({r['seconds']:.1f} s)")
        rows.extend(new)
        if config.out is not None and i < len(tasks):  # partial results survive an interrupted run
            from codesift.eval.report import write_outputs

            write_outputs(_results_doc(config, label, embedder, rows, tasks[:i], t0, complete=False),
                          Path(config.out))
    doc = _results_doc(config, label, embedder, rows, tasks, t0, complete=True)
    if config.out is not None:
        from codesift.eval.report import write_outputs

        write_outputs(doc, Path(config.out))
    return doc


def _results_doc(
    config: EvalConfig, label: str, embedder: Encoder | None, rows: list[dict], tasks: list[RetrievalTask],
    t0: float, complete: bool,
) -> dict:
    """The results document; ``embedder`` None: a BM25 run."""
    return {
        "model": label,
        "model_path": config.model,
        "fingerprint": None if embedder is None else embedder.fingerprint,
        "pooling": None if embedder is None else embedder.pooling,
        "dimension": None if embedder is None else embedder.dimension,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "codesift_version": _version(),
        "seconds": round(time.perf_counter() - t0, 3),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()
                   if k not in ("show_progress",)} | {"data": [str(p) for p in config.data]},
        "results": rows,
        "paper_ndcg_at_10": {t.name: {m: v / 100 for m, v in t.paper_ndcg_at_10.items()} for t in tasks},
        "complete": complete,
    }


def _version() -> str:
    from codesift import __version__

    return __version__


__all__ = ["BM25", "EvalConfig", "default_label", "evaluate_bm25", "evaluate_dense", "load_embedder", "run_eval"]
