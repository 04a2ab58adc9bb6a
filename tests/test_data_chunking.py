"""Chunks: never over the token limit, whole file covered in order, units kept whole where they fit."""

from __future__ import annotations

import itertools

import pytest

from codesift.data.chunking import Chunk, chunk_file, chunk_text, estimate_tokens

PY_SMALL = '''import os
import sys


def alpha(x):
    """Alpha."""
    return x + 1


class Box:
    """A box."""

    size = 3

    def grow(self, n):
        return self.size + n
'''


def _big_python_function(n_statements: int) -> str:
    body = "".join(f"    value_{i} = compute_something(value_{i - 1 if i else 0}, {i}) + offset\n" for i in range(n_statements))
    return f"def huge(offset):\n    \"\"\"A long function.\"\"\"\n{body}    return value_{n_statements - 1}\n"


def _joined(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def _assert_cover(chunks: list[Chunk], text: str) -> None:
    assert _joined(chunks) == text
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start_line == prev.end_line + 1
    for c in chunks:
        assert c.end_line - c.start_line + 1 == c.text.count("\n") + (0 if c.text.endswith("\n") else 1)


def test_small_units_are_whole_and_merged_with_tiny_neighbours():
    chunks = chunk_text(PY_SMALL, "m.py", max_tokens=512)
    _assert_cover(chunks, PY_SMALL)
    assert len(chunks) == 1  # everything is tiny: merged into one chunk
    chunks = chunk_text(PY_SMALL, "m.py", max_tokens=40)
    _assert_cover(chunks, PY_SMALL)
    symbols = [c.symbol for c in chunks]
    assert any(s and "alpha" in s for s in symbols) and any(s and "Box" in s for s in symbols)
    assert all(estimate_tokens(c.text) <= 40 for c in chunks)


@pytest.mark.parametrize("max_tokens", [64, 200, 512])
def test_big_function_is_split_at_statement_boundaries(max_tokens):
    text = _big_python_function(120)
    chunks = chunk_text(text, "big.py", max_tokens=max_tokens)
    _assert_cover(chunks, text)
    assert len(chunks) > 1
    for c in chunks:
        assert estimate_tokens(c.text) <= max_tokens
        assert c.symbol == "huge" and c.kind == "function"
        # each piece starts at a statement (or the def), never in the middle of a line
        first = c.text.split("\n", 1)[0]
        assert first.startswith(("def huge", "    value_", "    return", '    """'))


def test_custom_token_counter_is_respected():
    text = _big_python_function(60)
    count = lambda s: len(s.split())  # a different tokenizer
    chunks = chunk_text(text, "big.py", max_tokens=50, count_tokens=count)
    _assert_cover(chunks, text)
    assert max(count(c.text) for c in chunks) <= 50


def test_big_class_is_split_into_its_methods():
    methods = "".join(
        f"    def method_{i}(self, a, b):\n" + "".join(f"        a = a * {j} + b\n" for j in range(12)) + "        return a\n\n"
        for i in range(8)
    )
    text = f"class Big:\n    \"\"\"Doc.\"\"\"\n\n{methods}"
    chunks = chunk_text(text, "big.py", max_tokens=150)
    _assert_cover(chunks, text)
    names = {c.symbol for c in chunks}
    assert {f"Big.method_{i}" for i in range(8)} <= {n for s in names if s for n in s.split(", ")}
    assert all(estimate_tokens(c.text) <= 150 for c in chunks)


def test_unknown_language_gets_line_windows():
    text = "".join(f"line {i} of some notes with words\n" for i in range(400))
    chunks = chunk_text(text, "notes.unknownext", max_tokens=100)
    _assert_cover(chunks, text)
    assert {c.kind for c in chunks} == {"window"} and all(c.language is None for c in chunks)
    assert all(estimate_tokens(c.text) <= 100 for c in chunks)


def test_syntax_error_falls_back_without_losing_code():
    text = PY_SMALL + "\ndef broken(:\n    return )\n\n" + _big_python_function(30)
    chunks = chunk_text(text, "broken.py", max_tokens=120)
    _assert_cover(chunks, text)
    assert all(estimate_tokens(c.text) <= 120 for c in chunks)
    assert any(c.symbol and "huge" in c.symbol for c in chunks)


def test_single_huge_line_is_cut_by_characters():
    text = "x = [" + ", ".join(str(i) for i in range(20000)) + "]\n"
    chunks = chunk_text(text, "data.py", max_tokens=256)
    assert _joined(chunks) == text
    assert all(estimate_tokens(c.text) <= 256 for c in chunks) and all(c.start_line == 1 for c in chunks)


def test_chunk_metadata(tmp_path):
    path = tmp_path / "lib.go"
    path.write_text("package lib\n\n// Add adds.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n")
    chunks, reason = chunk_file(path, max_tokens=40)
    assert reason is None
    add = next(c for c in chunks if c.symbol == "Add")
    assert add.language == "go" and add.kind == "function" and add.path == str(path)
    assert "// Add adds.\nfunc Add" in add.text  # the doc comment travels with its function
    assert add.start_line <= 3 and add.end_line == 6
    import hashlib

    assert add.content_hash == hashlib.sha256(add.text.encode()).hexdigest()


def test_invalid_limit_is_a_clear_error():
    with pytest.raises(ValueError, match="max_tokens"):
        chunk_text("x = 1\n", "a.py", max_tokens=0)
