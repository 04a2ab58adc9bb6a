"""Reading JSONL files: one object a line, blank lines skipped, a bad line named by file and number.

A bad line is refused here, at load, with its file and line: bytes that are not UTF-8, text that is
not JSON, and a string holding a lone UTF-16 surrogate (``"\\ud800"`` is valid JSON but not text any
tokenizer can encode; found later, it would stop a training run midway).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from codesift.model.inputs import InvalidTextError, text_problem


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of ``path``; ValueError names a line that is not UTF-8 JSON text."""
    path = Path(path)
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidTextError(f"{path}:{n}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not valid "
                                       "UTF-8; convert the file first, e.g. `iconv -f LATIN1 -t UTF-8`") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if "\\u" in line:  # only an escape can make a surrogate: the bytes decoded as UTF-8
                problem = _first_text_problem(obj)
                if problem:
                    raise InvalidTextError(f"{path}:{n}: a string is not valid text: {problem}; fix or drop the line")
            yield n, obj


def _first_text_problem(obj) -> str | None:
    """Why a string (key or value) inside a parsed JSON value is not valid Unicode, or None."""
    stack = [obj]
    while stack:  # iterative: json.loads already bounds the nesting, this adds no recursion of its own
        item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return problem
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None
