"""Code-aware ranking, pure functions over candidate features: what `CodeIndex.search` does after fusion.

Fusion (``rrf_fuse``) knows nothing about code. Developers and agents expect more (Semble, ck, Vera users):
the definition of a name above the places that use it, source above tests, docs and changelogs unless the
query asks for them, and an exact identifier in the query (``TokenBudgetBatcher``, ``rrf_fuse``) finding its
definition even when the name is short and common. This module turns those expectations into score factors,
files into rankings of their chunks' evidence, long queries into windows, and snippets into a token budget.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DEFINITION_KINDS = frozenset({"function", "class", "method"})
DOC_LANGUAGES = frozenset({"markdown", "rst", "text", "asciidoc", "org"})
DOC_DIRS = frozenset({"doc", "docs", "documentation", "man"})
DOC_NAMES = re.compile(r"^(changelog|changes|history|news|release[-_ ]?notes|readme|authors|contributing|license|"
                       r"copying|notice|todo)\b", re.IGNORECASE)
DOC_SUFFIXES = frozenset({".md", ".rst", ".txt", ".adoc", ".org", ".markdown"})
_TEST_WORDS = re.compile(r"\b(tests?|testing|pytest|unittest|fixtures?|specs?|mocks?|conftest)\b", re.IGNORECASE)
_DOC_WORDS = re.compile(r"\b(docs?|documentation|documented|readme|changelog|changes|release notes?|guide|tutorial|"
                        r"howto|manual)\b", re.IGNORECASE)
_WORD = re.compile(r"`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
_CAMEL_INNER = re.compile(r"[a-z0-9][A-Z]")
_SNIPPET_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class RankingPriors:
    """Score factors of code-aware ranking (1.0 means no change); the defaults are ``SearchConfig``'s."""

    test_factor: float = 0.5          # test files, unless the query asks for tests
    doc_factor: float = 0.5           # docs, changelogs, READMEs, unless the query asks for docs
    reference_factor: float = 0.85    # chunks that define nothing (module-level blocks, line windows)
    identifier_factor: float = 3.0    # chunks whose symbol is an identifier written in the query


@dataclass
class Candidate:
    """One chunk in the ranking: its id, score and the features ranking reads."""

    id: str
    score: float
    path: str
    language: str = ""
    symbol: str = ""
    kind: str = ""
    is_test: bool = False
    row: dict = field(default_factory=dict)   # store fields when known (path, lines, text, ...)


@functools.lru_cache(maxsize=1 << 16)
def is_doc_path(path: str, language: str | None = None) -> bool:
    """True for documentation files: markdown/rst/text, docs/ folders, CHANGELOG, README, NEWS, ..."""
    if (language or "").lower() in DOC_LANGUAGES:
        return True
    *dirs, name = path.split("/")
    dot = name.rfind(".")
    if dot > 0 and name[dot:].lower() in DOC_SUFFIXES:
        return True
    if DOC_NAMES.match(name):
        return True
    return any(part.lower() in DOC_DIRS for part in dirs)


def query_identifiers(query: str) -> tuple[set[str], bool]:
    """(identifier-like names in the query, whether the query is nothing but one identifier).

    A word counts as an identifier when it looks like code: it has an underscore or an inner capital
    (``rrf_fuse``, ``TokenBudgetBatcher``, ``parseConfig``), is dotted (``CodeIndex.search``), is written in
    backticks, or is followed by ``(``. A query that is one bare word (``search``) is a name lookup. Dotted
    names also give their last part (``CodeIndex.search`` -> ``search``), which is how symbols end.
    """
    names: set[str] = set()
    text = query.strip()
    bare = re.fullmatch(r"`?([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:\(\))?`?", text)
    for m in _WORD.finditer(query):
        quoted, word = m.group(1), m.group(2)
        if quoted is not None:
            inner = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*(?:\(.*\))?", quoted.strip())
            if not inner:
                continue
            word = quoted.strip().split("(")[0].strip(".")
        elif not ("_" in word.strip("_") or "." in word or _CAMEL_INNER.search(word)
                  or query[m.end():m.end() + 1] == "(" or bare):
            continue
        parts = word.split(".")
        if not word.strip("_") or (len(parts) > 1 and all(len(p) <= 2 for p in parts)):
            continue  # "e.g", "i.e": prose, not code
        names.update(n for n in (word, parts[-1]) if len(n.strip("_")) >= 2 or bare)
    return names, bool(bare)


