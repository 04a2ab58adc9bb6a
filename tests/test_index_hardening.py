"""Regression tests of the adversarial run against `codesift index / search / status` (issue 14).

They go through the CLI entry point and CodeIndex's public behaviour only, so they hold whichever
store the index uses.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

from test_model_hardening import assert_one_error_line, run_main


def make_repo(tmp_path):
    """A two-file source tree (``src/conf.py``, ``src/stack.py``) under ``tmp_path``."""
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src/conf.py").write_text("def parse_config(path):\n    return open(path).read()\n")
    (root / "src/stack.py").write_text("class Stack:\n    def push(self, item):\n        self.items.append(item)\n")
    return root


@pytest.fixture()
def repo(tmp_path):
    return make_repo(tmp_path)


def index(root, model, monkeypatch, capsys, *extra) -> dict:
    code, out, err = run_main(["index", str(root), "--model", str(model), "--json", *extra], monkeypatch, capsys)
    assert code == 0, err
    return json.loads(out)


# -- finding 2: a file name that is not valid UTF-8 --------------------------------------------------------
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_a_file_name_that_is_not_utf8_is_skipped_with_a_reason(repo, tiny_qwen_dir, monkeypatch, capsys):
    bad = os.path.join(os.fsencode(repo / "src"), b"bad_\xff.py")
    with open(bad, "wb") as fh:
        fh.write(b"def f(): pass\n")
    os.makedirs(os.path.join(os.fsencode(repo), b"dir_\xfe"))
    with open(os.path.join(os.fsencode(repo), b"dir_\xfe", b"x.py"), "wb") as fh:
        fh.write(b"def g(): pass\n")
    report = index(repo, tiny_qwen_dir, monkeypatch, capsys)
    assert report["files_changed"] == 2 and report["chunks_total"] >= 2  # the rest is indexed
    assert "not valid UTF-8" in report["skipped"]["src/bad_\\xff.py"]
    assert "dir_\\xfe" in report["skipped"]
    code, out, _err = run_main(["status", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["staleness"]["stale"] is False


# -- finding 5: the index records the model that was loaded --------------------------------------------------
def test_the_model_from_the_environment_is_recorded(repo, tiny_qwen_dir, monkeypatch, capsys):
    monkeypatch.setenv("CODESIFT_MODEL", str(tiny_qwen_dir))
    code, _, err = run_main(["index", str(repo)], monkeypatch, capsys)
    assert code == 0, err
    monkeypatch.delenv("CODESIFT_MODEL")
    code, out, err = run_main(["status", str(repo), "--json"], monkeypatch, capsys)
    assert json.loads(out)["model"] == str(tiny_qwen_dir)
    code, out, err = run_main(["search", "parse config", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0, err  # a later shell without the variable can search
    assert json.loads(out)[0]["path"] == "src/conf.py"
    (repo / "src/new.py").write_text("def fresh():\n    return 1\n")
    report = index(repo, tiny_qwen_dir, monkeypatch, capsys)  # naming the same model is not "a different model"
    assert report["files_changed"] == 1


def test_aliases_of_one_model_are_one_name():
    from codesift.model.loading import canonical_model_name

    names = {canonical_model_name(n) for n in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")}
    assert names == {"sentence-transformers/all-MiniLM-L6-v2"}
    assert {canonical_model_name(n) for n in ("offline", "codesift-mini", "codesift/codesift-mini")} == {"codesift-mini"}


def test_a_different_model_is_refused_with_rebuild_named(repo, tiny_qwen_dir, tiny_bert_dir, monkeypatch, capsys):
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    code, _, err = run_main(["index", str(repo), "--model", str(tiny_bert_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, "--rebuild")


# -- finding 4: a corrupt index is reported in one line, and rebuilt or `--rebuild` named ---------------------
def test_a_corrupt_manifest_names_rebuild(repo, tiny_qwen_dir, monkeypatch, capsys):
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    manifest = repo / ".codesift" / "manifest.sqlite"
    for extra in ("-wal", "-shm"):
        (repo / ".codesift" / f"manifest.sqlite{extra}").unlink(missing_ok=True)
    manifest.write_bytes(b"this is not a database" * 100)
    for args in (["search", "parse config", str(repo)], ["status", str(repo)], ["index", str(repo)]):
        code, _, err = run_main(args, monkeypatch, capsys)
        assert_one_error_line(code, err, "corrupt", "--rebuild")
    report = index(repo, tiny_qwen_dir, monkeypatch, capsys, "--rebuild")
    assert report["files_changed"] == 2


# -- finding 12: smaller findings ------------------------------------------------------------------------
def test_piped_search_output_escapes_tabs_and_newlines_in_paths(repo, tiny_qwen_dir, monkeypatch, capsys):
    (repo / "src" / "odd\tname\n.py").write_text("def parse_config_odd(path):\n    return path\n")
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    code, out, err = run_main(["search", "parse config odd", str(repo), "--mode", "bm25"], monkeypatch, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(ln.split("\t")) == 3 for ln in lines), lines  # path:lines, score, symbol
    assert any(ln.startswith("src/odd\\tname\\n.py:1-2\t") for ln in lines), lines


@pytest.mark.parametrize("option, value", [("--dense-weight", "nan"), ("--rrf-k", "inf"), ("--bm25-weight", "-1")])
def test_fusion_knobs_must_be_finite(repo, tiny_qwen_dir, monkeypatch, capsys, option, value):
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    code, _, err = run_main(["search", "parse", str(repo), option, value], monkeypatch, capsys)
    assert_one_error_line(code, err, option)


def test_a_moved_repository_names_rebuild(repo, tiny_qwen_dir, monkeypatch, capsys, tmp_path):
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    moved = tmp_path / "moved"
    shutil.move(repo, moved)
    code, _, err = run_main(["index", str(moved)], monkeypatch, capsys)
    assert_one_error_line(code, err, "--rebuild")
    code, _, err = run_main(["search", "parse", str(moved)], monkeypatch, capsys)
    assert_one_error_line(code, err, "--rebuild")
    report = index(moved, tiny_qwen_dir, monkeypatch, capsys, "--rebuild")
    assert report["files_changed"] == 2


def test_latin1_files_decode_as_western_text_and_random_bytes_are_binary(tmp_path):
    from codesift.data.files import read_source

    latin = tmp_path / "gruss.py"
    latin.write_bytes('# Ein Kommentar über Größe\ndef gruss(name):\n    return "Grüße, " + name  # café\n'
                      .encode("latin-1"))
    text, reason = read_source(latin)
    assert reason is None and "Grüße" in text and "über" in text and "café" in text
    cp1252 = tmp_path / "quotes.py"
    cp1252.write_bytes('s = "\u201cquoted\u201d \u2013 5 \u20ac"\n'.encode("cp1252"))
    assert "\u201cquoted\u201d \u2013 5 \u20ac" in read_source(cp1252)[0]
    blob = tmp_path / "blob.py"  # no NUL and no control bytes, but not text
    blob.write_bytes(bytes(np.random.default_rng(0).integers(32, 256, 20_000, dtype=np.uint8)))
    assert read_source(blob) == (None, "binary")


# -- finding 3: a store rolled back behind the manifest is detected, reported and repaired ------------------
def test_a_rolled_back_index_reports_stale_and_catches_up(repo, tiny_qwen_dir, monkeypatch, capsys, tmp_path):
    """The index is one SQLite file: restored from an older copy it is consistent, only behind the tree."""
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    db = repo / ".codesift" / "manifest.sqlite"
    saved = tmp_path / "index-save.sqlite"
    import sqlite3

    src, dst = sqlite3.connect(db), sqlite3.connect(saved)
    src.backup(dst)  # a consistent copy, WAL included
    src.close(), dst.close()
    (repo / "src/later.py").write_text("def tokenize_later_words(text):\n    return text.split()\n")
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    for extra in ("-wal", "-shm"):
        (repo / ".codesift" / f"manifest.sqlite{extra}").unlink(missing_ok=True)
    shutil.copy2(saved, db)  # roll the whole index back to the first save

    code, out, err = run_main(["status", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0, err
    st = json.loads(out)
    assert st["problem"] is None and st["staleness"]["stale"] and st["staleness"]["added"] == 1
    report = index(repo, tiny_qwen_dir, monkeypatch, capsys)
    assert report["files_changed"] == 1 and report["chunks_embedded"] == 1
    code, out, err = run_main(["search", "tokenize later words", str(repo), "--json", "--mode", "bm25"],
                              monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)[0]["path"] == "src/later.py"


def test_an_index_whose_chunks_are_missing_is_reported_and_repaired(repo, tiny_qwen_dir, monkeypatch, capsys):
    """Chunks lost while the manifest still lists them (e.g. an index from before the SQLite store, or a damaged
    store): search names the repair, status says so, and `codesift index` rewrites them from the embedding cache."""
    import sqlite3

    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    db = sqlite3.connect(repo / ".codesift" / "manifest.sqlite")
    with db:
        for table in ("chunk_bags", "term_postings", "term_segments", "chunk_vectors", "chunk_symbols", "chunks"):
            db.execute(f"DELETE FROM {table}")
    db.close()
    old = repo / ".codesift"  # what the store before SQLite left beside the manifest: gone once repaired
    (old / "vectors.npz").write_bytes(b"old mirror")
    (old / "milvus.db").write_bytes(b"old store")
    code, _, err = run_main(["search", "parse config", str(repo)], monkeypatch, capsys)
    assert_one_error_line(code, err, "manifest lists", "codesift index")
    code, out, err = run_main(["status", str(repo), "--json"], monkeypatch, capsys)
    st = json.loads(out)
    assert st["problem"] and st["staleness"]["stale"] is True
    report = index(repo, tiny_qwen_dir, monkeypatch, capsys)  # repaired from the embedding cache
    assert report["chunks_embedded"] == 0 and report["files_changed"] == 2
    assert not (old / "vectors.npz").exists() and not (old / "milvus.db").exists()
    code, out, err = run_main(["search", "parse config", str(repo), "--json", "--mode", "bm25"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)[0]["path"] == "src/conf.py"
