"""The one keyword tokenizer of codesift: the BM25 terms of the index (SQLite and Milvus) and of `codesift eval`'s
BM25 baseline.

Identifiers are kept whole and split (``snake_case``, ``camelCase``), lowercased, lightly stemmed, stop words out;
documents and queries both go through it, so "parse configs" matches ``parseConfig``.
"""

from __future__ import annotations

import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "of", "on", "or", "that",
    "the", "this", "to", "with",
})


def stem(word: str) -> str:
    """A deliberately small English suffix stripper ("parse", "parsing", "parsed" and "parses" all end as "pars")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ied"):
        return word[:-3] + "y"
    for suffix, keep in (("ing", 3), ("ed", 3), ("es", 3), ("s", 3)):
        if word.endswith(suffix) and len(word) - len(suffix) >= keep and not word.endswith("ss"):
            if suffix == "es" and not word[:-2].endswith(("s", "x", "z", "ch", "sh")):
                continue
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def code_terms(text: str) -> list[str]:
    """The BM25 terms of a text, in order: each identifier whole, then its parts when it has several."""
    terms: list[str] = []
    for ident in _IDENT.findall(text):
        low = ident.lower()
        pieces = [p.lower() for part in ident.split("_") for p in _CAMEL.findall(part)]
        if low not in _STOP:
            terms.append(stem(low))
        if len(pieces) > 1:
            terms.extend(stem(p) for p in pieces if p not in _STOP and not p.isdigit())
    return terms


def keyword_text(text: str) -> str:
    """``code_terms`` joined by spaces: what the stores index (a term never holds a space)."""
    return " ".join(code_terms(text))
