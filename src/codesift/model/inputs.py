"""What codesift accepts as text, one policy for HTTP, the CLI and MCP.

Text must be valid Unicode: UTF-8 on the wire, and no lone UTF-16 surrogate (``"\\ud800"`` is what a
JavaScript client sends when it cuts a string inside an emoji). Such text is rejected with an error
that names the item, never replaced silently: a vector of different bytes than the caller sent would
be a wrong answer. Files read by the indexer are the one exception (see ``codesift.data.files``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


class InvalidTextError(ValueError):
    """A text is not valid Unicode (invalid UTF-8 bytes, or a lone surrogate)."""


def text_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode, or None when it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if 0xDC80 <= code <= 0xDCFF:  # how Python keeps an undecodable byte of argv or a file name
            return f"byte 0x{code - 0xDC00:02x} at character {exc.start} is not valid UTF-8"
        return (f"it holds a lone UTF-16 surrogate \\u{code:04x} at character {exc.start} "
                "(a string cut inside a surrogate pair, e.g. in the middle of an emoji)")
    return None


def check_text(text: str, name: str) -> str:
    """Return ``text``; raise InvalidTextError naming ``name`` when it is not valid Unicode."""
    problem = text_problem(text)
    if problem is not None:
        raise InvalidTextError(f"{name} is not valid UTF-8 text: {problem}; send UTF-8 text")
    return text


def decode_utf8(data: bytes, name: str) -> str:
    """``data`` decoded as UTF-8; InvalidTextError naming ``name`` and the first bad byte otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidTextError(f"{name} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                               f"(line {line}); convert it first, e.g. `iconv -f LATIN1 -t UTF-8`") from None


def printable(text: str) -> str:
    """``text`` safe to print or send as JSON: an undecodable byte becomes ``\\xff``, a lone surrogate ``\\ud800``."""
    if text_problem(text) is None:
        return text
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                   f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 over the texts in order (length-prefixed, so boundaries count): the key of a cached or sharded
    embedding job."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
