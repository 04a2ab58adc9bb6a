"""The one training pair of codesift: what mining writes, the mix samples and the trainer reads."""

from __future__ import annotations

from dataclasses import dataclass

JSON_FIELDS = ("task", "query", "document", "language", "source", "path", "symbol")


@dataclass(frozen=True)
class Pair:
    """One (query, document) pair; ``task`` is one of the five tasks of codesift.tasks.

    ``language``, ``source``, ``path`` and ``symbol`` say where a mined pair came from (empty when
    unknown). ``negatives`` are hard negatives of the query: documents of the same repository that
    look relevant but are not (a JSONL row carries them as a list only when there are some).
    ``dataset`` is the trainer's group: ``file:task`` or ``source:task``, set by
    ``codesift.train.data.load_pairs``; it is not part of the JSONL row.
    """

    task: str
    query: str
    document: str
    language: str = ""
    source: str = ""
    path: str = ""
    symbol: str = ""
    dataset: str = ""
    negatives: tuple[str, ...] = ()

    def to_json(self) -> dict[str, str | list[str]]:
        """The JSONL row."""
        row: dict[str, str | list[str]] = {name: getattr(self, name) for name in JSON_FIELDS}
        if self.negatives:
            row["negatives"] = list(self.negatives)
        return row
