"""`codesift mcp`: the code index as MCP tools for coding agents (official `mcp` SDK, stdio transport).

Tools, one per job an agent has (docs/search.md):
- ``search_code``: code for a description, identifier or issue text (nl2code), chunks or ``files``;
- ``find_similar``: code like a given piece of code (code2code);
- ``explain_code``: the docs and comments that explain a piece of code (code2nl);
- ``answer_question``: docs and code that answer a question (qa);
- ``index_status``, ``reindex``: honest freshness, and a way to restore it.
Every search tool takes ``limit`` and ``budget`` (a cap on the snippets' total tokens). Every path a tool
accepts or returns lies inside one of the indexed roots given at start; anything else is refused.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codesift.model.encoder import Encoder

log = logging.getLogger(__name__)


class IndexedRoots:
    """The indexes an MCP server may use, opened lazily, one lock each (tools may run concurrently)."""

    def __init__(self, roots: list[str | Path], embedder: Encoder | None = None) -> None:
        from codesift.index.config import DB_NAME
        from codesift.index.indexer import default_index_dir

        if not roots:
            raise ValueError("give at least one indexed source root")
        self.roots: list[Path] = []
        for r in roots:
            p = Path(r).resolve()
            if not (default_index_dir(p) / DB_NAME).is_file():
                raise FileNotFoundError(f"{p} has no codesift index; run `codesift index {r}` first")
            self.roots.append(p)
        self._embedder = embedder
        self._indexes: dict[Path, Any] = {}
        self._locks = {p: threading.Lock() for p in self.roots}

    def index(self, root: Path):
        """The CodeIndex of one root."""
        from codesift.index.indexer import default_index_dir
        from codesift.index.search import CodeIndex

        if root in self._indexes and self._indexes[root].replaced():  # deleted, or restored from a backup
            self._indexes.pop(root).close()
        if root not in self._indexes:
            ix = CodeIndex(default_index_dir(root), embedder=self._embedder)
            self._indexes[root] = ix
        return self._indexes[root]

    def locate(self, path: str) -> tuple[Path, str]:
        """(root, path relative to it) for a path inside one of the roots; ValueError otherwise."""
        if not isinstance(path, str) or not path.strip():
            raise ValueError("path is empty; pass a file path inside an indexed root")
        p = Path(path)
        candidates = [p.resolve()] if p.is_absolute() else [(r / p).resolve() for r in self.roots]
        for full in candidates:
            for root in self.roots:
                if full == root or root in full.parents:
                    return root, full.relative_to(root).as_posix()
        raise ValueError(f"{path} is outside the indexed roots ({', '.join(map(str, self.roots))})")

    def lock(self, root: Path) -> threading.Lock:
        """The lock to hold while using the index of ``root``."""
        return self._locks[root]

    def label(self, root: Path, rel: str) -> str:
        """How a result path is shown: relative to its root when there is one root, else absolute."""
        return rel if len(self.roots) == 1 else str(root / rel)

    def close(self) -> None:
        """Close every open index."""
        for ix in self._indexes.values():
            ix.close()
        self._indexes.clear()


def _user_errors(fn):
    """Report user mistakes (bad query, path outside the roots, ...) to the client with their message."""
    from mcp.server.mcpserver.exceptions import ToolError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, PermissionError) as exc:
            raise ToolError(str(exc)) from exc

    return wrapper


def _across_roots(indexed: IndexedRoots, request, roots=None) -> dict[str, Any]:
    """``request`` on every root (or ``roots``), merged best first, cut to its limit and its token budget."""
    from codesift.index.request import SearchRequest

    if not isinstance(request, SearchRequest):
        request = SearchRequest.of(**request)
    per_root = request.model_copy(update={"budget": None})  # the budget is spent once, on the merged list
    hits: list = []
    for root in roots if roots is not None else indexed.roots:
        with indexed.lock(root):
            ix = indexed.index(root)
            if (len(indexed.roots) > 1 and request.language
                    and request.language not in ix.status(check_staleness=False)["languages"]):
                continue  # with several roots, a language missing from one of them is not an error
            hits += [(root, r) for r in ix.run(per_root)]
    return _merge(indexed, hits, request.limit, request.budget)


def _merge(indexed: IndexedRoots, hits: list, limit: int, budget: int | None) -> dict[str, Any]:
    """(root, result) pairs best first, cut to ``limit`` and the token budget, paths labelled by root."""
    from codesift.index.searcher import apply_budget

    hits.sort(key=lambda t: -t[1].score)
    top = hits[:limit]
    kept = apply_budget([r for _, r in top], budget)
    return {"results": [{**r.to_dict(), "path": indexed.label(root, r.path)} for (root, _), r in zip(top, kept)]}


def _at(indexed: IndexedRoots, path: str | None, line: int | None, code: str | None) -> tuple[dict, list[Path]]:
    """The request fields and roots of a piece of code: pasted ``code`` (every root), or the indexed chunk at
    ``path:line`` (its root)."""
    if code is not None:
        if not isinstance(code, str) or not code.strip():
            raise ValueError("code is empty; paste the code, or pass path and line instead")
        return {"query": code}, indexed.roots
    if path is None or line is None:
        raise ValueError("pass either code, or path and line of indexed code")
    root, rel = indexed.locate(path)
    return {"like": f"{rel}:{line}"}, [root]


def _add_search_tools(server, indexed: IndexedRoots) -> None:
    """The four search tools, one per task: search_code, find_similar, explain_code, answer_question."""

    @server.tool(structured_output=True)
    @_user_errors
    def search_code(query: str, path_glob: str | None = None, language: str | None = None, limit: int = 10,
                    files: bool = False, budget: int | None = None, rerank: bool = True,
                    mode: str = "hybrid") -> dict[str, Any]:
        """Find code for a description, an identifier or a whole issue text (nl2code; hybrid dense + BM25).

        files: rank files instead of chunks (which files to open). budget: cap on the snippets' total tokens
        (words and punctuation marks). rerank=false turns off code-aware ranking (definitions first, tests
        and docs lower). path_glob: gitignore-style glob, '!glob' excludes. mode: hybrid, dense or bm25.
        """
        return _across_roots(indexed, {"query": query, "path_globs": [path_glob] if path_glob else [],
                                       "language": language, "limit": limit, "files": files, "budget": budget,
                                       "rerank": rerank, "mode": mode})

    @server.tool(structured_output=True)
    @_user_errors
    def find_similar(path: str | None = None, line: int | None = None, code: str | None = None, limit: int = 10,
                     budget: int | None = None) -> dict[str, Any]:
        """Find code similar to a piece of code (code2code): the chunk at path:line, or pasted code."""
        target, roots = _at(indexed, path, line, code)
        return _across_roots(indexed, {**target, "task": "code2code", "rerank": False, "limit": limit,
                                       "budget": budget}, roots)

    @server.tool(structured_output=True)
    @_user_errors
    def explain_code(path: str | None = None, line: int | None = None, code: str | None = None, limit: int = 5,
                     budget: int | None = None) -> dict[str, Any]:
        """Find the docs and comments that explain a piece of code (code2nl): the chunk at path:line, or pasted code."""
        target, roots = _at(indexed, path, line, code)
        return _across_roots(indexed, {**target, "task": "code2nl", "mode": "hybrid", "rerank": True, "limit": limit,
                                       "budget": budget}, roots)

    @server.tool(structured_output=True)
    @_user_errors
    def answer_question(question: str, limit: int = 5, budget: int | None = None) -> dict[str, Any]:
        """Find the docs and code that answer a question about the repository (qa task)."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question is empty; ask e.g. 'how do I configure the cache size?'")
        return _across_roots(indexed, {"query": question, "task": "qa", "limit": limit, "budget": budget})


