"""Chunks for indexing: units where they fit, split at statement boundaries where they do not.

The whole file is covered, in order: each top-level unit (with its leading doc comment) is one
chunk, the code between units becomes ``block`` chunks, a unit over the token limit is split at
the shallowest syntax boundaries (its members, then its statements), tiny neighbours are merged,
and files without a grammar (or that fail to parse) are cut into line windows. No chunk is over
``max_tokens`` as measured by ``count_tokens``; a single line longer than that is cut by characters.

Counting: with a ``PieceCounter`` (the indexer's), the file is tokenized once and every candidate
piece is counted from the token offsets (``TokenSpans``), conservatively; the final chunks are then
counted exactly in one batch, and any over the limit is split again with exact counts.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from codesift.data.files import read_source
from codesift.data.languages import SUPPORTED_LANGUAGES, detect_language
from codesift.data.units import CodeUnit, extract_units, parse

logger = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


@dataclass
class Chunk:
    """A piece of a file for indexing (lines 1-based, inclusive)."""

    path: str
    language: str | None
    start_line: int
    end_line: int
    symbol: str | None
    kind: str  # 'function' | 'class' | 'method' | 'block' | 'window'
    text: str
    content_hash: str = field(default="")

    def __post_init__(self) -> None:
        if not self.content_hash:
            self.content_hash = hashlib.sha256(self.text.encode("utf-8", errors="surrogatepass")).hexdigest()


def _split_lines(text: str) -> list[str]:
    """Lines with their ``\n`` kept, split on ``\n`` only (as tree-sitter counts rows)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def estimate_tokens(text: str) -> int:
    """A cheap upper estimate of a code tokenizer's count: max(words + punctuation, UTF-8 bytes / 3)."""
    if not text:
        return 0
    return max(len(_TOKEN_RE.findall(text)), math.ceil(len(text.encode("utf-8", errors="surrogatepass")) / 3))


@dataclass(frozen=True)
class TokenSpans:
    """A whole file tokenized once: token i covers characters [starts[i], ends[i]) of the file.

    ``count`` gives a piece's count without tokenizing it: the tokens that overlap the piece (a token
    cut by the piece's edge counts whole), plus ``overhead`` (the instruction prefix and special
    tokens every piece gets), plus ``edge_slack`` per edge, because a piece tokenized alone can split
    a token it shares with its neighbour into two or more.
    """

    starts: list[int]
    ends: list[int]
    overhead: int = 0
    edge_slack: int = 1

    @classmethod
    def from_offsets(cls, offsets: Sequence[tuple[int, int]], overhead: int = 0, edge_slack: int = 1) -> TokenSpans:
        """From a tokenizer's ``offset_mapping`` (made non-decreasing, so that a bisection is valid)."""
        if not len(offsets):
            return cls([], [], overhead, edge_slack)
        spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        starts = np.maximum.accumulate(spans[:, 0]).tolist()
        ends = np.maximum.accumulate(spans[:, 1]).tolist()
        return cls(starts, ends, overhead, edge_slack)

    def count(self, start: int, end: int) -> int:
        """Conservative token count of characters [start, end) tokenized on their own."""
        if end <= start:
            return self.overhead
        first = bisect.bisect_right(self.ends, start)  # first token ending after ``start``
        stop = bisect.bisect_left(self.starts, end)    # first token starting at or after ``end``
        return max(0, stop - first) + self.overhead + 2 * self.edge_slack


class PieceCounter(Protocol):
    """What the chunker needs from a tokenizer: one tokenization per file, exact counts for a batch."""

    def spans(self, text: str) -> TokenSpans | None:
        """The file's token spans, or None to count every candidate piece exactly."""

    def count(self, texts: Sequence[str]) -> list[int]:
        """Exact token counts (as the model will see them) of ``texts``."""


@dataclass
class _Piece:
    start: int  # 0-based line index, inclusive
    end: int  # 0-based line index, exclusive
    symbols: list[tuple[str, str]]  # (symbol, kind) of the units it holds
    text: str | None = None  # set only for the pieces of a line cut by characters
    char_start: int = 0  # where ``text`` starts in its line


