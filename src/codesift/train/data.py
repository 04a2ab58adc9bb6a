"""Training pairs and task-homogeneous batches.

A pair file is JSONL with at least ``task``, ``query``, ``document``, ``language``, ``source`` per
row (what ``codesift data mine`` writes), and optionally ``negatives``, hard negatives of the query.
Pairs are grouped into datasets, by (file, task) by default or by (``source``, task); every batch
comes from ONE dataset, as in the paper, and holds no text twice (a repeated document would be its
own false negative).

Why our own sampler and not sentence-transformers' ``NoDuplicatesBatchSampler`` +
``Proportional/RoundRobinBatchSampler``: in a multi-process run the paper's rule must hold for
the GLOBAL batch (every rank's documents are negatives of every query), so all ranks must draw the
same dataset at each step and take their slice of one global batch; the sentence-transformers
samplers run per rank and accelerate hands consecutive batches (possibly from different datasets)
to different ranks. Ours is also a pure function of (seed, epoch), so ``--resume`` continues at
the exact batch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from codesift.data.jsonl import read_jsonl
from codesift.data.pair import Pair
from codesift.tasks import TASKS

REQUIRED_FIELDS = ("task", "query", "document")


def load_pairs(paths: Sequence[str | Path], group_by: str = "file") -> list[Pair]:
    """Read JSONL pair files; the dataset of a pair is ``file:task`` or ``source:task``."""
    if group_by not in ("file", "source"):
        raise ValueError(f"group_by must be 'file' or 'source', got {group_by!r}")
    if not paths:
        raise ValueError("no training data: pass one or more pair files (--data pairs.jsonl)")
    pairs: list[Pair] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"pair file {path} does not exist (make one with `codesift data mine`)")
        for n, row in read_jsonl(path):
            missing = [k for k in REQUIRED_FIELDS if not isinstance(row.get(k), str) or not row[k]]
            if missing:
                raise ValueError(f"{path}:{n}: missing or empty field(s) {', '.join(missing)}")
            task = TASKS.get(row["task"]).name  # raises with the list of valid tasks
            origin = path.stem if group_by == "file" else str(row.get("source") or path.stem)
            negatives = row.get("negatives") or []
            if not isinstance(negatives, list) or not all(isinstance(x, str) and x for x in negatives):
                raise ValueError(f"{path}:{n}: 'negatives' must be a list of non-empty strings")
            pairs.append(Pair(task, row["query"], row["document"], dataset=f"{origin}:{task}",
                              negatives=tuple(negatives)))
    if not pairs:
        raise ValueError(f"the pair files {', '.join(map(str, paths))} hold no pairs")
    return pairs


def group_by_dataset(pairs: Sequence[Pair]) -> dict[str, list[int]]:
    """Indices of the pairs of each dataset, datasets in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.dataset, []).append(i)
    return groups


class TaskBatchSampler:
    """Global batches of pair indices, each from one dataset, with no repeated text inside a batch.

    The batches of an epoch are a pure function of ``(seed, epoch)``: each dataset is shuffled and
    cut into full batches (a pair whose query or document is already in the current batch waits for
    the next one; leftovers that do not fill a batch are dropped), then the datasets' batches are
    interleaved: ``proportional`` shuffles all of them together (each dataset appears in proportion
    to its size), ``round_robin`` takes one batch of each dataset in turn until each runs out.
    """

    def __init__(self, pairs: Sequence[Pair], batch_size: int, mixing: str = "proportional", seed: int = 0) -> None:
        if mixing not in ("proportional", "round_robin"):
            raise ValueError(f"mixing must be 'proportional' or 'round_robin', got {mixing!r}")
        if batch_size < 2:
            raise ValueError(f"batch size must be >= 2 for in-batch negatives, got {batch_size}")
        self.pairs, self.batch_size, self.mixing, self.seed = pairs, batch_size, mixing, seed
        self.groups = group_by_dataset(pairs)
        if not any(len(ix) >= batch_size for ix in self.groups.values()):
            sizes = ", ".join(f"{k}={len(v)}" for k, v in self.groups.items())
            raise ValueError(f"no dataset has {batch_size} pairs to fill one batch ({sizes}); lower --batch-size")

    def _dataset_batches(self, indices: list[int], rng: random.Random) -> list[list[int]]:
        order = indices[:]
        rng.shuffle(order)
        batches: list[list[int]] = []
        batch: list[int] = []
        seen: set[str] = set()
        waiting: list[int] = []
        for i in order:
            texts = {self.pairs[i].query, self.pairs[i].document}
            if texts & seen:
                waiting.append(i)
                continue
            batch.append(i)
            seen |= texts
            if len(batch) == self.batch_size:
                batches.append(batch)
                batch, seen = [], set()
                # pairs that clashed with the finished batch get the first chance at the next one
                retry, waiting = waiting, []
                for j in retry:
                    t = {self.pairs[j].query, self.pairs[j].document}
                    if t & seen or len(batch) == self.batch_size:
                        waiting.append(j)
                    else:
                        batch.append(j)
                        seen |= t
        return batches

    def epoch(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` (deterministic)."""
        rng = random.Random(f"{self.seed}:{epoch}")
        per_dataset = [self._dataset_batches(ix, rng) for ix in self.groups.values()]
        if self.mixing == "proportional":
            out = [b for batches in per_dataset for b in batches]
            rng.shuffle(out)
            return out
        out = []
        for k in range(max(map(len, per_dataset))):
            out.extend(batches[k] for batches in per_dataset if k < len(batches))
        return out

    def batches(self, start_step: int = 0) -> Iterator[list[int]]:
        """Endless stream of batches over epochs, starting at global step ``start_step``."""
        epoch, skip = 0, start_step
        while True:
            batches = self.epoch(epoch)
            if not batches:
                raise ValueError("the sampler produced no batch (every dataset smaller than the batch size)")
            if skip >= len(batches):
                skip -= len(batches)
            else:
                yield from batches[skip:]
                skip = 0
            epoch += 1


def shard(batch: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous slice of a global batch (the batch size must divide by ``world``)."""
    if len(batch) % world:
        raise ValueError(f"global batch size {len(batch)} does not divide by {world} processes")
    per = len(batch) // world
    return list(batch[rank * per : (rank + 1) * per])


def batch_negatives(pairs: Sequence[Pair], per_pair: int) -> list[str]:
    """Up to ``per_pair`` hard negatives of each pair, leaving out any text that is a query or document
    of the batch (it would be some row's positive) and repeats."""
    if per_pair <= 0:
        return []
    taken = {p.query for p in pairs} | {p.document for p in pairs}
    out: list[str] = []
    for p in pairs:
        fresh = [n for n in p.negatives if n not in taken][:per_pair]
        taken.update(fresh)
        out.extend(fresh)
    return out
