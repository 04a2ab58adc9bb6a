"""The instruction tasks: query and document prefixes, and the names people use for them.

Each prefix ends in a real newline and is joined to the text with no space (``prefix + text``),
exactly as the jina-code-embeddings model cards and API do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["query", "document"]

ROLE_ALIASES: dict[str, Role] = {
    "query": "query",
    "q": "query",
    "document": "document",
    "passage": "document",
    "doc": "document",
    "corpus": "document",
}


@dataclass(frozen=True)
class Task:
    """One retrieval task: its name and the instruction prefix of each side."""

    name: str
    query_prefix: str
    document_prefix: str

    def prefix(self, role: str) -> str:
        """The prefix for ``role`` (``query``, ``document`` or ``passage``)."""
        return self.query_prefix if normalize_role(role) == "query" else self.document_prefix


_BUILTIN = (
    Task(
        "nl2code",
        "Find the most relevant code snippet given the following query:\n",
        "Candidate code snippet:\n",
    ),
    Task(
        "qa",
        "Find the most relevant answer given the following question:\n",
        "Candidate answer:\n",
    ),
    Task(
        "code2code",
        "Find an equivalent code snippet given the following code snippet:\n",
        "Candidate code snippet:\n",
    ),
    Task(
        "code2nl",
        "Find the most relevant comment given the following code snippet:\n",
        "Candidate comment:\n",
    ),
    Task(
        "code2completion",
        "Find the most relevant completion given the following start of code snippet:\n",
        "Candidate completion:\n",
    ),
)
BUILTIN_TASKS: tuple[str, ...] = tuple(t.name for t in _BUILTIN)


class TaskRegistry:
    """Tasks by name; the five built-ins plus any the user registers."""

    def __init__(self, tasks: tuple[Task, ...] = _BUILTIN) -> None:
        self._tasks: dict[str, Task] = {t.name: t for t in tasks}

    def register(self, name: str, query_prefix: str, document_prefix: str, *, overwrite: bool = False) -> Task:
        """Add a task of your own; its prefixes are used verbatim."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise ValueError(f"task name {name!r} must be letters, digits, '_' or '-' (no dots)")
        if name in self._tasks and not overwrite:
            raise ValueError(f"task {name!r} exists already; pass overwrite=True to replace it")
        task = Task(name, query_prefix, document_prefix)
        self._tasks[name] = task
        return task

    def names(self) -> list[str]:
        return list(self._tasks)

    def get(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise ValueError(
                f"unknown task {name!r}; valid tasks: {', '.join(self._tasks)} "
                f"(optionally with a role: 'nl2code.query', 'nl2code.passage', 'nl2code_query', 'nl2code_document')"
            ) from None

    def split(self, task: str) -> tuple[str, Role | None]:
        """Split ``nl2code.query`` / ``nl2code_document`` into (task name, role); a bare name has no role."""
        return split_task_name(task, self._tasks)

    def resolve(self, task: str, role: str | None = None) -> tuple[Task, Role]:
        """Parse ``nl2code``, ``nl2code.query``, ``nl2code.passage``, ``nl2code_query``, ``nl2code_document``.

        A role inside the name wins over ``role``; if neither gives one, the role is ``query``.
        """
        name, embedded_role = self.split(task)
        if embedded_role and role and normalize_role(role) != embedded_role:
            raise ValueError(f"task {task!r} names role {embedded_role!r} but role={role!r} was given")
        return self.get(name), embedded_role or normalize_role(role or "query")

    def prompts(self) -> dict[str, str]:
        """sentence-transformers prompt names (``nl2code_query`` ...) to prefixes."""
        out: dict[str, str] = {}
        for t in self._tasks.values():
            out[f"{t.name}_query"] = t.query_prefix
            out[f"{t.name}_document"] = t.document_prefix
        return out


def normalize_role(role: str) -> Role:
    """``query`` or ``document`` (``passage`` is accepted as ``document``)."""
    try:
        return ROLE_ALIASES[role.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown role {role!r}; valid roles: query, document (or passage)") from None


def split_task_name(task: str, known: dict[str, Task] | None = None) -> tuple[str, Role | None]:
    """Split ``nl2code.query`` / ``nl2code_document`` into (``nl2code``, role); a bare name has no role."""
    if not isinstance(task, str) or not task:
        raise ValueError("task must be a non-empty string such as 'nl2code' or 'nl2code.query'")
    known = known if known is not None else TASKS._tasks
    if task in known:
        return task, None
    for sep in (".", "_", ":"):
        head, s, tail = task.rpartition(sep)
        if s and head and tail.lower() in ROLE_ALIASES:
            return head, ROLE_ALIASES[tail.lower()]
    return task, None


TASKS = TaskRegistry()


def register_task(name: str, query_prefix: str, document_prefix: str, *, overwrite: bool = False) -> Task:
    """Register a task in the default registry (used by ``Embedder`` and the CLI)."""
    return TASKS.register(name, query_prefix, document_prefix, overwrite=overwrite)


def resolve_task(task: str, role: str | None = None) -> tuple[Task, Role]:
    """Resolve a task name (any accepted spelling) and role against the default registry."""
    return TASKS.resolve(task, role)


def prefix_for(task: str, role: str | None = None) -> str:
    """The instruction prefix for ``task`` and ``role``."""
    t, r = resolve_task(task, role)
    return t.prefix(r)
