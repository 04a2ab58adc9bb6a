"""Training checkpoints: written atomically (temp folder + rename), the last K kept."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(out: str | Path) -> Path:
    """Where the checkpoints of run ``out`` live."""
    return Path(out) / "checkpoints"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first (half-written temp folders are ignored)."""
    root = checkpoint_dir(out)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / "state.pt").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(out: str | Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` for ``step``: a crash at any moment leaves the previous checkpoints intact."""
    root = checkpoint_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in list_checkpoints(out)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # leftovers of a killed writer
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def load_latest(out: str | Path) -> tuple[int, dict[str, Any]] | None:
    """(step, state) of the newest complete checkpoint of ``out``, or None."""
    found = list_checkpoints(out)
    if not found:
        return None
    step, path = found[-1]
    return step, torch.load(path / "state.pt", map_location="cpu", weights_only=False)
