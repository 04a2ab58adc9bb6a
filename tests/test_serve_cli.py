"""`codesift serve` argument handling (no server is started)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from codesift.serve.cli import read_api_keys


def test_serve_refuses_a_public_bind_without_a_key(monkeypatch):
    from codesift.cli import app

    monkeypatch.delenv("CODESIFT_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--model", "unused"])
    assert isinstance(result.exception, ValueError) and "API key" in str(result.exception)


def test_api_keys_come_from_a_file_and_the_environment(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nalpha\n\n  beta  \n")
    monkeypatch.setenv("CODESIFT_API_KEY", "gamma, delta")
    assert read_api_keys(keys) == ["alpha", "beta", "gamma", "delta"]
    with pytest.raises(FileNotFoundError):
        read_api_keys(tmp_path / "missing")
