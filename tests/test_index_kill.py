"""A SIGKILL in the middle of indexing leaves a consistent index, and the next run finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from codesift.index import IndexConfig, build_index, open_index
from codesift.index.vectors import META_KEY

# Runs the indexer in a child process; after the store has taken the second batch of rows (before the
# manifest marks those files done) it signals the parent and waits to be killed.
CHILD = r"""
import sys, time
from codesift.index import IndexConfig, Indexer
from codesift.index import store as st
root, model, marker = sys.argv[1:4]
orig, calls = st.ChunkStore.upsert, []
def upsert(self, rows):
    orig(self, rows)
    calls.append(len(rows))
    if len(calls) == 2:
        open(marker, "w").close()
        time.sleep(120)
st.ChunkStore.upsert = upsert
Indexer(root, config=IndexConfig(model=model, files_per_commit=5)).update()
"""


def stored(index_dir: Path, emb) -> set[tuple[str, int, int, str]]:
    with open_index(index_dir, embedder=emb) as ix:
        rows = ix.store.query('path != ""', output_fields=["path", "start_line", "end_line", "content_hash"])
        totals = ix.manifest.totals()
        assert totals["files_pending"] == 0 and ix.store.count() == totals["chunks"] == len(rows)
        assert set(ix.vector_mirror().ids.tolist()) == {r["id"] for r in rows}  # the dense mirror agrees
    return {(r["path"], r["start_line"], r["end_line"], r["content_hash"]) for r in rows}


def test_sigkill_mid_run_then_next_run_finishes(tmp_path, tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    for i in range(20):
        (root / "pkg" / f"mod{i}.py").write_text(f"def func_{i}(x):\n    return x * {i}\n\n\nclass K{i}:\n    v = {i}\n")
    marker = tmp_path / "marker"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(tiny_qwen_dir), str(marker)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the child never reached the second batch"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    emb = Embedder(str(tiny_qwen_dir))
    with open_index(root, embedder=emb) as ix:  # the killed run left pending files behind
        assert ix.manifest.totals()["files_pending"] > 0 and ix.staleness()["stale"]
        assert ix.manifest.get_meta().get(META_KEY) is None  # the killed run had invalidated the vector mirror

    report = build_index(root, embedder=emb)
    assert report.files_changed > 0 and report.chunks_cached > 0  # finished, reusing what was embedded
    assert build_index(root, embedder=emb).chunks_embedded == 0

    fresh = tmp_path / "fresh-index"
    build_index(root, fresh, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=emb)
    recovered = stored(root / ".codesift", emb)
    assert recovered == stored(fresh, emb)
    assert {p for p, *_ in recovered} == {f"pkg/mod{i}.py" for i in range(20)}
