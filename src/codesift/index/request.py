"""One search, as every door asks for it: the CLI, the query server, ``POST /v1/search`` and the MCP tools build a
``SearchRequest`` and hand it to ``CodeIndex.run``. The request checks itself (an empty query, a bad glob, a limit out
of range are named errors before any index is touched); what only the index can judge (a language it does not hold,
a line no chunk covers) is left to the search.

``query`` or ``like`` says what to look for: words, an identifier or a whole issue text, or the indexed chunk at
``PATH:LINE`` (which is left out of the answer). ``like`` alone is code like that chunk: task code2code, the dense
list, no code-aware ranking, unless the request says otherwise.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Literal

import pathspec
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from codesift.model.inputs import check_text

MODES = ("hybrid", "dense", "bm25")
SEARCH_TASKS = ("nl2code", "code2code", "code2nl", "qa")
MAX_LIMIT = 1000
LIKE_DEFAULTS = {"task": "code2code", "mode": "dense", "rerank": False}


def visible(text: str) -> str:
    """``text`` without format characters (zero-width spaces, BOMs, direction marks), stripped."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf").strip()


def split_globs(path_globs) -> tuple[list[str], list[str]]:
    """(include globs, exclude globs) from a list where ``!glob`` excludes."""
    if isinstance(path_globs, str):
        path_globs = [path_globs]
    inc, exc = [], []
    for g in path_globs or ():
        g = g.strip()
        if not g or g == "!":
            raise ValueError("empty path glob; pass e.g. --path 'src/**/*.py' or --path '!tests/'")
        (exc if g.startswith("!") else inc).append(g.lstrip("!"))
    return inc, exc


def glob_spec(globs: list[str]) -> pathspec.GitIgnoreSpec | None:
    """The gitignore-style matcher of ``globs`` (None for none); a glob that is not one is a ValueError naming it."""
    if not globs:
        return None
    try:
        return pathspec.GitIgnoreSpec.from_lines(globs)
    except (re.error, ValueError, TypeError) as exc:
        raise ValueError(f"bad path glob in {globs!r} ({exc}); use gitignore syntax, e.g. --path 'src/**/*.py'") from None


class SearchRequest(BaseModel):
    """One search: what to look for, how many, where, and how to rank. Also the body of ``POST /v1/search``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: StrictStr | None = None          # a description, an identifier or a whole issue text
    like: StrictStr | None = None           # PATH:LINE: the indexed chunk there is the query (and left out)
    limit: StrictInt = 10                   # results, 1 to MAX_LIMIT
    language: StrictStr | None = None       # only this language
    path_globs: list[StrictStr] = []        # gitignore syntax; "!glob" excludes
    exclude_tests: StrictBool = False
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    task: Literal["nl2code", "code2code", "code2nl", "qa"] = "nl2code"  # the model task of the dense leg
    two_stage: StrictBool = False           # Matryoshka: scan at the small dim, rerank at full dim
    rerank: StrictBool = True               # code-aware ranking: definitions first, tests and docs lower
    files: StrictBool = False               # rank files by the evidence of their chunks
    budget: StrictInt | None = None         # cap on the snippets' total tokens
    rrf_k: float | None = None              # fusion settings for this request (None: the index's SearchConfig)
    dense_weight: float | None = None
    bm25_weight: float | None = None

    @classmethod
    def of(cls, **fields) -> SearchRequest:
        """A request from keyword fields; a mistake is the ValueError its check raised (one line, no pydantic report)."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise request_error(exc) from None

    @model_validator(mode="before")
    @classmethod
    def _like_defaults(cls, data):
        if isinstance(data, dict) and data.get("like") is not None:
            data = {**LIKE_DEFAULTS, **data}
        return data

    @field_validator("query")
    @classmethod
    def _query_text(cls, query: str | None) -> str | None:
        if query is not None:
            if not visible(query):
                raise ValueError("the query is empty; describe the code you are looking for, e.g. 'parse a config file'")
            check_text(query, "the query")
        return query

    @field_validator("like")
    @classmethod
    def _like_target(cls, like: str | None) -> str | None:
        if like is not None:
            file, sep, line = like.rpartition(":")
            if sep and line.startswith("-") and line[1:].isdigit() or line == "0":
                raise ValueError(f"line must be a positive integer, got {line}")
            if not sep or not file.strip() or not line.isdigit():
                raise ValueError(f"like wants FILE:LINE (--like on the command line; e.g. src/app.py:42), got {like!r}")
        return like

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, mode):
        if isinstance(mode, str) and mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; valid modes: {', '.join(MODES)}")
        return mode

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, task):
        if isinstance(task, str) and task not in SEARCH_TASKS:
            raise ValueError(f"unknown search task {task!r}; valid tasks: {', '.join(SEARCH_TASKS)}")
        return task

    @field_validator("limit")
    @classmethod
    def _limit(cls, limit: int) -> int:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
        return limit

    @field_validator("budget")
    @classmethod
    def _budget(cls, budget: int | None) -> int | None:
        if budget is not None and budget < 1:
            raise ValueError(f"budget (--budget) must be a positive number of tokens, got {budget}")
        return budget

    @field_validator("language")
    @classmethod
    def _language(cls, language: str | None) -> str | None:
        return language.strip().lower() or None if language is not None else None

    @field_validator("path_globs", mode="before")
    @classmethod
    def _globs(cls, globs):
        if isinstance(globs, str):
            globs = [globs]
        if isinstance(globs, (list, tuple)) and all(isinstance(g, str) for g in globs):
            for side in split_globs(globs):
                glob_spec(side)
            return list(globs)
        return globs  # not a list of strings: the type check names it

    @field_validator("rrf_k", "dense_weight", "bm25_weight")
    @classmethod
    def _fusion_number(cls, value: float | None, info) -> float | None:
        if value is not None and not (math.isfinite(value) and value >= 0):  # nan passes `< 0`
            flag = "--" + info.field_name.replace("_", "-")
            raise ValueError(f"{info.field_name} ({flag}) must be a finite number >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> SearchRequest:
        if (self.query is None) == (self.like is None):
            if self.query is None:
                raise ValueError("the query is empty; describe the code you are looking for, e.g. 'parse a config "
                                 "file' (or pass like=FILE:LINE)")
            raise ValueError("pass a query or like=FILE:LINE, not both")
        return self

    @property
    def like_target(self) -> tuple[str, int] | None:
        """``like`` as (path, line), None without it."""
        if self.like is None:
            return None
        file, _, line = self.like.rpartition(":")
        return file, int(line)

    def fusion(self) -> dict[str, float]:
        """The fusion settings this request overrides (SearchConfig field names)."""
        return {k: v for k in ("rrf_k", "dense_weight", "bm25_weight") if (v := getattr(self, k)) is not None}


def request_error(exc: ValidationError) -> ValueError:
    """The first mistake of a request as one ValueError: a check's own error as raised, else 'field: message'."""
    first = exc.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ValueError):
        return cause
    where = ".".join(str(x) for x in first.get("loc", ())) or "the request"
    return ValueError(f"{where}: {first.get('msg')} (got {first.get('input')!r})")