def _add_index_tools(server, indexed: IndexedRoots) -> None:
    """The freshness tools: index_status and reindex."""

    @server.tool(structured_output=True)
    @_user_errors
    def index_status() -> dict[str, Any]:
        """Files, chunks, model and staleness of each indexed root."""
        out = []
        for root in indexed.roots:
            with indexed.lock(root):
                out.append(indexed.index(root).status())
        return {"indexes": out}

    @server.tool(structured_output=True)
    @_user_errors
    def reindex() -> dict[str, Any]:
        """Re-index what changed in each root (incremental); returns what each run did."""
        out = []
        for root in indexed.roots:
            with indexed.lock(root):
                out.append(indexed.index(root).refresh().to_dict())
        return {"reports": out}


def build_server(roots: list[str | Path], embedder: Encoder | None = None):
    """An MCPServer exposing the indexes of ``roots`` as tools."""
    from mcp.server.mcpserver import MCPServer

    indexed = IndexedRoots(roots, embedder)
    server = MCPServer(
        "codesift",
        instructions="Semantic + keyword code search over the indexed repositories. search_code: a description, "
                     "an identifier or a whole issue text (files=true: which files to open); find_similar: code like "
                     "a file:line or pasted code; explain_code: the docs/comments for a piece of code; "
                     "answer_question: docs and code answering a question. budget caps snippet tokens.",
    )
    _add_search_tools(server, indexed)
    _add_index_tools(server, indexed)
    server._codesift_roots = indexed  # for callers that want to close the indexes
    return server