class _Chunker:
    def __init__(self, text: str, max_tokens: int, count: Callable[[str], int], spans: TokenSpans | None = None) -> None:
        self.lines = _split_lines(text)
        self.max_tokens = max_tokens
        self.count = count
        self.spans = spans
        self.boundary: dict[int, int] = {}  # 0-based line -> depth of the shallowest node starting there

        self.fast = count is estimate_tokens and spans is None
        if self.fast:  # the estimate is additive over whole lines: prefix sums make `fits` O(1)
            self.words, self.bytes = [0], [0]
            for line in self.lines:
                self.words.append(self.words[-1] + len(_TOKEN_RE.findall(line)))
                self.bytes.append(self.bytes[-1] + len(line.encode("utf-8", errors="surrogatepass")))
        if spans is not None:  # character offset of each line in the file
            self.line_start = [0, *itertools.accumulate(len(line) for line in self.lines)]

    def tokens(self, start: int, end: int) -> int:
        if self.fast:
            return max(self.words[end] - self.words[start], math.ceil((self.bytes[end] - self.bytes[start]) / 3))
        if self.spans is not None:
            return self.spans.count(self.line_start[start], self.line_start[end])
        return self.count("".join(self.lines[start:end]))

    def slice_tokens(self, index: int, start: int, end: int) -> int:
        """Tokens of characters [start, end) of line ``index``."""
        if self.spans is not None:
            offset = self.line_start[index]
            return self.spans.count(offset + start, offset + end)
        return self.count(self.lines[index][start:end])

    def fits(self, start: int, end: int) -> bool:
        return self.tokens(start, end) <= self.max_tokens

    def split_range(self, start: int, end: int, symbols: list[tuple[str, str]]) -> list[_Piece]:
        """Cut lines [start, end) into pieces that fit, preferring the shallowest syntax boundaries."""
        pieces: list[_Piece] = []
        pos = start
        while pos < end:
            if self.fits(pos, end):
                pieces.append(_Piece(pos, end, symbols))
                break
            # the longest prefix that fits: gallop, then binary search (lines [pos, lo) fit)
            lo, step = pos, 1
            while pos + step < end and self.fits(pos, pos + step):
                lo = pos + step
                step *= 2
            hi = min(pos + step, end) - 1  # [pos, hi + 1) does not fit
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.fits(pos, mid):
                    lo = mid
                else:
                    hi = mid - 1
            if lo == pos:  # one line alone is over the limit
                pieces.extend(self.split_line(pos, symbols))
                pos += 1
                continue
            cut = lo
            candidates = [line for line in range(pos + 1, lo + 1) if line in self.boundary]
            if candidates:
                best = min(self.boundary[line] for line in candidates)
                cut = max(line for line in candidates if self.boundary[line] == best)
            pieces.append(_Piece(pos, cut, symbols))
            pos = cut
        return pieces

    def split_line(self, index: int, symbols: list[tuple[str, str]], begin: int = 0,
                   stop: int | None = None) -> list[_Piece]:
        """Cut one over-long line (or its characters [begin, stop)) by characters."""
        line, pieces, pos = self.lines[index], [], begin
        stop = len(line) if stop is None else stop
        while pos < stop:
            lo, hi = pos + 1, stop
            if self.slice_tokens(index, pos, hi) > self.max_tokens:
                while lo < hi:  # the longest slice that fits
                    mid = (lo + hi + 1) // 2
                    if self.slice_tokens(index, pos, mid) <= self.max_tokens:
                        lo = mid
                    else:
                        hi = mid - 1
                hi = lo
            pieces.append(_Piece(index, index + 1, symbols, text=line[pos:hi], char_start=pos))
            pos = hi
        return pieces


def _unit_start_line(unit: CodeUnit, byte_to_line: Callable[[int], int]) -> int:
    """0-based first line of a unit, its leading doc comment included."""
    start = unit.start_line - 1
    if unit.doc_start_byte is not None and not unit.doc_inside:
        start = min(start, byte_to_line(unit.doc_start_byte))
    return start


