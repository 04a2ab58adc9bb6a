"""The chunk stores behind one protocol: the SQLite store (exact dense search over an in-memory matrix kept current
by generation, FTS5 BM25, filters before the cut) and the Milvus store (Milvus Lite here: no server can run in the
test suite), which must agree with it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codesift.index import IndexConfig, build_index, open_index
from codesift.index.sqlite_store import SQLiteStore, symbol_names
from codesift.index.store import ChunkFilter, is_milvus_lite, is_milvus_uri, keyword_text

from test_index_ranking import BagOfWords


def write_tree(root, n=12):
    for i in range(n):
        sub = "web" if i % 4 == 0 else "src"
        ext = "js" if sub == "web" else "py"
        body = (f"function handler{i}(req) {{ return req.body + {i}; }}\n" if ext == "js"
                else f"def compute_{i}(values):\n    return sum(v * {i} for v in values)\n")
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / f"m{i}.{ext}").write_text(body)
    (root / "src/conf.py").write_text("def parse_config(path):\n    return load_yaml(path)\n")
    (root / "tests").mkdir(exist_ok=True)
    (root / "tests/test_conf.py").write_text("def test_parse_config():\n    assert parse_config('a.yaml')\n")


def brute_force(ix, q, k, keep) -> list[tuple[str, float]]:
    """Exact top-k by inner product over every stored row the predicate keeps."""
    rows = [r for r in ix.store.rows(["path", "language", "is_test", "vector"]) if keep(r)]
    scored = sorted(((r["id"], float(r["vector"] @ q)) for r in rows), key=lambda t: -t[1])
    return scored[:k]


def test_dense_is_exact_and_filters_apply_before_the_cut(tmp_path):
    root = tmp_path / "repo"
    write_tree(root)
    emb = BagOfWords()
    build_index(root, config=IndexConfig(model="bag-of-words"), embedder=emb)
    with open_index(root, embedder=emb) as ix:
        assert isinstance(ix.store, SQLiteStore) and ix.status()["engine"] == "sqlite"
        q = emb.encode(["sum of values handler"])[0]
        some_id = next(ix.store.rows(["path"]))["id"]
        cases = [(ChunkFilter(), lambda r: True),
                 (ChunkFilter(language="javascript"), lambda r: r["language"] == "javascript"),
                 (ChunkFilter(paths=("src/m1.py", "src/m2.py")), lambda r: r["path"] in ("src/m1.py", "src/m2.py")),
                 (ChunkFilter(paths=("src/m1.py",), negate_paths=True, exclude_tests=True),
                  lambda r: r["path"] != "src/m1.py" and not r["is_test"]),
                 (ChunkFilter(exclude_ids=(some_id,)), lambda r: r["id"] != some_id)]
        for flt, keep in cases:
            got = [(r["id"], r["distance"]) for r in ix.store.dense(q, 3, flt)]
            want = brute_force(ix, q, 3, keep)
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=2e-3)  # float16 vectors
            assert len(got) == len(want)
        js = ix.store.dense(q, 50, ChunkFilter(language="javascript"))
        assert len(js) == 3 and {r["path"] for r in js} == {"web/m0.js", "web/m4.js", "web/m8.js"}
        assert ix.store.dense(q, 5, ChunkFilter(language="cobol")) == []
        two = ix.store.dense(q, 3, ChunkFilter(), two_stage=True, depth=100)  # depth >= rows: same as exact
        assert [r["id"] for r in two] == [r["id"] for r in ix.store.dense(q, 3, ChunkFilter())]
        res = ix.search("sum of values", limit=2, mode="dense", path_globs=["!src/"])
        assert res and all(not r.path.startswith("src/") and r.snippet for r in res)


def test_the_matrix_follows_writes_of_another_process_or_connection(tmp_path):
    root = tmp_path / "repo"
    write_tree(root)
    emb = BagOfWords()
    build_index(root, config=IndexConfig(model="bag-of-words"), embedder=emb)
    with open_index(root, embedder=emb) as ix:
        q = emb.encode(["renamed thing compute values"])[0]
        before = ix.store.dense(q, 100, ChunkFilter(language="python"))  # matrix and filter mask now in memory
        (root / "src/m1.py").write_text("def renamed_thing(x):\n    return x\n")      # modified
        (root / "src/m2.py").unlink()                                                  # deleted
        (root / "src/m3.py").rename(root / "src/moved.py")                             # renamed
        r = build_index(root, embedder=emb)  # its own connection to the same file
        assert r.files_changed == 2 and r.files_deleted == 2
        after = ix.store.dense(q, 100, ChunkFilter(language="python"))
        paths = {h["path"] for h in after}
        assert "src/m2.py" not in paths and "src/m3.py" not in paths and {"src/moved.py", "src/m1.py"} <= paths
        assert len(after) == len(before) - 1
        with open_index(root, embedder=emb) as fresh:  # the same answer as a store read from scratch
            want = fresh.store.dense(q, 100, ChunkFilter(language="python"))
        assert [h["id"] for h in after] == [h["id"] for h in want]
        assert ix.store.count() == ix.manifest.totals()["chunks"]


def test_fts5_scores_are_bm25_over_codesift_terms_and_honour_filters(tmp_path):
    root = tmp_path / "repo"
    write_tree(root)
    emb = BagOfWords()
    build_index(root, config=IndexConfig(model="bag-of-words"), embedder=emb)
    with open_index(root, embedder=emb) as ix:
        docs = {r["id"]: r["terms"].split() for r in ix.store.rows(["terms"])}
        n, avg = len(docs), sum(map(len, docs.values())) / len(docs)

        def bm25(doc: list[str], terms: list[str]) -> float:  # FTS5's: k1 1.2, b 0.75, idf floored at 1e-6
            score = 0.0
            for t in terms:
                df = sum(t in d for d in docs.values())
                idf = max(math.log((n - df + 0.5) / (df + 0.5)), 1e-6)
                tf = doc.count(t)
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(doc) / avg))
            return score

        for query in ("parse configs", "load yaml", "handler request body"):
            terms = keyword_text(query).split()
            got = ix.store.bm25(query, 5, ChunkFilter())
            want = sorted(((i, bm25(d, terms)) for i, d in docs.items() if set(terms) & set(d)), key=lambda t: -t[1])[:5]
            np.testing.assert_allclose([r["distance"] for r in got], [s for _, s in want], rtol=1e-4)
        assert "parse_config" in keyword_text("parse_config").split()  # `_` stays inside a term (tokenchars)
        hits = ix.search("parse configs", limit=5, mode="bm25", exclude_tests=True)
        assert [h.path for h in hits] == ["src/conf.py"]  # the test file is filtered out, nothing else matches
        assert ix.search("zzz_absent_term", mode="bm25") == []
        assert [h.path for h in ix.search("parse_config", limit=1, mode="bm25", language="python",
                                          path_globs=["tests/"])] == ["tests/test_conf.py"]


def test_definitions_and_chunk_lookups():
    assert symbol_names("Stack.push, Stack.pop") == {"Stack.push", "push", "Stack.pop", "pop"}
    assert symbol_names("") == set()


def test_store_choice_and_filter_languages():
    assert not is_milvus_uri(None) and is_milvus_uri("http://milvus.internal:19530") and is_milvus_uri("x/milvus.db")
    assert is_milvus_lite("x/milvus.db") and not is_milvus_lite("https://zilliz.example:443")
    flt = ChunkFilter(language="go", exclude_tests=True, paths=("a.py",), negate_paths=True, exclude_ids=("x",))
    assert flt.expr() == 'language == "go" and is_test == false and path not in ["a.py"] and id not in ["x"]'
    cond, args = flt.sql("c")
    assert cond.startswith("c.language = ? AND c.is_test = 0 AND c.path NOT IN") and args == ["go", '["a.py"]', '["x"]']
    assert ChunkFilter().expr() == "" and ChunkFilter().sql() == ("1", [])


def test_sqlite_and_milvus_lite_agree_through_the_protocol(tmp_path):
    pytest.importorskip("milvus_lite")
    root = tmp_path / "repo"
    write_tree(root)
    emb = BagOfWords()
    build_index(root, config=IndexConfig(model="bag-of-words"), embedder=emb)
    milvus_dir = tmp_path / "milvus-index"
    build_index(root, milvus_dir, config=IndexConfig(model="bag-of-words", store_uri=str(tmp_path / "milvus.db")),
                embedder=emb)
    with open_index(root, embedder=emb) as lite, open_index(milvus_dir, embedder=emb) as mil:
        assert mil.status()["engine"] == "milvus" and mil.store.count() == lite.store.count()
        assert {r["id"] for r in mil.store.rows(["path"])} == {r["id"] for r in lite.store.rows(["path"])}
        q = emb.encode(["sum of values handler"])[0]
        for flt in (ChunkFilter(), ChunkFilter(language="javascript"), ChunkFilter(paths=("src/m1.py",), negate_paths=True)):
            a, b = lite.store.dense(q, 4, flt), mil.store.dense(q, 4, flt)  # FLAT on Milvus Lite: exact too
            np.testing.assert_allclose([r["distance"] for r in a], [r["distance"] for r in b], atol=2e-3)
        for query in ("parse configs", "load yaml", "handler request body"):
            a, b = lite.store.bm25(query, 5, ChunkFilter()), mil.store.bm25(query, 5, ChunkFilter())
            assert {r["id"] for r in a} == {r["id"] for r in b}, query  # the same hits; scores differ (idf variants)
        for ix in (lite, mil):
            assert [h.path for h in ix.search("parse configs", limit=5, mode="bm25", exclude_tests=True)] == ["src/conf.py"]
            assert ix.search("parse_config", limit=1)[0].path in ("src/conf.py", "tests/test_conf.py")
            like = ix.like("src/m1.py", 1, limit=3)
            assert like and all(r.path != "src/m1.py" for r in like)
        assert [h.path for h in mil.search("compute_5", limit=3)][0] == [h.path for h in lite.search("compute_5", limit=3)][0]
