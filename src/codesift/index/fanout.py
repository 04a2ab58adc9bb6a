"""Indexing many repositories in one run: one after another in this process, or with the embedding fanned out
over Ray workers (``codesift index REPO1 REPO2 ... --ray local|HOST:PORT``).

Each repository is indexed exactly as ``codesift index REPO`` alone indexes it: its own index folder
(``REPO/.codesift``: manifest, embedding cache and, by default, the SQLite store), and with a Milvus URI its own
collection there (``config.collection_name``), so that many indexes share one server and never touch each other's
chunks.

With Ray, this process (the driver) does all of it but the embedding. For each repository in turn it walks and
chunks the changed files (``Indexer.chunks_to_embed``) and hands the chunks that have no cached vector to the
workers of ``model/distributed.py`` in shards (``run_shards`` draws them as the workers have room, so the next
repository is chunked while the workers embed this one's). Each shard's vectors go into that repository's
embedding cache as they come back; when its last shard is in, the ordinary ``Indexer.update`` writes the
repository (manifest, store) with every vector from the cache. Resume is the indexer's own: a rerun finds the
vectors already cached and embeds only the rest, and repositories written before the interruption are unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codesift.index.config import DB_NAME, IndexConfig
from codesift.index.indexer import Indexer, IndexReport, Progress, default_index_dir, load_index_encoder
from codesift.index.manifest import sqlite_errors
from codesift.model.distributed import (
    DEFAULT_RETRIES,
    DEFAULT_SHARD_SIZE,
    EmbedSpec,
    RayEmbedError,
    Shard,
    WorkerPool,
    check_ray,
    ray_session,
    run_shards,
    shard_ranges,
    start_workers,
)

if TYPE_CHECKING:
    from codesift.model.encoder import Encoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexJob:
    """One repository to index: its root, its index folder (None: ROOT/.codesift) and its settings (None: the
    index's own, else the defaults)."""

    root: Path
    index_dir: Path | None = None
    config: IndexConfig | None = None

    @property
    def where(self) -> Path:
        """The index folder."""
        return Path(self.index_dir) if self.index_dir else default_index_dir(self.root)


@dataclass
class ManyIndexResult:
    """The report of each repository (in the jobs' order), and what the Ray workers did."""

    reports: list[IndexReport]
    workers: int = 0                 # 0: no Ray worker was needed (or no --ray)
    threads: int = 0
    shards: int = 0                  # shards embedded on the workers
    chunks_embedded: int = 0         # chunks embedded on the workers
    retried: dict = field(default_factory=dict)   # (repository number, shard number) -> failed attempts
    seconds: float = 0.0
    startup_seconds: float = 0.0     # connecting to Ray and loading the model in every worker


def index_repositories(jobs: Sequence[IndexJob], *, ray: str | None = None, workers: int | None = None,
                       shard_size: int = DEFAULT_SHARD_SIZE, retries: int = DEFAULT_RETRIES,
                       progress: Progress | None = None,
                       make_encoder: Callable[[EmbedSpec], Encoder] | None = None) -> ManyIndexResult:
    """Index every repository of ``jobs``: in this process, or with ``ray`` (``local`` or a cluster's address)
    the embedding on Ray workers (``workers``, ``shard_size`` chunks a shard, each retried ``retries`` times).

    ``progress`` gets ("repositories", done, total), and the indexer's ("files", ...) without Ray or
    ("chunks", embedded, found so far) with it. ``make_encoder``: the workers' model (see ``embed_on_ray``).
    """
    started = time.perf_counter()
    if ray is not None:
        check_ray(ray)  # a missing extra or a wrong address: said before any work
        shard_ranges(1, shard_size)  # and a bad shard size
    for job in jobs:  # every repository's mistakes (not a tree, another model, ...) before the first is indexed
        with _errors_of(job):
            Indexer(job.root, job.index_dir, job.config).close()
    load = OneModel() if ray is not None else functools.cache(load_index_encoder)  # one model for all
    if ray is None:
        result = ManyIndexResult([_index_here(job, load, progress) for job in _counted(jobs, progress)])
    else:
        result = RayFanout(jobs, load, shard_size, progress).run(ray, workers, retries, make_encoder)
    result.seconds = time.perf_counter() - started
    return result


def _counted(jobs: Sequence[IndexJob], progress: Progress | None) -> Iterator[IndexJob]:
    for i, job in enumerate(jobs):
        _repositories_done(progress, i, len(jobs))
        yield job
    _repositories_done(progress, len(jobs), len(jobs))


def _repositories_done(progress: Progress | None, done: int, total: int) -> None:
    if progress and total > 1:  # one repository: its files are the progress
        progress("repositories", done, total)


def _index_here(job: IndexJob, load, progress: Progress | None) -> IndexReport:
    with _errors_of(job):
        ix = Indexer(job.root, job.index_dir, job.config, load_encoder=load)
        try:
            return ix.update(progress)
        finally:
            ix.close()


def _errors_of(job: IndexJob):
    """SQLite failures on one repository's index as named errors (see ``manifest.sqlite_errors``)."""
    return sqlite_errors(job.where / DB_NAME)


class OneModel:
    """The driver's model for every repository of a Ray run (a ``LoadEncoder``): loaded once, and the only one,
    since the workers embed with a single model."""

    def __init__(self) -> None:
        self.loaded: dict[tuple[str, str], Encoder] = {}

    def __call__(self, model: str, dtype: str) -> Encoder:
        if (model, dtype) not in self.loaded:
            self.loaded[(model, dtype)] = load_index_encoder(model, dtype)
        encoder = self.loaded[(model, dtype)]
        first = next(iter(self.loaded.values()))
        if encoder.fingerprint != first.fingerprint:
            raise RayEmbedError(f"its index uses the model {model} ({encoder.precision}), the repositories before it "
                                f"{first.name} ({first.precision}), and one --ray run embeds with one model: index it "
                                "in another run, or re-embed it with --rebuild --model")
        return encoder


@dataclass
class _Planned:
    """A repository whose chunks are out on the workers."""

    ix: Indexer
    parts: list[list[str]]      # the chunk hashes of each of its shards
    left: int                   # shards not back yet


class RayFanout:
    """The driver of a Ray run: plans each repository, hands its chunks out as shards, caches the vectors that come
    back, and writes a repository once all of its vectors are in."""

    def __init__(self, jobs: Sequence[IndexJob], load: OneModel, shard_size: int, progress: Progress | None) -> None:
        self.jobs, self.load, self.shard_size, self.progress = list(jobs), load, shard_size, progress
        self.reports: list[IndexReport | None] = [None] * len(self.jobs)
        self.out: dict[int, _Planned] = {}
        self.spec: EmbedSpec | None = None
        self.found = self.embedded = self.written = 0

    def run(self, address: str, workers: int | None, retries: int, make_encoder) -> ManyIndexResult:
        """Index every repository; Ray is started only when some chunk needs embedding."""
        result = ManyIndexResult([])
        _repositories_done(self.progress, 0, len(self.jobs))
        try:
            shards = self.shards()
            first = next(shards, None)  # repositories with nothing to embed are written on the way
            if first is not None:
                t0 = time.perf_counter()
                with ray_session(address) as ray:
                    pool = start_workers(ray, self.spec, workers, make_encoder)
                    self._check_workers(pool)
                    result.workers, result.threads = len(pool.actors), pool.threads
                    result.startup_seconds = time.perf_counter() - t0
                    done, result.retried = run_shards(
                        ray, pool, itertools.chain([first], shards), self.save, retries,
                        resume_hint="The vectors of finished shards are cached in each repository's index: run the "
                                    "same command again to resume")
                result.shards, result.chunks_embedded = len(done), self.embedded
        finally:
            for planned in self.out.values():
                planned.ix.close()
        result.reports = [r for r in self.reports if r is not None]
        return result

    def shards(self) -> Iterator[Shard]:
        """Each repository's chunks without a cached vector, in shards; a repository with none is written at once."""
        for i, job in enumerate(self.jobs):
            with _errors_of(job), _named(job):
                ix = Indexer(job.root, job.index_dir, job.config, load_encoder=self.load)
                try:
                    todo = ix.chunks_to_embed()
                    if todo and self.spec is None:
                        self.spec = self._spec(ix)
                except BaseException:
                    ix.close()
                    raise
            if not todo:
                self._write(i, ix, ())
                continue
            hashes = list(todo)
            ranges = shard_ranges(len(hashes), self.shard_size)
            self.out[i] = _Planned(ix, [hashes[s:e] for s, e in ranges], len(ranges))
            self.found += len(hashes)
            for part, (s, e) in enumerate(ranges):
                yield Shard((i, part), [todo[h] for h in hashes[s:e]],
                            f"shard {part + 1} of {len(ranges)} of {job.root} (chunks {s}..{e - 1})")

    def save(self, shard: Shard, vectors: np.ndarray) -> None:
        """Cache one shard's vectors in its repository's index; write the repository when it was the last."""
        i, part = shard.key
        planned = self.out[i]
        hashes = planned.parts[part]
        with _errors_of(self.jobs[i]):
            planned.ix.manifest.cache_vectors(dict(zip(hashes, vectors)), planned.ix.embedder.fingerprint)
        planned.left -= 1
        self.embedded += len(hashes)
        if self.progress:
            self.progress("chunks", self.embedded, self.found)
        if planned.left == 0:
            del self.out[i]
            self._write(i, planned.ix, [h for part in planned.parts for h in part])

    def _write(self, i: int, ix: Indexer, embedded: Sequence[str]) -> None:
        """The ordinary update of one repository, its vectors all cached by now."""
        job = self.jobs[i]
        try:
            with _errors_of(job), _named(job):
                self.reports[i] = ix.update(embedded_elsewhere=embedded)
        finally:
            ix.close()
        self.written += 1
        _repositories_done(self.progress, self.written, len(self.jobs))

    def _spec(self, ix: Indexer) -> EmbedSpec:
        """What the workers load: the index's model at the precision this machine loaded it (nl2code documents)."""
        encoder = ix.embedder
        return EmbedSpec(model=ix.config.model, task="nl2code", role="document", truncate=True,
                         dtype=encoder.precision)

    def _check_workers(self, pool: WorkerPool) -> None:
        driver = next(iter(self.load.loaded.values()))
        if pool.fingerprint != driver.fingerprint:
            raise RayEmbedError(f"the Ray workers loaded {self.spec.model} as {pool.fingerprint}, this machine as "
                                f"{driver.fingerprint}; give every node the same model files")


@contextlib.contextmanager
def _named(job: IndexJob) -> Iterator[None]:
    """A Ray error of one repository, with the repository named (the others went fine)."""
    try:
        yield
    except RayEmbedError as exc:
        raise RayEmbedError(f"{job.root}: {exc}") from None


__all__ = ["IndexJob", "ManyIndexResult", "OneModel", "RayFanout", "index_repositories"]
