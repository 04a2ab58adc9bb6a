"""`codesift watch`: a burst of changes on disk is re-indexed (debounced) while the watcher runs; it stops on request."""

from __future__ import annotations

import threading
import time

from codesift.index import IndexConfig, build_index, open_index
from codesift.index.watch import watch_and_index


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_watch_reindexes_changes_then_stops(tmp_path, tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    emb = Embedder(str(tiny_qwen_dir))
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src/a.py").write_text("def alpha(x):\n    return x + 1\n")
    (root / "src/gone.py").write_text("def gone():\n    return 0\n")
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=emb)

    reports, errors, stop = [], [], threading.Event()

    def run() -> None:
        try:
            watch_and_index(root, debounce_ms=200, on_report=reports.append, stop_event=stop)
        except Exception as exc:  # noqa: BLE001 (surfaced by the assertions below)
            errors.append(exc)

    watcher = threading.Thread(target=run, daemon=True)
    watcher.start()
    try:
        wait_for(lambda: reports or errors, 90, "the watcher's initial run")
        assert not errors, errors
        assert reports[0].files_changed == 0 and reports[0].chunks_embedded == 0  # nothing changed yet
        time.sleep(0.3)  # let the OS watcher settle

        (root / "src/a.py").write_text("def alpha(x):\n    return x + 1\n\n\ndef beta(y):\n    return y * 2\n")
        (root / "src/new.py").write_text("class Gamma:\n    def run(self):\n        return 3\n")
        (root / "src/gone.py").unlink()
        (root / ".codesift" / "noise.tmp").write_text("x")  # the index dir itself never triggers a run
        wait_for(lambda: sum(r.files_changed for r in reports[1:]) >= 2 and sum(r.files_deleted for r in reports[1:]) >= 1
                 or errors, 60, "the re-index after the change")
        assert not errors, errors
        later = reports[1:]
        assert sum(r.files_changed for r in later) == 2 and sum(r.files_deleted for r in later) == 1
        assert len(later) <= 3  # one burst, debounced (a late event may add a no-op run, never one per event)
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert not watcher.is_alive(), "the watcher did not stop"

    with open_index(root, embedder=emb) as ix:  # the watcher released the store on exit
        assert ix.staleness()["stale"] is False
        rows = list(ix.store.rows(["path", "text"]))
        assert {r["path"] for r in rows} == {"src/a.py", "src/new.py"}
        assert "def beta" in "".join(r["text"] for r in rows if r["path"] == "src/a.py")
        hits = ix.search("beta", limit=50, mode="dense")  # the dense matrix holds every stored chunk
        assert {h.id for h in hits} == {r["id"] for r in rows}