def _line_of_byte(data: bytes) -> Callable[[int], int]:
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10).tolist()

    def line(offset: int) -> int:
        import bisect

        return bisect.bisect_left(newlines, offset)

    return line


def _segment(
    chunker: _Chunker,
    start: int,
    end: int,
    units: list[CodeUnit],
    parent: tuple[str, str] | None,
    byte_to_line: Callable[[int], int],
) -> list[_Piece]:
    """Pieces for lines [start, end): each unit of ``units`` (nested ones inside) and the gaps between."""
    top = [u for u in units if start <= u.start_line - 1 < end and u.end_line <= end]
    outer: list[CodeUnit] = []
    for unit in top:  # keep the outermost units only; others are handled when their parent is split
        if outer and unit.start_byte < outer[-1].end_byte:
            continue
        outer.append(unit)
    gap_symbols = [parent] if parent else []
    pieces: list[_Piece] = []
    pos = start
    for unit in outer:
        ustart = max(_unit_start_line(unit, byte_to_line), pos)
        uend = unit.end_line  # exclusive, 0-based
        if ustart < pos or uend <= ustart:
            continue
        if ustart > pos:
            pieces.extend(chunker.split_range(pos, ustart, gap_symbols))
        symbol = [(unit.qualified_name, unit.kind)]
        if chunker.fits(ustart, uend):
            pieces.append(_Piece(ustart, uend, symbol))
        elif unit.kind == "class" and any(u.start_byte > unit.start_byte and u.end_byte <= unit.end_byte for u in units):
            inner = [u for u in units if u is not unit and u.start_byte >= unit.start_byte and u.end_byte <= unit.end_byte]
            pieces.extend(_segment(chunker, ustart, uend, inner, symbol[0], byte_to_line))
        else:
            pieces.extend(chunker.split_range(ustart, uend, symbol))
        pos = uend
    if pos < end:
        pieces.extend(chunker.split_range(pos, end, gap_symbols))
    return pieces


def _merge_small(chunker: _Chunker, pieces: list[_Piece], min_tokens: int) -> list[_Piece]:
    """Merge neighbouring pieces while one of them is tiny and the result still fits."""
    merged: list[_Piece] = []
    for piece in pieces:
        if merged and piece.text is None and merged[-1].text is None and merged[-1].end == piece.start:
            last = merged[-1]
            small = chunker.tokens(last.start, last.end) < min_tokens or chunker.tokens(piece.start, piece.end) < min_tokens
            if small and chunker.fits(last.start, piece.end):
                symbols = last.symbols + [s for s in piece.symbols if s not in last.symbols]
                merged[-1] = _Piece(last.start, piece.end, symbols)
                continue
        merged.append(piece)
    return merged


