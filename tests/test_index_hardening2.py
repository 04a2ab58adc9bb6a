"""Regression tests of the second adversarial run against the index (issue 23): damage a file or a repair can
cause, and what `status` and `index` say about it."""

from __future__ import annotations

import json
import re

import pytest

from test_index_hardening import index, make_repo
from test_model_hardening import assert_one_error_line, run_main


@pytest.fixture()
def repo(tmp_path):
    return make_repo(tmp_path)


# -- severe 1: a line of repeated values cut into identical windows -----------------------------------------
def test_a_long_line_of_repeated_values_keeps_the_index_searchable(repo, tiny_qwen_dir, monkeypatch, capsys):
    body = "".join(f"def helper_{i}(x):\n    return x + {i}\n\n\n" for i in range(60))  # not "minified"
    (repo / "src/table.py").write_text("ZEROS = [" + "0, " * 1600 + "]\n\n\n" + body)
    first = index(repo, tiny_qwen_dir, monkeypatch, capsys, "--max-tokens", "64")
    assert first["chunks_embedded"] + first["chunks_cached"] == first["chunks_total"]  # one batch, shared hashes
    code, out, err = run_main(["search", "parse config", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0, err
    code, out, err = run_main(["status", str(repo), "--json"], monkeypatch, capsys)
    st = json.loads(out)
    assert st["chunks"] == first["chunks_total"] and not st.get("problem")
    again = index(repo, tiny_qwen_dir, monkeypatch, capsys)
    assert again["files_changed"] == 0  # nothing rewritten on the next run


# -- severe 5: damage a crash cannot leave, which checks must find and `index` must repair ----------------
def _db(repo):
    import sqlite3

    return sqlite3.connect(repo / ".codesift" / "manifest.sqlite", isolation_level=None)


def _searches(repo, monkeypatch, capsys) -> bool:
    code, out, _err = run_main(["search", "parse config", str(repo), "--json"], monkeypatch, capsys)
    return code == 0 and json.loads(out)[0]["path"] == "src/conf.py"


def _problem(repo, monkeypatch, capsys) -> str | None:
    code, out, err = run_main(["status", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0, err
    st = json.loads(out)
    assert st["staleness"]["stale"] == (st["problem"] is not None)
    return st["problem"]


@pytest.mark.parametrize("damage", ["orphan vector", "chunks gone, vectors left", "short vector blob"])
def test_damaged_rows_are_found_by_status_and_repaired_by_index(damage, repo, tiny_qwen_dir, monkeypatch, capsys):
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    db = _db(repo)
    if damage == "orphan vector":
        blob = db.execute("SELECT vector FROM chunk_vectors LIMIT 1").fetchone()[0]
        db.execute("INSERT INTO chunk_vectors VALUES (99999, ?)", (blob,))
    elif damage == "chunks gone, vectors left":
        db.execute("DELETE FROM chunks WHERE path = 'src/stack.py'")
    else:
        db.execute("UPDATE chunk_vectors SET vector = x'00000000' WHERE seq = (SELECT MIN(seq) FROM chunk_vectors)")
    db.close()
    code, _, err = run_main(["search", "parse config", str(repo)], monkeypatch, capsys)
    assert_one_error_line(code, err, "codesift index")
    assert "damaged" in (_problem(repo, monkeypatch, capsys) or "")
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    assert _problem(repo, monkeypatch, capsys) is None
    assert _searches(repo, monkeypatch, capsys)
    db = _db(repo)
    assert db.execute("SELECT COUNT(*) FROM chunk_vectors WHERE seq NOT IN (SELECT seq FROM chunks)").fetchone() == (0,)
    db.close()


def test_a_malformed_page_is_found_and_named_with_rebuild(repo, tiny_qwen_dir, monkeypatch, capsys):
    from codesift.testing import damage_table_page

    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    damage_table_page(repo / ".codesift" / "manifest.sqlite", "chunk_vectors")
    code, _, err = run_main(["search", "parse config", str(repo)], monkeypatch, capsys)
    assert_one_error_line(code, err, "--rebuild")
    assert "--rebuild" in (_problem(repo, monkeypatch, capsys) or "")
    code, _, err = run_main(["index", str(repo)], monkeypatch, capsys)
    assert_one_error_line(code, err, "--rebuild")
    index(repo, tiny_qwen_dir, monkeypatch, capsys, "--rebuild")
    assert _searches(repo, monkeypatch, capsys)


# -- crashes and tracebacks: every failure a user can cause is one `error:` line ----------------------------
def test_sqlite_failures_are_named(repo, tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    import sqlite3

    from codesift.index.manifest import sqlite_error

    full = sqlite_error(tmp_path / "manifest.sqlite", sqlite3.OperationalError("database or disk is full"))
    assert isinstance(full, OSError) and "free disk space" in str(full)
    readonly = sqlite_error(tmp_path / "manifest.sqlite", sqlite3.OperationalError("attempt to write a readonly database"))
    assert isinstance(readonly, PermissionError) and "--rebuild" not in str(readonly)  # a good index: never delete it
    code, _, err = run_main(["index", str(repo), "--index", "/proc/self", "--model", str(tiny_qwen_dir)],
                            monkeypatch, capsys)
    assert_one_error_line(code, err, "cannot open the index")
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(other / "manifest.sqlite")
    db.execute("CREATE TABLE meta (k, v)")  # an index file of another schema
    db.commit(), db.close()
    code, _, err = run_main(["status", "--index", str(other)], monkeypatch, capsys)
    assert_one_error_line(code, err, "--rebuild")
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    db = _db(repo)
    db.execute("ALTER TABLE chunks DROP COLUMN kind")  # a column gone after a version change
    db.close()
    code, _, err = run_main(["search", "parse config", str(repo)], monkeypatch, capsys)
    assert_one_error_line(code, err, "--rebuild")


def test_a_failing_query_server_falls_back_in_process(repo, tiny_qwen_dir, monkeypatch, capsys):
    from codesift.index import daemon_client

    index(repo, tiny_qwen_dir, monkeypatch, capsys)

    def broken(*args, **kwargs):
        raise daemon_client.QueryServerError("RuntimeError: boom (log: x.log)")

    monkeypatch.setattr(daemon_client, "request", broken)
    monkeypatch.setattr(daemon_client, "enabled", lambda: True)
    code, out, err = run_main(["search", "parse config", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in err, err
    assert "boom" in err and json.loads(out)[0]["path"] == "src/conf.py"


def test_a_bad_path_glob_is_one_error_line(repo, tiny_qwen_dir, monkeypatch, capsys):
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    code, _, err = run_main(["search", "parse", str(repo), "-p", "[z-a]"], monkeypatch, capsys)
    assert_one_error_line(code, err, "[z-a]")


def test_like_on_an_index_without_chunks(tmp_path, tiny_qwen_dir, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("nothing to index\n")
    index(empty, tiny_qwen_dir, monkeypatch, capsys)
    code, _, err = run_main(["search", "--like", "a.py:1", str(empty)], monkeypatch, capsys)
    assert_one_error_line(code, err, "no chunks")


@pytest.mark.parametrize("name", ["x[/]y.py", "[link=file:/etc/passwd]click[/link].py"])
def test_file_names_are_printed_as_text_not_markup(name, monkeypatch, capsys):
    import sys

    from codesift.index.cli import _render_results

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    hit = {"path": name, "start_line": 1, "end_line": 1, "symbol": "[bold]f[/bold]", "score": 1.0,
           "snippet": "x = 1\n", "language": "python"}
    _render_results([hit], as_json=False)
    raw = capsys.readouterr().out
    out = re.sub(r"\x1b\[[0-9;]*m", "", raw)  # colours only
    assert "\x1b]8;" not in raw  # no terminal hyperlink
    assert name in out and "[bold]f[/bold]" in out


def test_deeply_nested_source_is_indexed_without_tracebacks(repo, tiny_qwen_dir, monkeypatch, capsys):
    body = "".join(f"def helper_{i}(x):\n    return x + {i}\n\n\n" for i in range(60))  # not "minified"
    (repo / "src/deep.py").write_text("x = " + "(" * 2000 + "1" + ")" * 2000 + "\n\n\n" + body)
    code, out, err = run_main(["index", str(repo), "--model", str(tiny_qwen_dir), "--json"], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in err and "RecursionError" not in err, err[-2000:]
    report = json.loads(out)
    assert report["files_changed"] == 3 and "src/deep.py" not in report["skipped"]


# -- the index folder: what it holds, and that git leaves it out ------------------------------------------
def test_the_index_folder_keeps_no_credentials_and_ignores_itself(repo, tiny_qwen_dir, monkeypatch, capsys):
    import shutil
    import subprocess

    monkeypatch.setenv("CODESIFT_STORE_TOKEN", "user:hunter2-secret")
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    db = _db(repo)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for f in (repo / ".codesift").iterdir():
        if f.is_file():
            assert b"hunter2-secret" not in f.read_bytes(), f
    assert (repo / ".codesift" / ".gitignore").read_text() == "*\n"
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
        staged = subprocess.run(["git", "-C", str(repo), "diff", "--cached", "--name-only"], capture_output=True,
                                text=True, check=True).stdout.split()
        assert staged and not [p for p in staged if p.startswith(".codesift")], staged


# -- smaller -----------------------------------------------------------------------------------------------
def test_max_tokens_must_be_positive(repo, tiny_qwen_dir, monkeypatch, capsys):
    for bad in ("-5", "0"):
        code, _, err = run_main(["index", str(repo), "--model", str(tiny_qwen_dir), "--max-tokens", bad],
                                monkeypatch, capsys)
        assert_one_error_line(code, err, "--max-tokens")
    assert not (repo / ".codesift" / "manifest.sqlite").exists()  # nothing stored


def test_globs_with_dot_slash_or_absolute_paths_inside_the_root(repo, tiny_qwen_dir, monkeypatch, capsys):
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    for glob in ("./src/**", str(repo.resolve() / "src") + "/**", "!./src/stack.py"):
        code, out, err = run_main(["search", "parse config", str(repo), "--json", "-p", glob], monkeypatch, capsys)
        assert code == 0, err
        assert "src/conf.py" in [h["path"] for h in json.loads(out)], glob


def test_a_query_of_zero_width_spaces_is_empty(repo, tiny_qwen_dir, monkeypatch, capsys):
    index(repo, tiny_qwen_dir, monkeypatch, capsys)
    code, _, err = run_main(["search", "\u200b\u200b\ufeff", str(repo)], monkeypatch, capsys)
    assert_one_error_line(code, err, "empty")


def test_the_walk_keeps_a_file_git_keeps_and_names_what_it_cannot_enter(tmp_path):
    import os

    from codesift.data.walk import walk_files

    root = tmp_path / "tree"
    (root / "logs").mkdir(parents=True)
    (root / ".gitignore").write_text("logs/**\n!logs/l.py\n")  # git keeps logs/l.py
    (root / "logs/l.py").write_text("x = 1\n")
    (root / "logs/x.py").write_text("x = 2\n")
    fd = os.open(root, os.O_RDONLY)
    for _ in range(25):  # a path past PATH_MAX (4096 on Linux)
        os.mkdir("d" * 200, dir_fd=fd)
        fd_next = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = fd_next
    os.close(os.open("deep.py", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    skipped: list = []
    paths = [f.path for f in walk_files(root, skipped=skipped)]
    assert "logs/l.py" in paths and "logs/x.py" not in paths
    assert any("too long" in reason for _, reason in skipped), skipped
