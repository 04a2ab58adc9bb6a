"""Walking, incremental indexing, filters and search on the real embedded store (SQLite), tiny model."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from codesift.data.files import is_test_path
from codesift.data.walk import walk_files
from codesift.index import IndexConfig, build_index, open_index
from codesift.index.searcher import rrf_fuse
from codesift.index.store import keyword_text

PARSE = 'def parse_config(path):\n    """Read a config file."""\n    with open(path) as fh:\n        return fh.read()\n'
STACK = "class Stack:\n    def push(self, item):\n        self.items.append(item)\n"


@pytest.fixture(scope="module")
def emb(tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    return Embedder(str(tiny_qwen_dir))


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, body in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body) if isinstance(body, bytes) else p.write_text(body)


def index(root: Path, emb, **kw):
    return build_index(root, config=IndexConfig(model=str(emb.source) if hasattr(emb, "source") else "tiny", **kw),
                       embedder=emb)


def rows(root: Path, emb) -> set[tuple[str, int, int]]:
    with open_index(root, embedder=emb) as ix:
        got = list(ix.store.rows(["path", "start_line", "end_line"]))
        assert ix.store.count() == ix.manifest.totals()["chunks"]  # store and manifest agree
    return {(r["path"], r["start_line"], r["end_line"]) for r in got}


def test_walk_honours_gitignore_ignore_codesiftignore_and_negation(tmp_path):
    write(tmp_path, {
        ".gitignore": "build/\n*.log\n!keep.log\n", ".ignore": "vendor/\n", ".codesiftignore": "docs/*.py\n",
        "a.py": "x", "keep.log": "x", "drop.log": "x", "build/b.py": "x", "vendor/v.py": "x", "docs/d.py": "x",
        "docs/d.md": "x", "sub/.gitignore": "local.py\n/anchored.py\n", "sub/local.py": "x", "sub/anchored.py": "x",
        "sub/deeper/anchored.py": "x", "sub/deeper/local.py": "x", ".git/config": "x", "node_modules/m.js": "x",
    })
    got = {f.path for f in walk_files(tmp_path)}
    assert got == {".gitignore", ".ignore", ".codesiftignore", "a.py", "keep.log", "docs/d.md", "sub/.gitignore",
                   "sub/deeper/anchored.py"}


def test_one_test_path_rule():
    assert is_test_path("tests/x.py") and is_test_path("pkg/test_x.py") and is_test_path("web/a.spec.ts")
    assert not is_test_path("src/contest.py") and not is_test_path("src/latest.py")
    assert is_test_path("conftest.py") and is_test_path("Tests/a.cs") and is_test_path("go/testdata/a.go")


def test_keyword_text_splits_identifiers_and_stems():
    assert set(keyword_text("parse configs").split()) <= set(keyword_text("def parseConfig(): parse_configs").split())


def test_rrf_fuse_weights_and_k():
    a, b = [{"id": "x"}, {"id": "y"}], [{"id": "y"}, {"id": "z"}]
    fused = rrf_fuse([a, b], [1.0, 1.0], 60)
    assert next(r["id"] for _, r in fused) == "y"  # in both lists
    fused = rrf_fuse([a, b], [5.0, 1.0], 1)
    assert next(r["id"] for _, r in fused) == "x"  # dense list weighted up


def test_incremental_add_modify_delete_rename(tmp_path, emb):
    root = tmp_path / "repo"
    write(root, {"src/a.py": PARSE, "src/b.py": STACK, "img.png": b"\x89PNG\x00\x00\x01" * 100,
                 "min.js": "var a=1;" * 400, "gen_pb2.py": "x = 1\n", "big.py": "x = 1\n" * 1000})
    r = index(root, emb, max_file_bytes=5000)  # big.py is "huge" under this cap
    assert r.files_changed == 2 and r.chunks_embedded >= 2 and r.files_skipped == 4
    assert set(r.skipped) == {"img.png", "min.js", "gen_pb2.py", "big.py"}
    assert [r.skipped[p].split()[0] for p in ("img.png", "min.js", "gen_pb2.py", "big.py")] == [
        "binary", "minified", "generated", "too"]
    first = rows(root, emb)
    assert {p for p, *_ in first} == {"src/a.py", "src/b.py"}

    r = build_index(root, embedder=emb)  # unchanged tree
    assert (r.files_changed, r.chunks_embedded, r.chunks_deleted) == (0, 0, 0) and r.files_seen == 6

    os.utime(root / "src/a.py", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    r = build_index(root, embedder=emb)
    assert (r.files_changed, r.chunks_embedded) == (0, 0)

    (root / "src/a.py").write_text(PARSE + "\n\ndef added_function():\n    return 42\n")  # modified
    r = build_index(root, embedder=emb)
    assert r.files_changed == 1 and r.chunks_embedded >= 1 and r.chunks_deleted >= 1

    (root / "src/b.py").rename(root / "src/moved.py")  # renamed: same content, vectors from the cache
    r = build_index(root, embedder=emb)
    assert r.files_deleted == 1 and r.files_changed == 1 and r.chunks_embedded == 0 and r.chunks_cached >= 1
    paths = {p for p, *_ in rows(root, emb)}
    assert paths == {"src/a.py", "src/moved.py"}

    (root / "src/moved.py").unlink()  # deleted
    r = build_index(root, embedder=emb)
    assert r.files_deleted == 1 and r.chunks_deleted >= 1
    assert {p for p, *_ in rows(root, emb)} == {"src/a.py"}


def test_filters_apply_before_the_top_k_cut(tmp_path, emb):
    root = tmp_path / "repo"
    files = {f"src/m{i}.py": PARSE.replace("parse_config", f"parse_config_{i}") for i in range(30)}
    files |= {"lib/only.py": STACK + "\nCONFIG = {}\n", "web/app.js": "function parseConfig(path) { return load(path); }\n",
              "tests/test_parse.py": "def test_parse_config():\n    assert parse_config('x')\n"}
    write(root, files)
    index(root, emb)
    with open_index(root, embedder=emb) as ix:
        for mode in ("hybrid", "dense", "bm25"):
            assert [r.path for r in ix.search("parse config", limit=1, path_globs=["lib/**"], mode=mode)] == ["lib/only.py"]
            assert [r.path for r in ix.search("parse config", limit=1, language="javascript", mode=mode)] == ["web/app.js"]
        res = ix.search("parse config", limit=50, path_globs=["!src/", "!web/"])
        assert {r.path for r in res} == {"lib/only.py", "tests/test_parse.py"}
        res = ix.search("parse config", limit=50, path_globs=["!src/"], exclude_tests=True)
        assert {r.path for r in res} == {"lib/only.py", "web/app.js"}
        assert ix.search("parse config", path_globs=["nothing/**"]) == []
        top = ix.search("parse config", limit=5)
        assert len(top) == 5 and all(t.score >= u.score for t, u in itertools.pairwise(top))
        d = top[0].to_dict()
        assert set(d) == {"path", "start_line", "end_line", "symbol", "kind", "language", "score", "snippet"}
        assert d["snippet"] and 1 <= d["start_line"] <= d["end_line"]
        two = ix.search("parse config", limit=5, mode="dense", two_stage=True)
        assert len(two) == 5
        like = ix.like("lib/only.py", 2, limit=3)
        assert like and all(not (r.path == "lib/only.py" and r.start_line <= 2 <= r.end_line) for r in like)


def test_bad_input(tmp_path, emb):
    with pytest.raises(FileNotFoundError):
        build_index(tmp_path / "missing", embedder=emb)
    with pytest.raises(FileNotFoundError):
        open_index(tmp_path / "missing")
    root = tmp_path / "repo"
    write(root, {"a.py": PARSE, "locked.py": STACK})
    (root / "locked.py").chmod(0)
    r = index(root, emb)
    if os.geteuid() != 0:  # root reads anything
        assert "locked.py" in r.skipped and r.skipped["locked.py"].startswith("unreadable")
    with open_index(root, embedder=emb) as ix:
        for bad in ("", "   "):
            with pytest.raises(ValueError, match="empty"):
                ix.search(bad)
        with pytest.raises(ValueError, match="limit"):
            ix.search("x", limit=0)
        with pytest.raises(ValueError, match="mode"):
            ix.search("x", mode="fuzzy")
        with pytest.raises(ValueError, match="language"):
            ix.search("x", language="cobol")
        with pytest.raises(ValueError, match="outside"):
            ix.like("../../etc/passwd", 1)
        with pytest.raises(ValueError, match="no indexed chunk"):
            ix.like("a.py", 999)
    with pytest.raises(ValueError, match="model"):
        build_index(root, config=IndexConfig(model="another/model"), embedder=emb)


def test_staleness_and_refresh(tmp_path, emb):
    root = tmp_path / "repo"
    write(root, {"a.py": PARSE})
    index(root, emb)
    with open_index(root, embedder=emb) as ix:
        assert ix.staleness()["stale"] is False
        write(root, {"b.py": STACK})
        (root / "a.py").unlink()
        st = ix.staleness()
        assert st["stale"] and st["added"] == 1 and st["deleted"] == 1
        report = ix.refresh()
        assert report.files_changed == 1 and report.files_deleted == 1
        assert ix.staleness()["stale"] is False
        assert {r.path for r in ix.search("stack push", limit=5)} == {"b.py"}
        assert ix.status()["files"] == 1


def test_a_run_with_nothing_to_embed_loads_no_model(tmp_path):
    """A tree with nothing indexable, indexed twice: neither run loads the model (here one that cannot load)."""
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    config = IndexConfig(model=str(tmp_path / "no-such-model"))
    for _ in range(2):
        report = build_index(tmp_path, config=config)
        assert report.chunks_total == 0 and report.files_skipped == 1
