"""The chunk stores behind one protocol: the SQLite store (exact dense search over an in-memory matrix kept current
by generation, BM25 over segmented postings, filters before the cut) and the Milvus store (Milvus Lite here: no server can run in the
test suite), which must agree with it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codesift.index import IndexConfig, build_index, open_index, sqlite_store
from codesift.index.config import VECTORS
from codesift.index.milvus_store import filter_expr
from codesift.index.sqlite_store import SQLiteStore, filter_sql
from codesift.index.store import ChunkFilter, is_milvus_lite, is_milvus_uri, keyword_text, symbol_names
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


@pytest.mark.parametrize("vectors", VECTORS)
def test_dense_is_exact_and_filters_apply_before_the_cut(tmp_path, vectors):
    """Both layouts: binary rows rescore every row here (fewer than ``BINARY_DEPTH``), so both are exact."""
    root = tmp_path / "repo"
    write_tree(root)
    emb = BagOfWords()
    build_index(root, config=IndexConfig(model="bag-of-words", vectors=vectors), embedder=emb)
    with open_index(root, embedder=emb) as ix:
        assert isinstance(ix.store, SQLiteStore) and ix.status()["engine"] == "sqlite"
        assert ix.store.vectors == ix.status()["vectors"] == vectors
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


def test_bm25_scores_are_fts5s_formula_over_codesift_terms_and_honour_filters(tmp_path):
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


def synthetic_rows(start: int, n: int, dim: int = 8, path: str | None = None) -> list[dict]:
    """``n`` rows of a store, chunk ``start`` onwards: words drawn from a small vocabulary, so terms are shared."""
    rng = np.random.default_rng(start)
    vocab = ["parse", "config", "read", "write", "file", "path", "cache", "token", "stream", "socket", "retry", "error",
             "handler", "queue"]
    rows = []
    for i in range(start, start + n):
        text = " ".join(rng.choice(vocab, int(rng.integers(1, 12))))
        v = rng.standard_normal(dim).astype(np.float32)
        rows.append({"id": f"c{i}", "path": path or f"f{i // 3}.py", "language": "python", "is_test": i % 5 == 0,
                     "symbol": f"f{i}", "kind": "function", "start_line": 1, "end_line": 2, "content_hash": f"{i}",
                     "text": text, "terms": keyword_text(text), "vector": v / np.linalg.norm(v)})
    return rows


def ranking(store, query, flt=ChunkFilter(), limit=20):
    """The scores of the top ``limit``, best first, and the ids above the last score (a tie there may go either way)."""
    hits = [(r["id"], round(r["distance"], 4)) for r in store.bm25(query, limit, flt)]
    return [d for _, d in hits], {i for i, d in hits if hits and d > hits[-1][1]}


def test_segments_merge_and_drop_dead_postings_without_changing_scores(tmp_path):
    """Many small writes (a segment each) and rewrites of the same files: the segments merge (few remain, dead
    postings go), and every ranking equals the one of a store written in one go with the final rows."""
    from codesift.index import sqlite_terms
    from codesift.index.manifest import Manifest

    store = SQLiteStore(Manifest(tmp_path / "a.sqlite"), 8, 4)
    final: dict[str, list[dict]] = {}
    for step in range(120):
        path = f"f{step % 30}.py"  # 30 files, each rewritten four times
        rows = synthetic_rows(step * 10, 1 + step % 7, path=path)
        store.replace_files([path], rows)
        final[path] = rows
    segments = store.db.execute("SELECT segment, chunks FROM term_segments").fetchall()
    alive = store.count()
    assert len(segments) < sqlite_terms.FANOUT * 4 and sum(c for _, c in segments) <= 2 * alive + 1000
    sqlite_terms.merge(store.db, [s for s, _ in segments])  # everything in one segment: no dead posting left
    held = {int(x) for (b,) in store.db.execute("SELECT seqs FROM term_postings") for x in np.frombuffer(b, np.int64)}
    assert held <= {r[0] for r in store.db.execute("SELECT seq FROM chunks")}

    ref = SQLiteStore(Manifest(tmp_path / "b.sqlite"), 8, 4)
    ref.replace_files([], [r for rows in final.values() for r in rows])
    for query in ("parse config", "socket retry error", "queue queue handler", "absent"):
        assert ranking(store, query) == ranking(ref, query)
        flt = ChunkFilter(exclude_tests=True, paths=("f1.py", "f2.py", "f3.py"))
        assert ranking(store, query, flt) == ranking(ref, query, flt)
        assert all(not r["path"].startswith("f0") for r in store.bm25(query, 50, ChunkFilter(paths=("f0.py",),
                                                                                             negate_paths=True)))


@pytest.mark.parametrize("vectors", VECTORS)
def test_rows_in_memory_follow_edits_in_place_and_compact_dead_ones(tmp_path, vectors):
    """After the first read, an edit appends into spare capacity and marks the old rows dead (the matrix is not
    copied); once a quarter of the rows are dead they are compacted; every answer equals a fresh read's, and a
    float16 store's (binary rows: every row rescored here)."""
    from codesift.index.manifest import Manifest

    path = tmp_path / "s.sqlite"
    store = SQLiteStore(Manifest(path), 8, 4, vectors)
    for f in range(40):
        store.replace_files([], synthetic_rows(f * 5, 5, path=f"f{f}.py"))
    q = synthetic_rows(999, 1)[0]["vector"]
    store.dense(q, 5, ChunkFilter())
    rows = store._rows
    held = "bits" if vectors == "binary" else "vectors"
    buffer = rows._cols[held]
    store.replace_files(["f3.py"], synthetic_rows(500, 5, path="f3.py"))  # one file edited
    got = store.dense(q, 200, ChunkFilter())
    assert rows._cols[held] is buffer and rows.dead == 5 and len(got) == 200
    fresh = SQLiteStore(Manifest(path), 8, 4, vectors)
    assert [h["id"] for h in got] == [h["id"] for h in fresh.dense(q, 200, ChunkFilter())]
    want = SQLiteStore(Manifest(path), 8, 4).dense(q, 200, ChunkFilter())  # float16 query there: near-ties may swap
    np.testing.assert_allclose([h["distance"] for h in got], [h["distance"] for h in want], atol=2e-3)
    assert ranking(store, "parse config") == ranking(fresh, "parse config")
    store.delete_paths([f"f{f}.py" for f in range(10, 30)])  # half the rows go: compacted
    got = store.dense(q, 200, ChunkFilter())
    assert rows.dead == 0 and rows.n == store.count() == 100 and len(got) == 100
    assert [h["id"] for h in got] == [h["id"] for h in SQLiteStore(Manifest(path), 8, 4).dense(q, 200, ChunkFilter())]


