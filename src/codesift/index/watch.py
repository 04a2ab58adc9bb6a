"""`codesift watch`: debounced incremental re-indexing when files change (watchfiles)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from codesift.data.files import SKIP_DIRS
from codesift.index.config import INDEX_DIRNAME
from codesift.index.indexer import Indexer, IndexReport

log = logging.getLogger(__name__)


def _relevant(_change, path: str) -> bool:
    return not any(part in SKIP_DIRS or part == INDEX_DIRNAME for part in Path(path).parts)


def watch_and_index(root: str | Path, index_dir: str | Path | None = None, debounce_ms: int = 1000,
                    on_report: Callable[[IndexReport], None] | None = None,
                    stop_event: threading.Event | None = None) -> None:
    """Index ``root`` now, then again after each burst of changes, until interrupted or ``stop_event`` is set."""
    from watchfiles import watch

    if debounce_ms < 0:
        raise ValueError(f"--debounce must be >= 0 ms, got {debounce_ms}")
    ix = Indexer(root, index_dir)
    try:
        report = ix.update()
        if on_report:
            on_report(report)
        for _changes in watch(ix.root, watch_filter=_relevant, debounce=debounce_ms, step=50,
                              stop_event=stop_event, raise_interrupt=False):
            report = ix.update()  # the walk + mtime/size diff finds what changed; the batch is only a trigger
            if on_report:
                on_report(report)
    finally:
        ix.close()