def wants_tests(query: str, path_globs: Sequence[str] = ()) -> bool:
    """Whether the query (or an include glob) asks for tests, so they are not ranked down."""
    return bool(_TEST_WORDS.search(query)) or any(
        not g.startswith("!") and _TEST_WORDS.search(g.replace("/", " ").replace("*", " ")) for g in path_globs)


def wants_docs(query: str, path_globs: Sequence[str] = ()) -> bool:
    """Whether the query (or an include glob) asks for documentation."""
    return bool(_DOC_WORDS.search(query)) or any(
        not g.startswith("!") and (_DOC_WORDS.search(g.replace("/", " ").replace("*", " ")) or ".md" in g or ".rst" in g)
        for g in path_globs)


def defines(symbol: str, names: set[str]) -> bool:
    """Whether a chunk's symbol (``A.b``, or ``a, b`` for a merged block) is one of ``names``."""
    for part in symbol.split(", ") if symbol else ():
        if part in names or part.rsplit(".", 1)[-1] in names:
            return True
    return False


def scale(score: float, factor: float) -> float:
    """``score`` moved by ``factor`` in the right direction whatever its sign (cosine scores may be negative)."""
    return score * factor if score >= 0 else score / factor


def rerank(candidates: list[Candidate], query: str, priors: RankingPriors, path_globs: Sequence[str] = (),
           identifiers: tuple[set[str], bool] | None = None) -> list[Candidate]:
    """Candidates re-scored by code-aware priors, best first (scores are changed in place).

    A query that is one identifier puts the chunks defining it first. Otherwise defining chunks of a query
    identifier get ``identifier_factor``; tests and docs get their factors unless the query asks for them;
    chunks that define nothing get ``reference_factor``.
    """
    names, lookup = identifiers if identifiers is not None else query_identifiers(query)
    keep_tests, keep_docs = wants_tests(query, path_globs), wants_docs(query, path_globs)
    first: list[Candidate] = []
    rest: list[Candidate] = []
    for c in candidates:
        f = 1.0
        if c.is_test and not keep_tests:
            f *= priors.test_factor
        doc = is_doc_path(c.path, c.language)
        if doc and not keep_docs:
            f *= priors.doc_factor
        named = bool(names) and defines(c.symbol, names)
        if named:
            f *= priors.identifier_factor
        elif c.kind and c.kind not in DEFINITION_KINDS and not doc:  # docs define nothing by nature
            f *= priors.reference_factor
        c.score = scale(c.score, f)
        (first if named and lookup else rest).append(c)
    first.sort(key=lambda c: -c.score)
    rest.sort(key=lambda c: -c.score)
    return first + rest


@dataclass
class FileHit:
    """A file ranked by the evidence of its chunks: its best chunks (best first) and a combined score."""

    path: str
    score: float
    language: str | None
    chunks: list[Candidate]


def rank_files(candidates: list[Candidate], weights: Sequence[float] = (1.0, 0.5, 0.25)) -> list[FileHit]:
    """Files by a decaying sum of their best chunks' scores: ``w0 * s1 + w1 * s2 + ...`` (chunks best first).

    The best chunk dominates; more matching chunks in the same file add evidence, with less weight each.
    """
    by_path: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_path.setdefault(c.path, []).append(c)
    files = []
    for path, cs in by_path.items():
        cs.sort(key=lambda c: -c.score)
        score = cs[0].score + sum(w * max(c.score, 0.0) for w, c in zip(weights[1:], cs[1:]))
        files.append(FileHit(path, score, cs[0].language or None, cs[: len(weights)]))
    files.sort(key=lambda f: -f.score)
    return files


