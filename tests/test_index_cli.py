"""`codesift index / search / status` end to end through the typer app (in-process, tiny model)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def app():
    from codesift.cli import app

    return app


def test_index_search_status_json(tmp_path, tiny_qwen_dir, app):
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src/conf.py").write_text('def parse_config(path):\n    return open(path).read()\n')
    (root / "tests").mkdir()
    (root / "tests/test_conf.py").write_text("def test_parse_config():\n    assert parse_config\n")
    run = CliRunner().invoke
    res = run(app, ["index", str(root), "--model", str(tiny_qwen_dir), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert {"files_seen", "files_changed", "chunks_embedded", "chunks_deleted"} <= set(summary)
    assert summary["files_changed"] == 2
    res = run(app, ["index", str(root), "--json"])  # the model is remembered by the index
    assert json.loads(res.stdout)["chunks_embedded"] == 0

    res = run(app, ["search", "parse config", str(root), "--json", "--exclude-tests", "--lang", "python"])
    assert res.exit_code == 0, res.output
    assert [h["path"] for h in json.loads(res.stdout)] == ["src/conf.py"]
    res = run(app, ["search", "parse config", str(root), "--path", "tests/**"])  # plain lines when piped
    assert res.stdout.startswith("tests/test_conf.py:1-2\t")
    res = run(app, ["search", "--like", "src/conf.py:1", str(root), "--json"])
    assert [h["path"] for h in json.loads(res.stdout)] == ["tests/test_conf.py"]

    (root / "src/new.py").write_text("def fresh():\n    return 1\n")
    res = run(app, ["search", "fresh", str(root), "--json"])
    assert "stale" in res.stderr
    res = run(app, ["search", "fresh", str(root), "--json", "--refresh", "--mode", "bm25"])
    assert json.loads(res.stdout)[0]["path"] == "src/new.py" and "stale" not in res.stderr

    res = run(app, ["status", str(root), "--json"])
    st = json.loads(res.stdout)
    assert st["files"] == 3 and st["staleness"]["stale"] is False and st["model"] == str(tiny_qwen_dir)

    for args, exc in ((["search", "", str(root)], ValueError), (["search", "x", str(tmp_path / "nope")], FileNotFoundError),
                      (["index", str(tmp_path / "nope")], FileNotFoundError),
                      (["search", "--like", "src/conf.py", str(root)], ValueError)):
        res = run(app, args)
        assert isinstance(res.exception, exc), (args, res.output)


def test_vectors_layout_is_recorded_and_changes_without_reembedding(tmp_path, tiny_qwen_dir, app):
    """`--vectors binary` on an existing index: recorded, shown by status, nothing re-embedded, the same top hit."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "conf.py").write_text("def parse_config(path):\n    return open(path).read()\n")
    (root / "net.py").write_text("def open_socket(host):\n    return connect(host)\n")
    run = CliRunner().invoke
    assert run(app, ["index", str(root), "--model", str(tiny_qwen_dir), "--json"]).exit_code == 0
    query = ["search", "parse config", str(root), "--json", "--mode", "dense", "--no-server"]
    before = json.loads(run(app, query).stdout)
    res = run(app, ["index", str(root), "--vectors", "binary", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["chunks_embedded"] == 0
    assert json.loads(run(app, ["status", str(root), "--json"]).stdout)["vectors"] == "binary"
    after = json.loads(run(app, query).stdout)
    assert [h["path"] for h in after] == [h["path"] for h in before]
    res = run(app, ["index", str(root), "--vectors", "int4"])
    assert isinstance(res.exception, ValueError) and "float16, binary" in str(res.exception)


def test_progress_without_a_terminal_is_a_line_now_and_then(capsys):
    """Piped or logged (no TTY), `codesift index` still shows progress: a plain stderr line at most every N s."""
    from codesift.index.cli import _progress_printer

    bar, progress = _progress_printer(False, lines_every_s=0.0)
    assert bar is None
    progress("files", 250, 1000)
    progress("files", 1000, 1000)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("indexing: 250 of 1,000 files (25%)") and err[1].startswith("indexing: 1,000 of 1,000")
    _, quiet = _progress_printer(False, lines_every_s=3600)
    quiet("files", 1, 2)  # a short run prints nothing
    assert capsys.readouterr().err == ""
