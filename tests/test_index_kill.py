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

# Runs the indexer in a child process; on the n-th call of the write ``target`` ("module:Class.method" or
# "module:function") whose rows are empty (a deletion), or not (a batch), or any ("any"), after the call (for
# SQLite: inside the still open transaction) it signals the parent and waits to be killed.
CHILD = r"""
import importlib, sys, time
from codesift.index import IndexConfig, Indexer
root, model, marker, target, kind, nth, store_uri = sys.argv[1:8]
module, _, name = target.partition(":")
owner = importlib.import_module(module)
if "." in name:
    cls, name = name.split(".")
    owner = getattr(owner, cls)
orig, calls = getattr(owner, name), []
def patched(*args):
    orig(*args)
    rows = args[-1]
    if kind == "any" or (kind == "delete") == (not rows):
        calls.append(1)
        if len(calls) == int(nth):
            open(marker, "w").close()
            time.sleep(120)
setattr(owner, name, patched)
config = IndexConfig(model=model, files_per_commit=5, store_uri=store_uri or None)
Indexer(root, config=config).update()
"""

SQLITE = "codesift.index.sqlite_store:SQLiteStore.replace_files"
MILVUS = "codesift.index.milvus_store:MilvusStore.replace_files"
MERGE = "codesift.index.sqlite_terms:merge"  # the keyword index's segment merge, inside a batch's transaction


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


def kill_child_at(root: Path, model: str, tmp_path: Path, target: str, kind: str, nth: int,
                  store_uri: str = "") -> None:
    marker = tmp_path / "marker"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), model, str(marker), target, kind, str(nth),
                              store_uri], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when_marked(child, marker, "the store write")


def kill_when_marked(child: subprocess.Popen, marker: Path, what: str, timeout_s: float = 180) -> None:
    """SIGKILL ``child`` as soon as it creates ``marker`` (it does so at ``what``, then waits to be killed)."""
    try:
        deadline = time.time() + timeout_s
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.time() < deadline, f"the child never reached {what}"
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


@pytest.mark.parametrize("store", [SQLITE, MILVUS], ids=["sqlite", "milvus-lite"])
def test_sigkill_while_deleting_files_then_next_run_finishes(tmp_path, tiny_qwen_dir, store):
    from codesift.model.embedder import Embedder

    if store == MILVUS:
        pytest.importorskip("milvus_lite")
    store_uri = str(tmp_path / "milvus.db") if store == MILVUS else ""
    emb = Embedder(str(tiny_qwen_dir))
    root = tmp_path / "repo"
    write_tree(root)
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir), store_uri=store_uri or None), embedder=emb)
    before = stored(root / ".codesift", emb)
    for i in range(10):
        (root / "pkg" / f"mod{i}.py").unlink()
    kill_child_at(root, str(tiny_qwen_dir), tmp_path, store, "delete", 1, store_uri)

    with open_index(root, embedder=emb) as ix:
        if store == SQLITE:  # the deletion was rolled back whole: still consistent, and stale
            assert ix.staleness()["deleted"] == 10
        else:  # Milvus: the deleted files are marked pending first, for the next run to finish
            assert ix.manifest.totals()["files_pending"] == 10 and ix.staleness()["stale"]
    if store == SQLITE:
        assert stored(root / ".codesift", emb) == before

    report = build_index(root, embedder=emb)
    assert report.files_deleted == 10 and report.chunks_embedded == 0
    assert {p for p, *_ in stored(root / ".codesift", emb)} == {f"pkg/mod{i}.py" for i in range(10, 20)}


