"""MBPP's train split as an nl2code source (task_id 601-974; 11-510 is the test set, never train on it)."""

from __future__ import annotations

from pathlib import Path

from codesift.data.jsonl import read_jsonl
from codesift.data.pair import Pair

MBPP_SPLITS: dict[str, tuple[int, int]] = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def load_mbpp_pairs(path: str | Path, split: str = "train") -> list[Pair]:
    """nl2code pairs (problem text -> reference solution) of one MBPP split from ``mbpp.jsonl``."""
    if split not in MBPP_SPLITS:
        raise ValueError(f"unknown MBPP split {split!r}; choose from {', '.join(MBPP_SPLITS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass the full MBPP file (mbpp.jsonl, 974 problems)")
    lo, hi = MBPP_SPLITS[split]
    pairs = []
    for _, row in read_jsonl(path):
        if lo <= int(row["task_id"]) <= hi:
            code = row["code"].replace("\r\n", "\n").strip()
            pairs.append(Pair("nl2code", row["text"].strip(), code, "python", f"mbpp-{split}", str(path), f"task_{row['task_id']}"))
    return pairs