# ---- query windows (the dense leg of a long query)
def query_windows(text: str, count_tokens: Callable[[list[str]], list[int]], budget: int,
                  max_windows: int = 32, min_tokens: int | None = None) -> list[str]:
    """``text`` cut into at most ``max_windows`` pieces of at most about ``budget`` tokens, at line boundaries.

    Lines are packed whole (a traceback's frames stay together); a line longer than the budget is cut at
    word boundaries. With ``min_tokens``, a window also ends at a paragraph break (a blank line) once it holds
    that many tokens, so an issue's paragraphs are embedded apart instead of diluting each other; without it,
    windows are packed to the budget. ``count_tokens`` counts the tokens of bare texts (no prefix, no specials).
    """
    if budget < 1:
        raise ValueError(f"window budget must be positive, got {budget}")
    lines = text.split("\n")
    costs = count_tokens(lines)
    pieces: list[tuple[str, int, bool]] = []   # (text, tokens, ends a paragraph)
    for n, (line, cost) in enumerate(zip(lines, costs)):
        ends = n + 1 < len(lines) and not lines[n + 1].strip()
        if cost <= budget:
            pieces.append((line, cost, ends))
            continue
        words = line.split(" ")
        per_word = cost / max(len(words), 1)
        step = max(1, int(budget / max(per_word, 1e-9)))
        for i in range(0, len(words), step):
            part = " ".join(words[i:i + step])
            last = i + step >= len(words)
            pieces.append((part, min(budget, math.ceil(per_word * len(words[i:i + step]))), ends and last))
    windows: list[str] = []
    current: list[str] = []
    used = 0
    for piece, cost, ends in pieces:
        if current and used + cost + 1 > budget:
            windows.append("\n".join(current))
            current, used = [], 0
        current.append(piece)
        used += cost + 1
        if ends and min_tokens is not None and used >= min_tokens:
            windows.append("\n".join(current))
            current, used = [], 0
    if current:
        windows.append("\n".join(current))
    windows = [w.strip("\n") for w in windows if w.strip()]
    return windows[:max_windows]


def fuse_windows(lists: list[list[tuple[str, float]]], how: str, k: float = 60.0) -> list[tuple[str, float]]:
    """One dense list from the lists of several query windows, best first.

    ``max``: a chunk's best similarity to any window (a relevant paragraph anywhere in the issue counts
    fully). ``rrf``: reciprocal-rank fusion of the windows' lists.
    """
    scores: dict[str, float] = {}
    for hits in lists:
        for rank, (cid, s) in enumerate(hits, start=1):
            if how == "max":
                scores[cid] = max(scores.get(cid, -math.inf), s)
            elif how == "rrf":
                scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
            else:
                raise ValueError(f"unknown window fusion {how!r}; valid: max, rrf")
    return sorted(scores.items(), key=lambda t: -t[1])


# ---- token budget for agents
def snippet_tokens(text: str) -> int:
    """Tokens of a snippet as budgets count them: words (``\\w+``) and punctuation marks, one each.

    A model-free count, the same for every index: on code it lands near the counts of LLM tokenizers
    (which split long identifiers but merge whitespace), and it never needs the embedding model.
    """
    return len(_SNIPPET_TOKEN.findall(text))


def fit_budget(snippets: list[str], budget: int) -> list[str | None]:
    """The snippets that fit in ``budget`` tokens, in order: the first that overflows is cut at a line
    boundary (kept if any line fits), and everything after it is None (left out)."""
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"budget must be a positive number of tokens, got {budget!r}")
    out: list[str | None] = []
    left = budget
    for text in snippets:
        if left <= 0:
            out.append(None)
            continue
        n = snippet_tokens(text)
        if n <= left:
            out.append(text)
            left -= n
            continue
        kept: list[str] = []
        for line in text.split("\n"):
            c = snippet_tokens(line)
            if c > left:
                break
            kept.append(line)
            left -= c
        out.append("\n".join(kept) if kept else None)
        left = 0
    return out