def test_sigkill_when_files_become_skipped_then_next_run_finishes(tmp_path, tiny_qwen_dir):
    """Indexed files turn binary: their chunks go in the transaction that records them as skipped."""
    from codesift.model.embedder import Embedder

    emb = Embedder(str(tiny_qwen_dir))
    root = tmp_path / "repo"
    write_tree(root)
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=emb)
    before = stored(root / ".codesift", emb)
    for i in range(3):
        (root / "pkg" / f"mod{i}.py").write_bytes(b"\x00\x01binary\x00" * 100)
    kill_child_at(root, str(tiny_qwen_dir), tmp_path, SQLITE, "delete", 2)

    with open_index(root, embedder=emb) as ix:  # one file's skip committed whole, the second's not at all
        assert ix.staleness()["stale"]
    assert before - stored(root / ".codesift", emb) == {c for c in before if c[0] == "pkg/mod0.py"}

    report = build_index(root, embedder=emb)
    assert report.files_skipped == 3 and report.chunks_embedded == 0
    fresh = tmp_path / "fresh-index"
    build_index(root, fresh, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=emb)
    assert stored(root / ".codesift", emb) == stored(fresh, emb)
    assert {p for p, *_ in stored(fresh, emb)} == {f"pkg/mod{i}.py" for i in range(3, 20)}


def test_sigkill_inside_a_keyword_segment_merge_then_next_run_finishes(tmp_path, tiny_qwen_dir):
    """The fourth batch's segment merges the first four (``sqlite_terms.FANOUT``): killed inside that merge, the
    batch and the merge are rolled back together, and the next run's BM25 ranks like a fresh build's."""
    from codesift.index.store import ChunkFilter
    from codesift.model.embedder import Embedder

    root = tmp_path / "repo"
    write_tree(root)
    kill_child_at(root, str(tiny_qwen_dir), tmp_path, MERGE, "any", 1)

    emb = Embedder(str(tiny_qwen_dir))
    with open_index(root, embedder=emb) as ix:
        totals = ix.manifest.totals()
        assert ix.staleness()["stale"] and totals["files"] == 15 and ix.store.count() == totals["chunks"]
        assert len(ix.store.db.execute("SELECT segment FROM term_segments").fetchall()) == 3  # none merged yet

    build_index(root, embedder=emb)
    fresh = tmp_path / "fresh-index"
    build_index(root, fresh, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=emb)
    assert stored(root / ".codesift", emb) == stored(fresh, emb)
    with open_index(root, embedder=emb) as a, open_index(fresh, embedder=emb) as b:
        for query in ("func", "class k3 v", "return x"):
            got = [(r["path"], round(r["distance"], 5)) for r in a.store.bm25(query, 50, ChunkFilter())]
            want = [(r["path"], round(r["distance"], 5)) for r in b.store.bm25(query, 50, ChunkFilter())]
            assert sorted(got) == sorted(want) and got


MIGRATE_CHILD = r"""
import sys, time
from codesift.index import sqlite_store
from codesift.index.manifest import Manifest
path, marker = sys.argv[1:3]
orig = sqlite_store.add_chunks  # the store calls the postings writer by this name
def add_chunks(db, chunks):
    orig(db, chunks)
    open(marker, "w").close()
    time.sleep(120)
sqlite_store.add_chunks = add_chunks
sqlite_store.SQLiteStore(Manifest(path), 8, 4)
"""


def test_sigkill_while_moving_an_fts5_index_to_postings_then_the_next_open_does_it(tmp_path):
    """The one-time move of an FTS5 index's terms into postings is one transaction: killed inside it, the index
    keeps its FTS5 table, and the next open moves it, ranking as before."""
    import sqlite3

    from codesift.index.manifest import Manifest
    from codesift.index.sqlite_store import SQLiteStore
    from codesift.index.store import ChunkFilter
    from test_index_store import synthetic_rows, to_fts5_layout

    path = tmp_path / "old.sqlite"
    store = SQLiteStore(Manifest(path), 8, 4)
    store.replace_files([], synthetic_rows(0, 60))
    want = [(r["id"], round(r["distance"], 4)) for r in store.bm25("parse config error", 10, ChunkFilter())]
    store.manifest.close()
    to_fts5_layout(path)

    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", MIGRATE_CHILD, str(path), str(marker)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when_marked(child, marker, "the move", timeout_s=120)
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM chunk_terms").fetchone()[0] == 60  # untouched
    assert db.execute("SELECT COUNT(*) FROM term_postings").fetchone()[0] == 0
    db.close()
    moved = SQLiteStore(Manifest(path), 8, 4)
    assert [(r["id"], round(r["distance"], 4)) for r in moved.bm25("parse config error", 10, ChunkFilter())] == want
