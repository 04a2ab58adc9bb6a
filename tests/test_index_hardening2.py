"""Regression tests of the second adversarial run against the index (issue 23): damage a file or a repair can
cause, and what `status` and `index` say about it."""

from __future__ import annotations

import json

import pytest

from test_index_hardening import index, repo  # noqa: F401 (a fixture)
from test_model_hardening import assert_one_error_line, run_main


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
