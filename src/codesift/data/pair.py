"""The one training pair of codesift: what mining writes, the mix samples and the trainer reads."""

from __future__ import annotations

from dataclasses import dataclass

JSON_FIELDS = ("task", "query", "document", "language", "source", "path", "symbol")


@dataclass(frozen=True)
class Pair:
    """One (query, document) pair; ``task`` is one of the five tasks of codesift.tasks.

    ``language``, ``source``, ``path`` and ``symbol`` say where a mined pair came from (empty when
    unknown). ``dataset`` is the trainer's group: ``file:task`` or ``source:task``, set by
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

    def to_json(self) -> dict[str, str]:
        """The JSONL row."""
        return {name: getattr(self, name) for name in JSON_FIELDS}
