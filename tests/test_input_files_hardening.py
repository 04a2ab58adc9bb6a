"""Regression tests of issue 23's findings on files a user hands codesift: model weights, pair and BEIR
files, and a read-only index. Each goes through the CLI entry point: one ``error:`` line, no traceback."""

from __future__ import annotations

import os
import shutil

import pytest

from test_eval_runner import write_beir
from test_index_hardening import repo  # noqa: F401 (a fixture)
from test_model_hardening import assert_one_error_line, run_main


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