def embedding_like_rows(n: int, dim: int, seed: int = 0) -> list[dict]:
    """Unit vectors shaped like a code model's: a direction all rows share, 30 topics, and each chunk's own part."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(dim)
    topics = rng.standard_normal((30, dim)) / np.sqrt(dim)
    vecs = (0.6 * shared / np.linalg.norm(shared) + topics[rng.integers(0, 30, n)]
            + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim))
    rows = synthetic_rows(0, n, dim=dim)
    for r, v in zip(rows, vecs):
        r["vector"] = (v / np.linalg.norm(v)).astype(np.float32)
    return rows


def test_binary_rows_find_the_exact_top_hits_and_follow_updates(tmp_path, monkeypatch):
    """Sign bits pick 100 of 600 rows by Hamming distance (10 x the limit: the depth cut down for the test), those are rescored with their float16 vectors: the top 10
    (ids and scores) are the exact ones (stored float16 vectors, float32 arithmetic), with and without a filter, for
    queries near a chunk, before and after edits, and the float16 store's scores within its rounding; the
    bits take a sixteenth of the float16 matrix; two-stage (the small dim's bits) scores its hits exactly."""
    from codesift.index.manifest import Manifest

    monkeypatch.setattr(sqlite_store, "BINARY_DEPTH", 50)
    monkeypatch.setattr(sqlite_store, "BINARY_FACTOR", 10)
    rows = embedding_like_rows(600, 128)
    for r in rows:
        r["path"] = f"f{int(r['id'][1:]) // 6}.py"
    exact, binary = (SQLiteStore(Manifest(tmp_path / f"{v}.sqlite"), 128, 32, v) for v in VECTORS)
    rng = np.random.default_rng(1)

    def same_top_hits():
        stored = list(binary.rows(["vector", "is_test"]))  # float16 as stored, in float32 arithmetic: the truth
        vecs = np.stack([r["vector"] for r in stored])
        for i in rng.choice(len(rows), 20, replace=False):
            q = rows[i]["vector"] + 0.7 * rng.standard_normal(128) / np.sqrt(128)
            q = (q / np.linalg.norm(q)).astype(np.float32)
            for flt, keep in ((ChunkFilter(), np.ones(len(stored), bool)),
                              (ChunkFilter(exclude_tests=True), np.array([not r["is_test"] for r in stored]))):
                scores = np.where(keep, vecs @ q, -np.inf)
                truth = [stored[j]["id"] for j in np.argsort(-scores, kind="stable")[:10]]
                got = binary.dense(q, 10, flt)
                assert [h["id"] for h in got] == truth
                np.testing.assert_allclose([h["distance"] for h in got], np.sort(scores)[::-1][:10], atol=1e-5)
                want = exact.dense(q, 10, flt)  # the float16 scan casts the query to float16: near-ties may swap
                np.testing.assert_allclose([h["distance"] for h in got], [h["distance"] for h in want], atol=2e-3)
        return q

    for store in (exact, binary):
        store.replace_files([], rows)
    same_top_hits()
    assert binary._rows.bits.nbytes * 16 == exact._rows.vectors.nbytes
    edited = embedding_like_rows(60, 128, seed=2)  # ten files rewritten, ten deleted
    for j, r in enumerate(edited):
        r.update(id=f"e{j}", path=f"f{j // 6}.py")
    for store in (exact, binary):
        store.replace_files([f"f{f}.py" for f in range(10)], edited)
        store.delete_paths([f"f{f}.py" for f in range(10, 20)])
    q = same_top_hits()
    assert binary._rows.dead == 120 and binary._rows.n == 660  # not yet a quarter dead: not compacted
    vecs = {r["id"]: r["vector"] for r in binary.rows(["vector"])}
    two = binary.dense(q, 10, ChunkFilter(), two_stage=True)
    assert len(two) == 10 and not {h["id"] for h in two} & {f"c{i}" for i in range(120)}  # rewritten, deleted
    np.testing.assert_allclose([h["distance"] for h in two], [vecs[h["id"]] @ q for h in two], atol=1e-4)
    assert len(binary.dense(q, 300, ChunkFilter())) == 300  # a limit past the depth: as many candidates
    with pytest.raises(ValueError, match="float16, binary"):
        SQLiteStore(Manifest(tmp_path / "x.sqlite"), 8, 4, "int4")


def to_fts5_layout(path) -> None:
    """Rewrite a store's SQLite file in the layout of the FTS5 version: one chunk_terms table, no postings."""
    import sqlite3

    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE VIRTUAL TABLE chunk_terms USING fts5 (terms, tokenize = \"unicode61 tokenchars '_'\")")
        db.execute("INSERT INTO chunk_terms (rowid, terms) SELECT seq, terms FROM chunk_bags")
        for table in ("chunk_bags", "term_postings", "term_segments"):
            db.execute(f"DROP TABLE {table}")
    db.close()


def test_an_fts5_index_moves_its_terms_to_postings_once(tmp_path):
    """An index written by the FTS5 version of the store opens with the same BM25 ranking, its terms moved over."""
    from codesift.index.manifest import Manifest

    path = tmp_path / "old.sqlite"
    store = SQLiteStore(Manifest(path), 8, 4)
    store.replace_files([], synthetic_rows(0, 60))
    want = ranking(store, "parse config error")
    store.manifest.close()
    to_fts5_layout(path)
    moved = SQLiteStore(Manifest(path), 8, 4)
    assert ranking(moved, "parse config error") == want
    assert not moved.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_terms'").fetchone()
    assert len(list(moved.rows(["terms"]))) == 60


def test_definitions_and_chunk_lookups():
    assert symbol_names("Stack.push, Stack.pop") == {"Stack.push", "push", "Stack.pop", "pop"}
    assert symbol_names("") == set()


def test_store_choice_and_filter_languages():
    assert not is_milvus_uri(None) and is_milvus_uri("http://milvus.internal:19530") and is_milvus_uri("x/milvus.db")
    assert is_milvus_lite("x/milvus.db") and not is_milvus_lite("https://zilliz.example:443")
    flt = ChunkFilter(language="go", exclude_tests=True, paths=("a.py",), negate_paths=True, exclude_ids=("x",))
    assert filter_expr(flt) == 'language == "go" and is_test == false and path not in ["a.py"] and id not in ["x"]'
    cond, args = filter_sql(flt, "c")
    assert cond.startswith("c.language = ? AND c.is_test = 0 AND c.path NOT IN") and args == ["go", '["a.py"]', '["x"]']
    assert filter_expr(ChunkFilter()) == "" and filter_sql(ChunkFilter()) == ("1", [])


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
        top = [next(h.path for h in store.search("compute_5", limit=3)) for store in (mil, lite)]
        assert top[0] == top[1]


@pytest.fixture(params=["sqlite", "milvus-lite"])
def engine(request, tmp_path):
    """An empty store of each engine (8-dim vectors, 4-dim small ones), closed afterwards."""
    from codesift.index.manifest import Manifest

    if request.param == "sqlite":
        store = SQLiteStore(Manifest(tmp_path / "s.sqlite"), 8, 4)
    else:
        pytest.importorskip("milvus_lite")
        from codesift.index.milvus_store import MilvusStore

        store = MilvusStore(str(tmp_path / "m.db"), "chunks", 8, 4)
    yield store
    store.close()


def protocol_rows(start: int, n: int, path: str | None = None) -> list[dict]:
    rows = synthetic_rows(start, n, path=path)
    for r in rows:
        r["vector_small"] = r["vector"][:4] / np.linalg.norm(r["vector"][:4])
    return rows


def test_every_store_method_means_the_same_on_both_engines(engine):
    """The Store protocol, method by method, on SQLite and Milvus Lite: the same answers (set-wise where the
    engines may order ties differently)."""
    rows = protocol_rows(0, 12)
    rows[1].update(symbol="Stack.push, Stack.pop", path="src/stack.py")  # a merged chunk: two definitions
    rows[2].update(symbol="parse_config", path="src/conf.py")
    engine.replace_files([], rows)
    engine.flush()
    assert isinstance(engine.describe(), str) and engine.count() == 12
    assert engine.paths() == {r["path"] for r in rows}
    assert {r["id"] for r in engine.rows(["path"])} == {r["id"] for r in rows}
    got = engine.get(["c3", "c4", "absent"], ["path", "symbol"])
    assert set(got) == {"c3", "c4"} and got["c3"]["path"] == rows[3]["path"] and got["c4"]["symbol"] == "f4"
    assert {r["id"] for r in engine.chunks_of("src/stack.py")} == {"c1"}

    q = rows[5]["vector"]
    top = engine.dense(q, 3, ChunkFilter())
    assert top[0]["id"] == "c5" and abs(top[0]["distance"] - 1.0) < 2e-3 and len(top) == 3
    assert {"path", "language", "symbol", "kind", "start_line", "end_line"} <= set(top[0])
    assert "c5" not in {r["id"] for r in engine.dense(q, 3, ChunkFilter(exclude_ids=("c5",)))}
    assert engine.dense(q, 3, ChunkFilter(), two_stage=True, depth=100)[0]["id"] == "c5"
    assert all(not rows[int(r["id"][1:])]["is_test"] for r in engine.dense(q, 12, ChunkFilter(exclude_tests=True)))

    hits = engine.bm25("parse config", 12, ChunkFilter(exclude_tests=True))
    want = {r["id"] for r in rows if not r["is_test"] and {"parse", "config"} & set(r["terms"].split())}
    assert {h["id"] for h in hits} == want and all(h["distance"] > 0 for h in hits)

    for names, ids in (({"pop"}, {"c1"}), ({"Stack.push"}, {"c1"}), ({"Stack"}, set()), ({"parse_config"}, {"c2"}),
                       ({"f7", "push"}, {"c1", "c7"}), ({"parseconfig"}, set())):
        assert {r["id"] for r in engine.defining(names, ChunkFilter(), 10)} == ids, names
    assert engine.defining({"pop"}, ChunkFilter(paths=("src/stack.py",), negate_paths=True), 10) == []
    assert len(engine.defining({"f3", "f4", "f6"}, ChunkFilter(), 2)) == 2

    engine.replace_files(["src/stack.py"], protocol_rows(100, 2, path="src/stack.py"))
    engine.delete_paths(["src/conf.py"])
    engine.flush()
    assert engine.count() == 12 and "src/conf.py" not in engine.paths()
    assert {r["id"] for r in engine.chunks_of("src/stack.py")} == {"c100", "c101"}
    assert engine.defining({"pop"}, ChunkFilter(), 10) == []
    assert engine.damage() is None and engine.repair() == []
