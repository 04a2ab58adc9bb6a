"""The in-memory vector mirror (vectors.npz): exact dense search, filters before the cut, kept in step with the store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from codesift.index import IndexConfig, build_index, open_index
from codesift.index.indexer import mirror_enabled
from codesift.index.vectors import META_KEY, SIDECAR, ChunkFilter, VectorMirror


@pytest.fixture(scope="module")
def emb(tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    return Embedder(str(tiny_qwen_dir))


def write_tree(root, n=12):
    for i in range(n):
        sub = "web" if i % 4 == 0 else "src"
        ext = "js" if sub == "web" else "py"
        body = (f"function handler{i}(req) {{ return req.body + {i}; }}\n" if ext == "js"
                else f"def compute_{i}(values):\n    return sum(v * {i} for v in values)\n")
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / f"m{i}.{ext}").write_text(body)


def mirror_matches_store(ix) -> set[str]:
    """The mirror holds exactly the store's rows, with the store's vectors (float16 tolerance)."""
    mirror = ix.vector_mirror()
    rows = {r["id"]: r for r in ix.store.query('path != ""', output_fields=["path", "language", "is_test", "vector"])}
    assert set(mirror.ids.tolist()) == set(rows)
    for n, i in enumerate(mirror.ids.tolist()):
        assert mirror.paths[mirror.path_codes[n]] == rows[i]["path"]
        assert mirror.languages[mirror.language_codes[n]] == rows[i]["language"]
        np.testing.assert_allclose(mirror.vectors[n].astype(np.float32), rows[i]["vector"], atol=2e-3)
    assert ix.manifest.get_meta()[META_KEY] == mirror.token == VectorMirror.token_on_disk(ix.index_dir)
    return set(rows)


def test_mirror_top_k_is_exact_and_filters_before_the_cut(tmp_path, emb):
    root = tmp_path / "repo"
    write_tree(root)
    build_index(root, config=IndexConfig(model="tiny"), embedder=emb)
    with open_index(root, embedder=emb) as ix:
        mirror_matches_store(ix)
        mirror = ix.vector_mirror()
        q = emb.encode(["sum of values"], task="nl2code", role="query")[0]
        for flt in (ChunkFilter(), ChunkFilter(language="javascript"), ChunkFilter(paths=("src/m1.py", "src/m2.py")),
                    ChunkFilter(paths=("src/m1.py",), negate_paths=True, exclude_tests=True)):
            got = mirror.top_k(q, 3, flt)
            want = ix.store.dense(q, 3, flt.expr())  # FLAT store index: exact
            assert [i for i, _ in got] == [r["id"] for r in want] or \
                np.allclose([s for _, s in got], [r["distance"] for r in want], atol=2e-3)  # fp16 ties
        js = mirror.top_k(q, 50, ChunkFilter(language="javascript"))
        assert len(js) == 3  # 3 of 12 files; the cut never dropped a match in favour of a filtered-out row
        assert mirror.top_k(q, 5, ChunkFilter(language="cobol")) == []
        res = ix.search("sum of values", limit=2, mode="dense", path_globs=["!src/"])
        assert res and all(r.path.startswith("web/") and r.snippet for r in res)


def test_mirror_follows_incremental_updates_and_ignores_a_stale_sidecar(tmp_path, emb):
    root = tmp_path / "repo"
    write_tree(root)
    build_index(root, config=IndexConfig(model="tiny"), embedder=emb)
    index_dir = root / ".codesift"
    old = tmp_path / "old.npz"
    shutil.copy(index_dir / SIDECAR, old)

    (root / "src/m1.py").write_text("def renamed_thing(x):\n    return x\n")      # modified
    (root / "src/m2.py").unlink()                                                  # deleted
    (root / "src/m3.py").rename(root / "src/moved.py")                             # renamed
    r = build_index(root, embedder=emb)
    assert r.files_changed == 2 and r.files_deleted == 2
    with open_index(root, embedder=emb) as ix:
        ids = mirror_matches_store(ix)
        paths = {ix.vector_mirror().paths[c] for c in ix.vector_mirror().path_codes}
        assert "src/m2.py" not in paths and "src/moved.py" in paths

    shutil.copy(old, index_dir / SIDECAR)  # a sidecar that no longer matches the store must not be used
    with open_index(root, embedder=emb) as ix:
        assert VectorMirror.token_on_disk(index_dir) != ix.manifest.get_meta()[META_KEY]
        assert ix.status(check_staleness=False)["vector_mirror"] == "rebuild pending"
        assert mirror_matches_store(ix) == ids  # rebuilt from the store
        assert ix.status(check_staleness=False)["vector_mirror"] == "ready"
        assert {h.path for h in ix.search("renamed thing", limit=20, mode="dense")} >= {"src/m1.py"}
        assert "src/m2.py" not in {h.path for h in ix.search("compute", limit=20, mode="dense")}

    (index_dir / SIDECAR).unlink()  # a missing sidecar is rebuilt by the next run too
    assert build_index(root, embedder=emb).chunks_embedded == 0
    assert VectorMirror.token_on_disk(index_dir) is not None


def test_mirror_only_for_a_local_store(tmp_path):
    assert mirror_enabled(tmp_path, IndexConfig())
    assert not mirror_enabled(tmp_path, IndexConfig(store_uri="http://milvus.internal:19530"))
    assert mirror_enabled(tmp_path, IndexConfig(store_uri="http://milvus.internal:19530", vector_mirror=True))
    assert not mirror_enabled(tmp_path, IndexConfig(vector_mirror=False))
    expr = ChunkFilter(language="go", exclude_tests=True, paths=("a.py",), negate_paths=True, exclude_ids=("x",)).expr()
    assert expr == 'language == "go" and is_test == false and path not in ["a.py"] and id not in ["x"]'
    assert ChunkFilter().expr() == ""


def test_bm25_postings_incremental_equals_fresh_and_scores_like_bm25():
    from codesift.index.bm25 import Postings

    docs = ["pars config file", "pars pars json", "stack push item", "http client retry"]
    fresh = Postings.build(docs[1:] + ["retry backoff"])
    inc = Postings.build(["retry backoff"], base=Postings.build(docs), keep=np.array([False, True, True, True]))
    for q in (["pars"], ["retry", "backoff"], ["push", "json"], ["absent"]):
        np.testing.assert_allclose(inc.scores(q), fresh.scores(q), rtol=1e-6)
    s = fresh.scores(["pars"])
    assert s[0] > 0 and s[1:].sum() == 0  # only the row holding the term scores
    n, df, tf, dl, avg = 4, 1, 2, 3, 11 / 4  # "pars pars json": tf 2, length 3
    want = np.log(1 + (n - df + 0.5) / (df + 0.5)) * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avg))
    assert abs(s[0] - want) < 1e-5


def test_mirror_bm25_agrees_with_the_store_and_honours_filters(tmp_path, emb):
    root = tmp_path / "repo"
    write_tree(root)
    (root / "src/conf.py").write_text("def parse_config(path):\n    return load_yaml(path)\n")
    (root / "tests").mkdir()
    (root / "tests/test_conf.py").write_text("def test_parse_config():\n    assert parse_config('a.yaml')\n")
    build_index(root, config=IndexConfig(model="tiny"), embedder=emb)
    with open_index(root, embedder=emb) as ix:
        mirror = ix.vector_mirror()
        # Milvus' BM25 over the same terms: the same hits, scores within 35% (milvus-lite 2.5, the pinned version,
        # keeps its own corpus statistics and counts lengths differently: up to 27% apart on two-term queries here).
        for query in ("parse configs", "load yaml", "handler request body"):
            got, want = mirror.bm25_top_k(query, 5), ix.store.bm25(query, 5)
            assert {i for i, _ in got} == {r["id"] for r in want}, query
            np.testing.assert_allclose(sorted(s for _, s in got), sorted(abs(r["distance"]) for r in want), rtol=0.35)
        assert [i for i, _ in mirror.bm25_top_k("parse configs", 2)] == [r["id"] for r in ix.store.bm25("parse configs", 2)]
        hits = ix.search("parse configs", limit=5, mode="bm25", exclude_tests=True)
        assert [h.path for h in hits] == ["src/conf.py"]  # the test file is masked out, nothing else matches
        assert ix.search("zzz_absent_term", mode="bm25") == []
        assert [h.path for h in ix.search("parse configs", limit=1)] in (["src/conf.py"], ["tests/test_conf.py"])


def test_first_run_over_a_store_with_leftover_rows_still_mirrors_the_store(tmp_path, emb):
    root = tmp_path / "repo"
    write_tree(root)
    build_index(root, config=IndexConfig(model="tiny"), embedder=emb)
    (root / ".codesift" / "manifest.sqlite").unlink()  # the manifest is lost, the store keeps every row
    (root / "src/m1.py").unlink()
    build_index(root, config=IndexConfig(model="tiny"), embedder=emb)
    with open_index(root, embedder=emb) as ix:
        mirror_matches_store(ix)