def chunk_text(
    text: str,
    path: str,
    language: str | None = None,
    max_tokens: int = 512,
    count_tokens: Callable[[str], int] | None = None,
    counter: PieceCounter | None = None,
) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` that cover the whole file, in order.

    Tokens are counted by ``counter`` (one tokenization per file, see ``PieceCounter``), else by
    ``count_tokens`` on every candidate piece, else by ``estimate_tokens``.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if language is None:
        language = detect_language(path, text.split("\n", 1)[0])
    spans = None
    if counter is not None:
        spans = counter.spans(text)
        count_tokens = lambda piece: counter.count([piece])[0]
    count = count_tokens or estimate_tokens
    chunker = _Chunker(text, max_tokens, count, spans)
    if not chunker.lines:
        return []
    units: list[CodeUnit] = []
    byte_to_line: Callable[[int], int] = lambda offset: 0
    if language in SUPPORTED_LANGUAGES:
        try:
            tree, data = parse(text, language)
            units = [u for u in extract_units(text, language, tree=tree) if not u.has_error]
            byte_to_line = _line_of_byte(data)
            _record_boundaries(tree.root_node, chunker.boundary)
        except RecursionError:  # the syntax tree is walked in Python: deep nesting (generated code) overflows it
            logger.warning("%s nests too deeply to parse as %s; using line windows", path, language)
            units = []
        except Exception as exc:  # a grammar crash must not stop indexing: fall back to line windows
            logger.warning("could not parse %s as %s (%s: %s); using line windows", path, language,
                           type(exc).__name__, exc)
            logger.debug("parse failure of %s", path, exc_info=True)
            units = []
    if units:
        pieces = _segment(chunker, 0, len(chunker.lines), units, None, byte_to_line)
    else:
        if not chunker.boundary:  # no syntax: prefer cutting after blank lines
            chunker.boundary = {i + 1: 0 for i, line in enumerate(chunker.lines) if not line.strip()}
        pieces = chunker.split_range(0, len(chunker.lines), [])
    pieces = _merge_small(chunker, pieces, max(1, max_tokens // 8))
    if spans is not None:
        pieces = _enforce_limit(chunker, pieces, counter)
    chunks = []
    for piece in pieces:
        body = _body(chunker, piece)
        if not body.strip():
            continue
        symbol, kind = _describe(piece, bool(units))
        chunks.append(Chunk(path, language, piece.start + 1, max(piece.start + 1, piece.end), symbol, kind, body))
    return chunks


def _body(chunker: _Chunker, piece: _Piece) -> str:
    return piece.text if piece.text is not None else "".join(chunker.lines[piece.start:piece.end])


def _enforce_limit(chunker: _Chunker, pieces: list[_Piece], counter: PieceCounter) -> list[_Piece]:
    """Count the final pieces exactly (one batch) and split again, exactly, any the span count let through."""
    bodies = [_body(chunker, p) for p in pieces]
    exact = counter.count(bodies)
    over = [i for i, n in enumerate(exact) if n > chunker.max_tokens]
    if not over:
        return pieces
    logger.debug("%d of %d chunks over %d tokens after span counting; splitting them exactly",
                 len(over), len(pieces), chunker.max_tokens)
    strict = _Chunker("".join(chunker.lines), chunker.max_tokens, lambda piece: counter.count([piece])[0])
    strict.boundary = chunker.boundary
    out: list[_Piece] = []
    for i, piece in enumerate(pieces):
        if exact[i] <= chunker.max_tokens:
            out.append(piece)
        elif piece.text is not None:
            out.extend(strict.split_line(piece.start, piece.symbols, piece.char_start, piece.char_start + len(piece.text)))
        else:
            out.extend(strict.split_range(piece.start, piece.end, piece.symbols))
    return out


def _describe(piece: _Piece, parsed: bool) -> tuple[str | None, str]:
    if not parsed:
        return None, "window"
    # a class's own lines merged with its members: name the members
    symbols = [s for s in piece.symbols if not any(o[0].startswith(s[0] + ".") for o in piece.symbols)]
    if not symbols:
        return None, "block"
    if len(symbols) == 1:
        return symbols[0]
    return ", ".join(s for s, _ in symbols)[:300], "block"


def _record_boundaries(root: object, boundary: dict[int, int]) -> None:
    """For each line, the depth of the shallowest named node that starts on it (cut points)."""
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        for child in node.named_children:  # type: ignore[attr-defined]
            line = child.start_point[0]
            if depth < boundary.get(line, 1 << 30):
                boundary[line] = depth
            if child.named_child_count:
                stack.append((child, depth + 1))


def chunk_file(
    path: str | Path, max_tokens: int = 512, count_tokens: Callable[[str], int] | None = None,
    counter: PieceCounter | None = None,
) -> tuple[list[Chunk], str | None]:
    """Read and chunk one file: ``(chunks, None)``, or ``([], skip_reason)`` when it is not usable code."""
    text, reason = read_source(path)
    if text is None:
        return [], reason
    language = detect_language(path, text.split("\n", 1)[0])
    return chunk_text(text, str(path), language, max_tokens=max_tokens, count_tokens=count_tokens,
                      counter=counter), None
