"""Regression tests of issue 23's findings on files a user hands codesift: model weights, pair and BEIR
files, and a read-only index. Each goes through the CLI entry point: one ``error:`` line, no traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from test_eval_runner import write_beir
from test_index_hardening import make_repo
from test_model_hardening import assert_one_error_line, run_main


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path)


# -- model weights that cannot be read ------------------------------------------------------------------------
def _copy_model(tiny_qwen_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_qwen_dir, model)
    return model, model / "model.safetensors"


def _damage(weights, how: str) -> None:
    data = weights.read_bytes()
    if how == "truncated":
        weights.write_bytes(data[: len(data) // 2])  # a download cut short
    elif how == "not safetensors":
        weights.write_bytes(b"<html>rate limited</html>" * 40)  # a proxy's error page saved as the file
    else:
        weights.chmod(0)


@pytest.mark.parametrize("how", ["truncated", "not safetensors", "unreadable"])
@pytest.mark.parametrize("command", ["embed", "index", "search", "eval"])
def test_damaged_or_unreadable_weights_are_one_line_naming_the_file(command, how, repo, tiny_qwen_dir, tmp_path,
                                                                     monkeypatch, capsys):
    if how == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads a file of mode 000 (see the test below)")
    model, weights = _copy_model(tiny_qwen_dir, tmp_path)
    if command == "search":  # search loads the model the index records
        code, _, err = run_main(["index", str(repo), "--model", str(model)], monkeypatch, capsys)
        assert code == 0, err
    _damage(weights, how)
    args = {
        "embed": ["embed", "hello", "--model", str(model)],
        "index": ["index", str(repo), "--model", str(model)],
        "search": ["search", "parse config", str(repo)],
        "eval": ["eval", "--model", str(model), "--data", str(write_beir(tmp_path)), "--no-cache", "--quiet"],
    }[command]
    code, _, err = run_main(args, monkeypatch, capsys)
    assert_one_error_line(code, err, str(weights), "permission denied" if how == "unreadable" else "damaged")


def test_unreadable_weights_say_permission_denied_not_missing(tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    # as root a mode-000 file stays readable: refuse the open the way the kernel does for anyone else
    import builtins

    model, weights = _copy_model(tiny_qwen_dir, tmp_path)
    real_open = builtins.open

    def denying_open(file, *args, **kwargs):
        if os.fspath(file) == str(weights):
            raise PermissionError(13, "Permission denied", str(weights))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denying_open)
    code, _, err = run_main(["embed", "hello", "--model", str(model)], monkeypatch, capsys)
    assert_one_error_line(code, err, str(weights), "permission denied", "chmod a+r")


# -- training and evaluation files: named by file and line, refused at load -----------------------------------
PAIR = '{"task": "nl2code", "query": "add two numbers", "document": "def add(a, b): return a + b"}\n'


@pytest.mark.parametrize("bad, needles", [
    (PAIR.replace("add two", "caf\xe9 two").encode("latin-1"), ["pairs.jsonl:2", "0xe9", "UTF-8"]),
    (PAIR.replace("add two", "cut \\ud83d").encode(), ["pairs.jsonl:2", "surrogate", "\\ud83d"]),
    (PAIR.replace("def add", '\\udc00def add').encode(), ["pairs.jsonl:2", "surrogate", "\\udc00"]),
], ids=["latin-1 byte", "cut emoji", "lone low surrogate"])
def test_pair_files_with_bad_text_are_refused_at_load_naming_the_line(bad, needles, tiny_qwen_dir, tmp_path,
                                                                       monkeypatch, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(PAIR.encode() + bad + PAIR.encode())
    code, _, err = run_main(["train", "--model", str(tiny_qwen_dir), "--data", str(pairs), "--steps", "1",
                             "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert_one_error_line(code, err, *needles)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # refused before training


def test_a_surrogate_pair_escape_is_valid_text(tmp_path):
    from codesift.data.jsonl import read_jsonl

    f = tmp_path / "ok.jsonl"
    f.write_text('{"text": "smile \\ud83d\\ude00", "\\u00e9": ["caf\\u00e9"]}\n')
    assert [row for _, row in read_jsonl(f)] == [{"text": "smile \U0001F600", "é": ["café"]}]


@pytest.mark.parametrize("name, bad, needles", [
    ("corpus.jsonl", b'{"_id": "d9", "text": "caf\xe9"}\n', ["corpus.jsonl:7", "0xe9"]),
    ("queries.jsonl", b'{"_id": "q9", "text": "cut \\ud83d"}\n', ["queries.jsonl:6", "surrogate"]),
], ids=["corpus latin-1 byte", "queries cut emoji"])
def test_beir_files_with_bad_text_name_the_file_and_line(name, bad, needles, tmp_path, monkeypatch, capsys):
    beir = write_beir(tmp_path)
    with open(beir / name, "ab") as fh:
        fh.write(bad)
    code, _, err = run_main(["eval", "--model", "bm25", "--data", str(beir), "--quiet"], monkeypatch, capsys)
    assert_one_error_line(code, err, *needles)


def test_eval_data_that_is_not_a_beir_folder_says_what_one_holds(tmp_path, monkeypatch, capsys):
    def error_of(path) -> str:
        code, _, err = run_main(["eval", "--model", "bm25", "--data", str(path), "--quiet"], monkeypatch, capsys)
        assert_one_error_line(code, err, str(path))
        return err

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    err = error_of(tmp_path / "notes")
    assert "not a BEIR folder" in err and "corpus.jsonl, queries.jsonl and qrels.tsv" in err
    assert "does not exist" in error_of(tmp_path / "nowhere")
    assert "is a file" in error_of(tmp_path / "notes" / "readme.txt")
    write_beir(tmp_path / "suite", "cosqa"), write_beir(tmp_path / "suite", "mbpp")
    err = error_of(tmp_path / "suite")  # the parent of several tasks: name them
    assert "holds 2: cosqa, mbpp" in err and str(tmp_path / "suite" / "cosqa") in err


# -- a read-only index: searched, never called corrupt, never written -----------------------------------------
def _deny_writes_under(folder: Path, monkeypatch) -> None:
    """``os.access`` as for a user who may not write ``folder`` (root may write anything, so the tests fake it)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(os.fspath(path)).absolute().is_relative_to(folder):
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def _searches(repo, monkeypatch, capsys) -> list[str]:
    code, out, err = run_main(["search", "parse config", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0 and "error" not in err, err
    return [r["path"] for r in json.loads(out)]


def test_a_read_only_index_is_searched_and_indexing_into_it_says_chmod(repo, tiny_qwen_dir, monkeypatch, capsys):
    from codesift.index.manifest import Manifest

    code, _, err = run_main(["index", str(repo), "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert code == 0, err
    db = repo / ".codesift" / "manifest.sqlite"
    before = db.read_bytes()
    _deny_writes_under(repo / ".codesift", monkeypatch)
    assert Manifest(db).read_only
    assert _searches(repo, monkeypatch, capsys)[0] == "src/conf.py"
    code, out, err = run_main(["status", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["problem"] is None, err
    (repo / "src/conf.py").write_text("def parse_config(path):\n    return path.read_text()\n")
    code, _, err = run_main(["index", str(repo)], monkeypatch, capsys)
    assert_one_error_line(code, err, "read-only", "chmod -R u+w")
    assert "corrupt" not in err and "--rebuild" not in err  # a good index: never tell the user to delete it
    assert db.read_bytes() == before


def test_a_read_only_folder_holding_unmerged_writes_is_read_as_it_is(repo, tiny_qwen_dir, monkeypatch, capsys, caplog):
    # SQLite cannot make the -shm file a -wal file needs in a folder it may not write ("unable to open database
    # file"), which root never meets: refuse the first open as SQLite does for anyone else
    import sqlite3

    from codesift.index import manifest

    code, _, err = run_main(["index", str(repo), "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert code == 0, err
    db = repo / ".codesift" / "manifest.sqlite"
    writer = sqlite3.connect(db, isolation_level=None)  # its writes stay in the -wal file while it is open
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO meta VALUES ('unmerged', '1')")
    real_connect = manifest._connect

    def connect(path, read_only, immutable=False):
        if read_only and not immutable:
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(path, read_only, immutable)

    monkeypatch.setattr(manifest, "_connect", connect)
    _deny_writes_under(repo / ".codesift", monkeypatch)
    try:
        with caplog.at_level("WARNING", logger="codesift.index.manifest"):
            assert _searches(repo, monkeypatch, capsys)[0] == "src/conf.py"
        assert "not yet merged" in caplog.text and "manifest.sqlite-wal" in caplog.text
    finally:
        writer.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a folder of mode 0555")
def test_a_chmod_read_only_index_is_searched(repo, tiny_qwen_dir, monkeypatch, capsys):
    code, _, err = run_main(["index", str(repo), "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert code == 0, err
    folder = repo / ".codesift"
    for p in [*folder.iterdir(), folder]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        assert _searches(repo, monkeypatch, capsys)[0] == "src/conf.py"
    finally:
        folder.chmod(0o755)
