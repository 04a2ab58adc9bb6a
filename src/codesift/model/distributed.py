"""Embedding a corpus over a Ray cluster: one model per worker, shards saved as they finish, resumable.

The input is cut into shards (contiguous slices, ``shard_size`` texts each). Workers are Ray actors
that load the encoder once and then embed shard after shard; the driver keeps two shards queued on
each worker. The driver, not the workers, writes each finished shard into the side folder (a worker
on another machine cannot see the driver's disk), atomically, so a killed job leaves only whole
shards. A rerun with the same inputs and options finds the folder's manifest and computes only the
missing shards; the vectors are assembled in input order at the end. A shard that fails (an
exception, or a worker process that died; Ray restarts the worker) is retried ``retries`` times on
whichever worker is free.

The pieces are reusable: ``start_workers`` gives a ``WorkerPool``, and ``run_shards`` feeds it any stream of
``Shard``s and hands each result to a ``save`` callback (``codesift index --ray`` caches them in the
repositories' indexes instead of a shard folder).

Ray is optional (``pip install 'codesift[ray]'``): it is imported inside the functions here only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from codesift.model.encoder import Encoder
from codesift.model.inputs import texts_digest

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 512        # texts per shard: a few seconds of work for a small model on a few cores
THREADS_PER_WORKER = 4          # default worker size: torch's CPU matmuls scale well up to about 4 threads
QUEUED_PER_WORKER = 2           # shards sent ahead to each worker, so it never waits for the driver
DEFAULT_RETRIES = 2
DEFAULT_RAY_PORT = 6379
CONNECT_TIMEOUT_S = 5.0
WORKER_START_TIMEOUT_S = 900.0  # loading a large model on a slow node can take minutes
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
INSTALL_HINT = "pip install 'codesift[ray]'"


class RayEmbedError(RuntimeError):
    """A distributed embedding job cannot run or finish (no Ray, no cluster, a shard that keeps failing, ...)."""


@dataclass(frozen=True)
class EmbedSpec:
    """What decides the vectors: the model and the options of ``Embedder.encode``."""

    model: str
    task: str = "nl2code"
    role: str = "query"
    dim: int | None = None
    truncate: bool = False
    batch_tokens: int | None = None
    device: str = "auto"
    dtype: str = "auto"


@dataclass
class RayEmbedResult:
    """The vectors in input order, and what the run did."""

    vectors: np.ndarray
    computed: list[int] = field(default_factory=list)   # shards embedded by this run
    skipped: list[int] = field(default_factory=list)    # shards found finished in the folder
    retried: dict[int, int] = field(default_factory=dict)  # shard -> failed attempts before it succeeded
    workers: int = 0
    threads: int = 0
    seconds: float = 0.0           # the whole call
    startup_seconds: float = 0.0   # connecting to Ray and loading the model in every worker (0 when nothing ran)


def load_encoder(spec: EmbedSpec) -> Encoder:
    """The default worker model: an Embedder built from ``spec``."""
    from codesift.model.embedder import Embedder

    return Embedder(spec.model, device=spec.device, dtype=spec.dtype)


# ---------------------------------------------------------------- the worker (a Ray actor)
class ShardWorker:
    """Loads the encoder once, then embeds one shard per call (wrapped by ``ray.remote`` at run time)."""

    def __init__(self, spec: EmbedSpec, threads: int, make_encoder: Callable[[EmbedSpec], Encoder] | None) -> None:
        import torch

        torch.set_num_threads(threads)
        self.spec = spec
        self.encoder = (make_encoder or load_encoder)(spec)

    def describe(self) -> dict:
        """The model's fingerprint and dimension (all workers must agree) and where this worker runs.

        Embedding no texts first checks the task, role and dim against the model, so a bad option fails
        once here instead of on every shard.
        """
        self.embed([])
        return {"fingerprint": self.encoder.fingerprint, "dimension": int(self.encoder.dimension),
                "host": socket.gethostname(), "pid": os.getpid()}

    def embed(self, texts: list[str]) -> np.ndarray:
        """One shard's vectors, in the shard's order."""
        s = self.spec
        return self.encoder.encode(texts, task=s.task, role=s.role, dim=s.dim, truncate=s.truncate,
                                   batch_tokens=s.batch_tokens, show_progress=False)


# ---------------------------------------------------------------- connecting
def import_ray():
    """The ray module, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise RayEmbedError(f"--ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast with a clear message when nothing listens at ``address`` (ray.init would retry for minutes)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, str(DEFAULT_RAY_PORT)
    if not host or not port.isdigit():
        raise RayEmbedError(f"--ray {address!r} is not an address; use local, HOST:PORT (e.g. head-node:6379) "
                            "or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise RayEmbedError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
                            "`ray start --head` on the head node, check the address and the firewall, "
                            "or use --ray local") from None


def check_ray(address: str):
    """The ray module, once ``address`` answers (``local`` and ``auto`` are not checked) and Ray is installed: a
    job calls this before its own work, so that a wrong address or a missing extra stops it at once."""
    if address not in ("local", "auto"):
        check_reachable(address)
    return import_ray()


@contextlib.contextmanager
def ray_session(address: str) -> Iterator[object]:
    """Connect to ``address`` (``local`` starts a one-machine cluster) for the block; reuse a running session.

    A session that this block started is shut down at its end; one the caller started is left alone.
    """
    ray = check_ray(address)
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "local":
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)  # a new instance, never a `ray start` one
        else:
            ray.init(address=address, **kwargs)
    except Exception as exc:  # noqa: BLE001 (ray raises ConnectionError, RuntimeError or a bare Exception here)
        where = "start a local Ray cluster" if address == "local" else f"connect to the Ray cluster at {address}"
        raise RayEmbedError(f"could not {where}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def plan_workers(cluster_cpus: int, largest_node_cpus: int, workers: int | None = None) -> tuple[int, int]:
    """(workers, torch threads per worker): ``THREADS_PER_WORKER``-thread workers by default, else the CPUs split."""
    if workers is not None and workers < 1:
        raise RayEmbedError(f"--workers must be at least 1, got {workers}")
    if cluster_cpus < 1:
        raise RayEmbedError("the Ray cluster has no CPUs")
    if workers is None:
        workers = max(1, cluster_cpus // THREADS_PER_WORKER)
    if workers > cluster_cpus:
        raise RayEmbedError(f"--workers {workers} is more than the cluster's {cluster_cpus} CPUs; "
                            f"use at most {cluster_cpus}")
    threads = max(1, min(largest_node_cpus, cluster_cpus // workers))
    return workers, threads


# ---------------------------------------------------------------- the shard folder
def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) of each shard of ``n`` texts."""
    if shard_size < 1:
        raise RayEmbedError(f"--shard-size must be at least 1, got {shard_size}")
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]



def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:06d}.npy"


def _job_key(texts: Sequence[str], spec: EmbedSpec, shard_size: int) -> dict:
    """What the manifest pins: a rerun may reuse shards only when all of it matches."""
    key = asdict(spec)
    del key["batch_tokens"], key["device"]  # they change speed, not the vectors (beyond float noise)
    return {"format": MANIFEST_FORMAT, "texts": len(texts), "texts_sha256": texts_digest(texts),
            "shard_size": shard_size, **key}


def open_shard_folder(folder: Path, key: dict) -> dict:
    """Create the folder with ``key`` as its manifest, or check that an existing one belongs to the same job."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    if not path.exists():
        _write_json_atomic(path, key)
        return dict(key)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RayEmbedError(f"{path} is unreadable ({exc}); delete {folder} to start over") from None
    differ = sorted(k for k in key if manifest.get(k) != key[k])
    if differ:
        raise RayEmbedError(f"{folder} holds shards of another job (different {', '.join(differ)}); "
                            f"delete it to start over, or use another --output")
    return manifest


def check_fingerprint(folder: Path, manifest: dict, fingerprint: str, dimension: int) -> None:
    """Pin the model's fingerprint in the manifest on the first run; refuse shards of another model after."""
    old = manifest.get("fingerprint")
    if old is not None and old != fingerprint:
        raise RayEmbedError(f"{folder} holds shards made with another model or precision ({old}, now "
                            f"{fingerprint}); delete it to start over")
    if old is None:
        manifest.update(fingerprint=fingerprint, dimension=dimension)
        _write_json_atomic(folder / MANIFEST, manifest)


def finished_shards(folder: Path, count: int) -> set[int]:
    """Shards whose file is in the folder (files are written atomically, so a file is a whole shard)."""
    return {i for i in range(count) if shard_path(folder, i).exists()}


def save_shard(folder: Path, shard: int, vectors: np.ndarray) -> None:
    """Write one shard's vectors atomically (a temporary file, then a rename)."""
    final = shard_path(folder, shard)
    tmp = final.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
    os.replace(tmp, final)


def assemble(folder: Path, ranges: list[tuple[int, int]], dimension: int) -> np.ndarray:
    """All shards, concatenated in input order; a shard of the wrong shape is named."""
    out = np.empty((ranges[-1][1] if ranges else 0, dimension), dtype=np.float32)
    for i, (start, end) in enumerate(ranges):
        path = shard_path(folder, i)
        try:
            part = np.load(path)
        except (OSError, ValueError) as exc:
            raise RayEmbedError(f"shard {path} is unreadable ({exc}); delete it and run again") from None
        if part.shape != (end - start, dimension):
            raise RayEmbedError(f"shard {path} has shape {part.shape}, expected {(end - start, dimension)}; "
                                "delete it and run again")
        out[start:end] = part
    return out


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- the job
def embed_on_ray(
    texts: Sequence[str],
    spec: EmbedSpec,
    shard_dir: str | os.PathLike,
    *,
    address: str = "local",
    workers: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    retries: int = DEFAULT_RETRIES,
    show_progress: bool | None = None,
    make_encoder: Callable[[EmbedSpec], Encoder] | None = None,
) -> RayEmbedResult:
    """Embed ``texts`` on Ray workers, saving shards in ``shard_dir`` and skipping those already there.

    ``make_encoder`` builds each worker's model from ``spec`` (default: an Embedder); it must be
    importable on the workers. Returns the vectors in input order.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    folder = Path(shard_dir)
    texts = list(texts)
    if not texts:
        raise RayEmbedError("no texts to embed")
    ranges = shard_ranges(len(texts), shard_size)
    manifest = open_shard_folder(folder, _job_key(texts, spec, shard_size))
    done = finished_shards(folder, len(ranges))
    todo = [i for i in range(len(ranges)) if i not in done]
    result = RayEmbedResult(np.zeros((0, 0), np.float32), skipped=sorted(done))
    if todo:
        with ray_session(address) as ray:
            pool = start_workers(ray, spec, workers, make_encoder)
            check_fingerprint(folder, manifest, pool.fingerprint, spec.dim or pool.dimension)
            result.workers, result.threads = len(pool.actors), pool.threads
            result.startup_seconds = time.perf_counter() - started
            already = sum(end - start for i, (start, end) in enumerate(ranges) if i in done)
            bar = tqdm(total=len(texts), initial=already, unit="text", desc=f"embedding on {len(pool.actors)} Ray "
                       "workers", disable=not (sys.stderr.isatty() if show_progress is None else show_progress))

            def save(shard: Shard, vectors: np.ndarray) -> None:
                save_shard(folder, shard.key, vectors)
                bar.update(len(shard.texts))

            shards = (Shard(i, texts[s:e], f"shard {i} (texts {s}..{e - 1})") for i, (s, e) in enumerate(ranges)
                      if i not in done)
            with contextlib.closing(bar):
                result.computed, result.retried = run_shards(
                    ray, pool, shards, save, retries,
                    resume_hint=f"The finished shards are kept in {folder}: run the same command again to resume")
            result.computed.sort()
    elif "dimension" not in manifest:
        raise RayEmbedError(f"{folder}: shard files without a finished manifest; delete it to start over")
    result.vectors = assemble(folder, ranges, int(manifest["dimension"]))
    result.seconds = time.perf_counter() - started
    return result


# ---------------------------------------------------------------- the pool of workers and the shard loop
@dataclass
class WorkerPool:
    """Started workers that all loaded the same model."""

    actors: list
    threads: int          # torch threads (and Ray CPUs) per worker
    fingerprint: str      # the model's, as every worker reported it
    dimension: int


@dataclass(frozen=True)
class Shard:
    """One unit of work, of retry and of resume: texts to embed, and the caller's name for where they go."""

    key: Hashable      # what ``save`` and the result name the shard by (its number, a repository and a part, ...)
    texts: list[str]
    label: str         # how an error names it: "shard 3 (texts 15..19)"


def start_workers(ray, spec: EmbedSpec, workers: int | None = None,
                  make_encoder: Callable[[EmbedSpec], Encoder] | None = None) -> WorkerPool:
    """Start the actors, wait until each has loaded the model, and check they all load the same one."""
    cpus = int(ray.cluster_resources().get("CPU", 0))
    largest = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=cpus)
    gpus = 1 if spec.device.startswith("cuda") else 0
    if gpus:  # one GPU per worker
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        if cluster_gpus == 0:
            raise RayEmbedError(f"--device {spec.device}, but the Ray cluster has no GPUs; use --device cpu or auto")
        workers = workers or cluster_gpus
    n, threads = plan_workers(cpus, largest, workers)
    log.info("starting %d Ray workers with %d threads each (cluster: %d CPUs)", n, threads, cpus)
    actor_cls = ray.remote(num_cpus=threads, num_gpus=gpus, max_restarts=2, max_task_retries=0)(ShardWorker)
    actors = [actor_cls.remote(spec, threads, make_encoder) for _ in range(n)]
    try:
        facts = ray.get([a.describe.remote() for a in actors], timeout=WORKER_START_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise RayEmbedError(f"the Ray workers did not start within {WORKER_START_TIMEOUT_S:.0f} s: the cluster "
                            f"may not have {n} free slots of {threads} CPUs{' and a GPU' if gpus else ''}; "
                            "pass a smaller --workers") from None
    except ray.exceptions.RayError as exc:
        raise RayEmbedError(f"the Ray workers could not start (model {spec.model!r}): {_cause(exc)}") from None
    prints = {f["fingerprint"] for f in facts}
    if len(prints) > 1:
        hosts = sorted({f["host"] for f in facts})
        raise RayEmbedError(f"the workers on {', '.join(hosts)} loaded different models ({', '.join(sorted(prints))}); "
                            "give every node the same model files")
    return WorkerPool(actors, threads, facts[0]["fingerprint"], int(facts[0]["dimension"]))


def run_shards(ray, pool: WorkerPool, shards: Iterable[Shard], save: Callable[[Shard, np.ndarray], None],
               retries: int = DEFAULT_RETRIES, resume_hint: str = "") -> tuple[list, dict]:
    """Keep every worker fed, ``save`` each finished shard, retry failed ones; (keys computed, failures per key).

    ``shards`` is drawn lazily, as workers have room, so the caller may still be preparing later ones; ``save``
    runs in this thread as each shard comes back. When a shard fails more than ``retries`` times no new shard
    is started, the shards in flight are still saved as they finish (less to redo on the rerun), and then the
    job stops with an error that ends with ``resume_hint``.
    """
    source = iter(shards)
    pending: deque[Shard] = deque()
    failures: dict = {}
    computed: list = []
    fatal: str | None = None
    inflight: dict = {}  # object ref -> (shard, actor index)
    load = [0] * len(pool.actors)
    while True:
        for w in sorted(range(len(pool.actors)), key=lambda k: load[k]):
            while load[w] < QUEUED_PER_WORKER and fatal is None:
                shard = pending.popleft() if pending else next(source, None)
                if shard is None:
                    break
                inflight[pool.actors[w].embed.remote(shard.texts)] = (shard, w)
                load[w] += 1
        if not inflight:
            break
        ready, _ = ray.wait(list(inflight), num_returns=1)
        shard, w = inflight.pop(ready[0])
        load[w] -= 1
        try:
            vectors = ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            failures[shard.key] = failures.get(shard.key, 0) + 1
            if failures[shard.key] <= retries:
                log.warning("%s failed (attempt %d of %d), retrying: %s", shard.label, failures[shard.key],
                            retries + 1, _cause(exc))
                pending.appendleft(shard)
            elif fatal is None:
                times = failures[shard.key]
                fatal = f"{shard.label} failed {times} time{'s' if times > 1 else ''}; last error: {_cause(exc)}"
            continue
        save(shard, vectors)
        computed.append(shard.key)
    if fatal is not None:
        raise RayEmbedError(f"{fatal}. {resume_hint}" if resume_hint else fatal)
    return computed, failures


def _cause(exc: BaseException) -> str:
    """The user's error inside a Ray error (its first line), not Ray's wrapper text."""
    inner = getattr(exc, "cause", None)
    if isinstance(inner, BaseException):
        return f"{type(inner).__name__}: {inner}".splitlines()[0]
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


__all__ = ["EmbedSpec", "RayEmbedError", "RayEmbedResult", "Shard", "ShardWorker", "WorkerPool", "embed_on_ray",
           "plan_workers", "run_shards", "start_workers"]
