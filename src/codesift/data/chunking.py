"""Chunks for indexing: units where they fit, split at statement boundaries where they do not.

The whole file is covered, in order: each top-level unit (with its leading doc comment) is one
chunk, the code between units becomes ``block`` chunks, a unit over the token limit is split at
the shallowest syntax boundaries (its members, then its statements), tiny neighbours are merged,
and files without a grammar (or that fail to parse) are cut into line windows. No chunk is over
``max_tokens`` as measured by ``count_tokens``; a single line longer than that is cut by characters.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class _Piece:
    start: int  # 0-based line index, inclusive
    end: int  # 0-based line index, exclusive
    symbols: list[tuple[str, str]]  # (symbol, kind) of the units it holds
    text: str | None = None  # set only for the pieces of a line cut by characters


class _Chunker:
    def __init__(self, text: str, max_tokens: int, count: Callable[[str], int]) -> None:
        self.lines = _split_lines(text)
        self.max_tokens = max_tokens
        self.count = count
        self.boundary: dict[int, int] = {}  # 0-based line -> depth of the shallowest node starting there

        self.fast = count is estimate_tokens
        if self.fast:  # the estimate is additive over whole lines: prefix sums make `fits` O(1)
            self.words, self.bytes = [0], [0]
            for line in self.lines:
                self.words.append(self.words[-1] + len(_TOKEN_RE.findall(line)))
                self.bytes.append(self.bytes[-1] + len(line.encode("utf-8", errors="surrogatepass")))

    def tokens(self, start: int, end: int) -> int:
        if self.fast:
            return max(self.words[end] - self.words[start], math.ceil((self.bytes[end] - self.bytes[start]) / 3))
        return self.count("".join(self.lines[start:end]))

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

    def split_line(self, index: int, symbols: list[tuple[str, str]]) -> list[_Piece]:
        """Cut one over-long line by characters."""
        line, pieces, pos = self.lines[index], [], 0
        while pos < len(line):
            lo, hi = pos + 1, len(line)
            if self.count(line[pos:hi]) > self.max_tokens:
                while lo < hi:  # the longest slice that fits
                    mid = (lo + hi + 1) // 2
                    if self.count(line[pos:mid]) <= self.max_tokens:
                        lo = mid
                    else:
                        hi = mid - 1
                hi = lo
            pieces.append(_Piece(index, index + 1, symbols, text=line[pos:hi]))
            pos = hi
        return pieces


def _unit_start_line(unit: CodeUnit, byte_to_line: Callable[[int], int]) -> int:
    """0-based first line of a unit, its leading doc comment included."""
    start = unit.start_line - 1
    if unit.doc_start_byte is not None and not unit.doc_inside:
        start = min(start, byte_to_line(unit.doc_start_byte))
    return start


def _line_of_byte(data: bytes) -> Callable[[int], int]:
    newlines = [i for i, b in enumerate(data) if b == 10]

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
) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` that cover the whole file, in order."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if language is None:
        language = detect_language(path, text.split("\n", 1)[0])
    count = count_tokens or estimate_tokens
    chunker = _Chunker(text, max_tokens, count)
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
        except Exception:  # a grammar crash must not stop indexing: fall back to line windows
            logger.warning("could not parse %s as %s; using line windows", path, language, exc_info=True)
            units = []
    if units:
        pieces = _segment(chunker, 0, len(chunker.lines), units, None, byte_to_line)
    else:
        if not chunker.boundary:  # no syntax: prefer cutting after blank lines
            chunker.boundary = {i + 1: 0 for i, line in enumerate(chunker.lines) if not line.strip()}
        pieces = chunker.split_range(0, len(chunker.lines), [])
    pieces = _merge_small(chunker, pieces, max(1, max_tokens // 8))
    chunks = []
    for piece in pieces:
        body = piece.text if piece.text is not None else "".join(chunker.lines[piece.start:piece.end])
        if not body.strip():
            continue
        symbol, kind = _describe(piece, bool(units))
        chunks.append(Chunk(path, language, piece.start + 1, max(piece.start + 1, piece.end), symbol, kind, body))
    return chunks


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
    path: str | Path, max_tokens: int = 512, count_tokens: Callable[[str], int] | None = None
) -> tuple[list[Chunk], str | None]:
    """Read and chunk one file: ``(chunks, None)``, or ``([], skip_reason)`` when it is not usable code."""
    text, reason = read_source(path)
    if text is None:
        return [], reason
    language = detect_language(path, text.split("\n", 1)[0])
    return chunk_text(text, str(path), language, max_tokens=max_tokens, count_tokens=count_tokens), None
