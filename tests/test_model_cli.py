"""`codesift embed`, `models`, `info` through the real CLI (subprocess: exit codes and stderr as users see them)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from codesift import Embedder


def run(*args, stdin=None, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "codesift.cli", *args], input=stdin, check=False, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def emb(tiny_qwen_dir):
    return Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32")


def test_embed_arguments_jsonl_out(tiny_qwen_dir, emb):
    r = run("embed", "def f(): pass", "print(1)", "--model", str(tiny_qwen_dir), "--dtype", "float32",
            "--task", "nl2code.passage", "--dim", "32")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    got = np.array([row["embedding"] for row in rows], dtype=np.float32)
    want = emb.encode(["def f(): pass", "print(1)"], task="nl2code", role="document", dim=32)
    assert [row["index"] for row in rows] == [0, 1]
    assert np.abs(got - want).max() < 1e-6


def test_embed_stdin_and_jsonl_file_to_npy(tiny_qwen_dir, emb, tmp_path):
    r = run("embed", "--model", str(tiny_qwen_dir), "--dtype", "float32", "--role", "document",
            "-o", str(tmp_path / "a.npy"), stdin="first line\n\nsecond line\n")
    assert r.returncode == 0, r.stderr
    a = np.load(tmp_path / "a.npy")
    assert np.abs(a - emb.encode(["first line", "second line"], role="document")).max() < 1e-6
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "first line"}) + "\n" + json.dumps("second line") + "\n")
    r = run("embed", "--input", str(src), "--model", str(tiny_qwen_dir), "--dtype", "float32", "--role", "document",
            "-o", str(tmp_path / "b.npy"))
    assert r.returncode == 0, r.stderr
    assert np.abs(np.load(tmp_path / "b.npy") - a).max() < 1e-7


@pytest.mark.parametrize(
    "args,message",
    [
        (["--task", "sql"], "unknown task"),
        (["--dim", "999"], "dim must be an integer"),
        (["--role", "answer"], "unknown role"),
    ],
)
def test_embed_errors_are_one_line(tiny_qwen_dir, args, message):
    r = run("embed", "x", "--model", str(tiny_qwen_dir), *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_embed_bad_jsonl_and_missing_model(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nope": 1}\n')
    r = run("embed", "--input", str(bad), "--model", str(tmp_path))
    assert r.returncode == 2 and "no 'text' field" in r.stderr
    r = run("embed", "x", "--model", "no-such-org/no-such-model", env_extra={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2 and "CODESIFT_MODEL" in r.stderr and "Traceback" not in r.stderr


def test_models_and_info(tiny_qwen_dir):
    r = run("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows[0]["kind"] == "default"
    r = run("info", str(tiny_qwen_dir), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["dimension"] == 64 and info["pooling"] == "lasttoken" and info["decoder"] is True
    assert info["tokenizer_appends_eos"] is False
    assert info["nl2code_query_prefix"] == "Find the most relevant code snippet given the following query:\n"
