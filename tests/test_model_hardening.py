"""Regression tests of the adversarial run against `codesift embed` and the Embedder (issue 14).

CLI cases run through ``codesift.cli.main`` (the real entry point), so they check what a user sees:
one ``error:`` line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import io
import json
import os
import sys

import numpy as np
import pytest

from codesift.model.embedder import Embedder, InputTooLongError


def run_main(args: list[str], monkeypatch, capsys, stdin: bytes | None = None) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `codesift ARGS`."""
    from codesift.cli import main

    monkeypatch.setattr(sys, "argv", ["codesift", *args])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_error_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    # progress bars of weight loading show when transformers was imported before main() hid them
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:") and "it/s]" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err


@pytest.fixture(scope="module")
def emb(tiny_qwen_dir):
    return Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", max_length=64)


# -- finding 1: invalid UTF-8 / lone surrogates -------------------------------------------------------
def test_embed_argument_that_is_not_utf8(tiny_qwen_dir, monkeypatch, capsys):
    # `codesift embed $'caf\xe9'`: Python keeps the undecodable byte of argv as the surrogate \udce9
    code, _, err = run_main(["embed", "caf\udce9", "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, "argument 1", "0xe9")


def test_embed_random_bytes_on_stdin(tiny_qwen_dir, monkeypatch, capsys):
    data = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    code, _, err = run_main(["embed", "--model", str(tiny_qwen_dir)], monkeypatch, capsys, stdin=data)
    assert_one_error_line(code, err, "stdin", "not valid UTF-8")


def test_embed_jsonl_with_a_lone_surrogate_names_the_line(tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text('"fine"\n"cut \\ud83d"\n')
    code, _, err = run_main(["embed", "--input", str(f), "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, "in.jsonl:2", "surrogate")


def test_embedder_rejects_invalid_text_with_a_value_error(emb):
    from codesift.model.inputs import InvalidTextError

    with pytest.raises(InvalidTextError, match=r"texts\[1\].*surrogate"):
        emb.encode(["ok", "\ud800abc"])
    with pytest.raises(InvalidTextError, match=r"texts\[0\]"):
        emb.count_tokens(["caf\udce9"])
    assert emb.encode(["café ☕"]).shape == (1, emb.dimension)  # valid non-ASCII text is fine


def test_search_query_that_is_not_utf8(tmp_path, tiny_qwen_dir, monkeypatch, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("def parse_config(path):\n    return open(path).read()\n")
    code, _, err = run_main(["index", str(root), "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert code == 0, err
    for mode in ("hybrid", "bm25"):
        code, _, err = run_main(["search", "caf\udce9", str(root), "--mode", mode], monkeypatch, capsys)
        assert_one_error_line(code, err, "query", "0xe9")


# -- finding 10: tracebacks instead of one error line -------------------------------------------------
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_embed_on_a_missing_device(tiny_qwen_dir, monkeypatch, capsys):
    code, _, err = run_main(["embed", "x", "--device", "cuda", "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, "cuda", "--device cpu")
    code, _, err = run_main(["embed", "x", "--device", "tpu9", "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, "unknown device")


def test_embed_input_that_is_a_directory(tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    code, _, err = run_main(["embed", "--input", str(tmp_path), "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, "directory")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_embed_output_to_a_full_disk(tiny_qwen_dir, monkeypatch, capsys):
    code, _, err = run_main(["embed", "x", "-o", "/dev/full", "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, "/dev/full", "No space left")


# -- finding 12: careless options ----------------------------------------------------------------------
def test_embed_output_with_an_unknown_format(tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "x.csv"
    code, _, err = run_main(["embed", "x", "-o", str(out), "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, ".csv", ".npy")
    assert not out.exists()


def test_embed_output_formats_still_work(tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    for name in ("v.npy", "v.jsonl", "v"):
        code, _, err = run_main(["embed", "x", "-o", str(tmp_path / name), "--model", str(tiny_qwen_dir)],
                                monkeypatch, capsys)
        assert code == 0, err
    assert np.load(tmp_path / "v.npy").shape[0] == 1
    assert json.loads((tmp_path / "v").read_text())["index"] == 0


@pytest.mark.parametrize("value", ["0", "-1"])
def test_embed_batch_tokens_must_be_positive(tiny_qwen_dir, monkeypatch, capsys, value):
    code, _, err = run_main(["embed", "x", "--batch-tokens", value, "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, "--batch-tokens")


def test_encode_batch_tokens_zero_is_an_error(emb):
    with pytest.raises(ValueError, match="batch_tokens"):
        emb.encode(["x"], batch_tokens=0)


def test_embed_empty_argument_is_refused(tiny_qwen_dir, monkeypatch, capsys):
    code, _, err = run_main(["embed", "", "--model", str(tiny_qwen_dir)], monkeypatch, capsys)
    assert_one_error_line(code, err, "argument 1 is empty")


# -- finding 7: long inputs are tokenized only as far as the limit needs ----------------------------------
class RecordingTokenizer:
    """The embedder's tokenizer, noting the longest string it was asked to tokenize."""

    def __init__(self, tok) -> None:
        self.tok, self.longest = tok, 0

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def __call__(self, texts, *args, **kw):
        batch = [texts] if isinstance(texts, str) else texts
        self.longest = max([self.longest, *map(len, batch)])
        return self.tok(texts, *args, **kw)


def test_huge_inputs_are_cut_by_characters_before_tokenizing(tiny_qwen_dir):
    e = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", max_length=64)
    huge = "def add(a, b):\n    return a + b\n" * 50_000  # 1.6 MB
    full = e.tokenizer(e.prefix("nl2code", "query") + huge, truncation=True, max_length=64)["input_ids"]
    e.tokenizer = RecordingTokenizer(e.tokenizer)
    assert e.count_tokens([huge])[0] > 64
    with pytest.raises(InputTooLongError, match="more than"):
        e.encode([huge])
    ids = e._token_ids([huge], e.prefix("nl2code", "query"), truncate=True)[0]
    assert ids == full  # the same tokens as truncating the whole text
    assert e.tokenizer.longest < 64 * 16 + 200  # never the whole 1.6 MB


def test_whitespace_runs_grow_the_window_until_the_count_is_exact(tiny_bert_dir):
    e = Embedder(str(tiny_bert_dir), device="cpu", dtype="float32", max_length=32)
    sparse = "word" + " " * 5000 + "add"  # few tokens in many characters (BERT drops whitespace)
    assert e.count_tokens([sparse]) == [len(e.tokenizer(sparse)["input_ids"])]
    assert e.encode([sparse]).shape == (1, e.dimension)


def test_short_texts_count_exactly(emb):
    texts = ["def f(x):\n    return x\n" * n for n in (1, 2, 3)]
    want = [len(emb.tokenizer(emb.prefix("nl2code", "query") + t)["input_ids"]) for t in texts]
    assert emb.count_tokens(texts) == want