def run_stdio(roots: list[str | Path]) -> None:
    """Serve the tools over stdio until the client disconnects."""
    import anyio

    server = build_server(roots)
    try:
        anyio.run(serve_stdio_guarded, server)
    finally:
        server._codesift_roots.close()


# -- the stdio boundary ----------------------------------------------------------------------------
# The SDK's stdio transport drops a line it cannot parse or validate without answering it, so an
# agent waiting for that request's reply hangs. Every line passes this guard first: what the SDK
# would drop is answered here with a JSON-RPC error; everything else goes on to the SDK unchanged.
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602


def _jsonrpc_error(request_id: Any, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _invalid_text_at(value: Any, where: str = "params") -> str | None:
    """The JSON path and problem of the first string under ``value`` that is not valid Unicode, or None."""
    from codesift.model.inputs import text_problem

    if isinstance(value, str):
        problem = text_problem(value)
        return f"{where}: {problem}" if problem else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and text_problem(key):
            return f"a key in {where}: {text_problem(key)}"
        found = _invalid_text_at(item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]")
        if found:
            return found
    return None


def guard_jsonrpc_line(line: str) -> dict | bool:
    """True: pass ``line`` to the SDK; a dict: the JSON-RPC error to answer instead; False: drop it (blank line,
    or a notification nobody waits for)."""
    if not line.strip():
        return False
    try:
        return _guard(line)
    except RecursionError:  # json, the text check and pydantic all recurse: a 100,000-deep line must not kill us
        return _jsonrpc_error(None, PARSE_ERROR, "Parse error: the line nests too deeply")


def _guard(line: str) -> dict | bool:
    import mcp_types
    import pydantic

    try:
        message = json.loads(line)
    except ValueError as exc:
        return _jsonrpc_error(None, PARSE_ERROR, f"Parse error: the line is not JSON ({exc})")
    request_id = message.get("id") if isinstance(message, dict) else None
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        if isinstance(message, dict) and "id" in message:  # else taken for a notification, and never answered
            return _jsonrpc_error(None, INVALID_REQUEST, "Invalid Request: the id must be a string or an integer")
        request_id = None
    is_notification = isinstance(message, dict) and "id" not in message and "method" in message
    bad_text = _invalid_text_at(message.get("params"), "params") if isinstance(message, dict) else None
    if bad_text:
        if is_notification:
            log.warning("dropped a notification whose %s", bad_text)
            return False
        return _jsonrpc_error(request_id, INVALID_PARAMS, f"Invalid params: text that is not valid UTF-8 in {bad_text}")
    try:
        mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except pydantic.ValidationError as exc:  # not a JSON-RPC message the SDK knows
        if is_notification:
            log.warning("dropped an invalid notification: %s", exc)
            return False
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _jsonrpc_error(request_id, INVALID_REQUEST, f"Invalid Request: not a JSON-RPC 2.0 message ({first})")
    return True


class _LockedWriter:
    """stdout for both the SDK and the guard: one whole line at a time."""

    def __init__(self, stream) -> None:
        import anyio

        self._stream, self._lock = stream, anyio.Lock()

    async def write(self, text: str) -> None:
        async with self._lock:
            await self._stream.write(text)
            await self._stream.flush()

    async def flush(self) -> None:
        pass  # every write is flushed


class _GuardedLines:
    """stdin lines for the SDK, with the ones it would leave unanswered answered (or dropped) here."""

    def __init__(self, stream, out: _LockedWriter) -> None:
        self._stream, self._out = stream, out

    def __aiter__(self):
        return self._lines()

    async def _lines(self):
        async for line in self._stream:
            verdict = guard_jsonrpc_line(line)
            if verdict is True:
                yield line
            elif verdict:
                await self._out.write(json.dumps(verdict) + "\n")


async def serve_stdio_guarded(server, stdin=None, stdout=None) -> None:
    """Run an MCPServer over stdio (or the given text streams) behind ``guard_jsonrpc_line``."""
    import io
    import sys

    import anyio
    from mcp.server.stdio import stdio_server

    stdin = stdin or anyio.wrap_file(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"))
    out = _LockedWriter(stdout or anyio.wrap_file(io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8")))
    lowlevel = server._lowlevel_server  # what MCPServer.run_stdio_async runs; it takes no streams of its own
    async with stdio_server(stdin=_GuardedLines(stdin, out), stdout=out) as (read, write):
        await lowlevel.run(read, write, lowlevel.create_initialization_options())
