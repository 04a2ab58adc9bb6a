"""A SIGKILL in the middle of indexing leaves an index that opens and reports honestly, and the next run finishes
the job with nothing lost or duplicated: one test per write path (a batch of changed files, deleted files) of the
SQLite store, and the batch path of the Milvus store (Milvus Lite, the server-free Milvus)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codesift.index import IndexConfig, build_index, open_index

# Runs the indexer in a child process; on the n-th store write whose rows are empty (a deletion) or not (a batch),
# after the write (for SQLite: inside the still open transaction) it signals the parent and waits to be killed.
CHILD = r"""
import importlib, sys, time
from codesift.index import IndexConfig, Indexer
root, model, marker, module, cls, kind, nth, store_uri = sys.argv[1:9]
store_cls = getattr(importlib.import_module(module), cls)
orig, calls = store_cls.replace_files, []
def replace_files(self, paths, rows):
    orig(self, paths, rows)
    if (kind == "delete") == (not rows):
        calls.append(len(rows))
        if len(calls) == int(nth):
            open(marker, "w").close()
            time.sleep(120)
store_cls.replace_files = replace_files
config = IndexConfig(model=model, files_per_commit=5, store_uri=store_uri or None)
Indexer(root, config=config).update()
"""

SQLITE = ("codesift.index.sqlite_store", "SQLiteStore")
MILVUS = ("codesift.index.milvus_store", "MilvusStore")


def stored(index_dir: Path, emb) -> set[tuple[str, int, int, str]]:
    """The chunks of an index; checks that store and manifest agree and that dense search sees every chunk."""
    with open_index(index_dir, embedder=emb) as ix:
        rows = list(ix.store.rows(["path", "start_line", "end_line", "content_hash"]))
        totals = ix.manifest.totals()
        assert totals["files_pending"] == 0 and ix.store.count() == totals["chunks"] == len(rows)
        assert len({r["id"] for r in rows}) == len(rows)  # nothing duplicated
        q = emb.encode(["func"], task="nl2code", role="query")[0]
        assert {r["id"] for r in ix.store.dense(q, 1000, ix.build_filter())} == {r["id"] for r in rows}
    return {(r["path"], r["start_line"], r["end_line"], r["content_hash"]) for r in rows}


def write_tree(root: Path, n: int = 20) -> None:
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / "pkg" / f"mod{i}.py").write_text(f"def func_{i}(x):\n    return x * {i}\n\n\nclass K{i}:\n    v = {i}\n")


def kill_child_at(root: Path, model: str, tmp_path: Path, store: tuple[str, str], kind: str, nth: int,
                  store_uri: str = "") -> None:
    marker = tmp_path / "marker"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), model, str(marker), *store, kind, str(nth),
                              store_uri], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the child never reached the store write"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("store", [SQLITE, MILVUS], ids=["sqlite", "milvus-lite"])
def test_sigkill_mid_batch_then_next_run_finishes(tmp_path, tiny_qwen_dir, store):
    from codesift.model.embedder import Embedder

    if store == MILVUS:
        pytest.importorskip("milvus_lite")
    root = tmp_path / "repo"
    write_tree(root)
    store_uri = str(tmp_path / "milvus.db") if store == MILVUS else ""
    kill_child_at(root, str(tiny_qwen_dir), tmp_path, store, "batch", 2, store_uri)

    emb = Embedder(str(tiny_qwen_dir))
    with open_index(root, embedder=emb) as ix:  # the killed run left files to do, and says so
        totals = ix.manifest.totals()
        assert ix.staleness()["stale"]
        if store == SQLITE:  # one transaction per batch: the first batch whole, the second not at all
            assert totals["files_pending"] == 0 and totals["files"] == 5 and ix.store.count() == totals["chunks"]
        else:  # Milvus: the interrupted batch is marked pending, for the next run to redo
            assert totals["files_pending"] > 0

    report = build_index(root, embedder=emb)
    assert report.files_changed > 0 and report.chunks_cached > 0  # finished, reusing what was embedded
    assert build_index(root, embedder=emb).chunks_embedded == 0

    fresh = tmp_path / "fresh-index"
    build_index(root, fresh, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=emb)
    recovered = stored(root / ".codesift", emb)
    assert recovered == stored(fresh, emb)
    assert {p for p, *_ in recovered} == {f"pkg/mod{i}.py" for i in range(20)}


def test_sigkill_while_deleting_files_then_next_run_finishes(tmp_path, tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    emb = Embedder(str(tiny_qwen_dir))
    root = tmp_path / "repo"
    write_tree(root)
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=emb)
    before = stored(root / ".codesift", emb)
    for i in range(10):
        (root / "pkg" / f"mod{i}.py").unlink()
    kill_child_at(root, str(tiny_qwen_dir), tmp_path, SQLITE, "delete", 1)

    with open_index(root, embedder=emb) as ix:  # the deletion was rolled back whole: still consistent, and stale
        assert ix.staleness()["deleted"] == 10
    assert stored(root / ".codesift", emb) == before

    report = build_index(root, embedder=emb)
    assert report.files_deleted == 10 and report.chunks_embedded == 0
    assert {p for p, *_ in stored(root / ".codesift", emb)} == {f"pkg/mod{i}.py" for i in range(10, 20)}
