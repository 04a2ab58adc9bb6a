"""The HTTP layer: OpenAI-compatible and hosted-API-style embeddings, search, health and metrics.

A thin layer: it validates a request, counts its tokens, puts it on the ``TokenBudgetBatcher``
and encodes the answer. The model itself only ever runs on the batcher's engine thread.

    from codesift.serve.app import create_app
    from codesift.serve.config import ServeConfig
    app = create_app(ServeConfig(model="jinaai/jina-code-embeddings-0.5b"))   # then: uvicorn.run(app)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from codesift import __version__
from codesift.index.request import SearchRequest
from codesift.model.encoder import Encoder, TokenCount
from codesift.model.inputs import printable
from codesift.serve.batcher import BatchKey, QueueFull, ShuttingDown, TokenBudgetBatcher
from codesift.serve.config import ServeConfig
from codesift.serve.metrics import ServerMetrics
from codesift.serve.schemas import INPUT_ERROR, EmbeddingRequest, encode_vectors
from codesift.tasks import TASKS, resolve_task

log = logging.getLogger(__name__)

try:  # orjson writes float32 vectors 5-10x faster than json and with float32's shortest repr
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None


class APIError(Exception):
    """An error answered as OpenAI does: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


def render_json(payload: Any) -> bytes:
    """Serialise a payload that may hold numpy float32 vectors."""
    if orjson is not None:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(payload, default=lambda o: o.tolist(), separators=(",", ":")).encode()


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer (numpy-aware)."""
    return Response(render_json(payload), status_code=status, media_type="application/json", headers=headers)


def served_name(config: ServeConfig) -> str:
    """The model id clients see: never a local path (it would leak the server's file layout)."""
    if config.served_model_name:
        return config.served_model_name
    path = Path(config.model).expanduser()
    if path.exists():
        return path.stem if path.is_file() else path.name
    if config.model.startswith(("/", "~", ".")) or config.model.endswith(".gguf") or config.model.count("/") > 1:
        return path.stem if path.suffix == ".gguf" else path.name  # a path that is not there (yet)
    return config.model  # a hub id


@dataclass
class ServerState:
    """What the routes share: config, queue, metrics and, once loaded, the model and index."""

    config: ServeConfig
    batcher: TokenBudgetBatcher
    metrics: ServerMetrics
    model_name: str
    embedder: Encoder | None = None
    index: Any = None
    status: str = "loading"  # loading | ready | failed
    error: BaseException | None = None  # why loading failed: for the log and the exit, never for clients
    on_load_failure: Any = None  # called once loading failed (`codesift serve` stops the server: exit non-zero)
    started_at: float = field(default_factory=time.time)
    # Token counting has two lanes, each a thread with its own tokenizer copy: requests of more than
    # config.big_request_chars characters count on the second, so a small request never waits behind them.
    count_tokens: TokenCount | None = None
    count_tokens_big: TokenCount | None = None
    tokenize_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="codesift-tokenize"))
    big_tokenize_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="codesift-tokenize-big"))

    def counting_lane(self, texts: list[str]) -> tuple[ThreadPoolExecutor, TokenCount | None]:
        """(executor, counter) for a request: big ones count on their own lane."""
        if sum(len(t) for t in texts) > self.config.big_request_chars:
            return self.big_tokenize_executor, self.count_tokens_big
        return self.tokenize_executor, self.count_tokens

    def ready_embedder(self) -> Encoder:
        """The model, or a 503 (with Retry-After) while it loads or after it failed."""
        if self.batcher.closing:
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down",
                           headers={"Retry-After": str(self.config.retry_after_s)})
        if self.status != "ready":
            msg = "the model is still loading" if self.status == "loading" else \
                "the model failed to load; the server log says why"
            raise APIError(503, msg, type="server_error", code=f"model_{self.status}",
                           headers={"Retry-After": str(self.config.retry_after_s * 5)})
        return self.embedder


def _load_engine(config: ServeConfig) -> Encoder:
    from codesift.model.embedder import Embedder

    dtype = config.dtype
    if dtype == "auto" and config.index_dir is not None:  # embed queries as the index's documents were
        from codesift.index import stored_dtype

        dtype = stored_dtype(config.index_dir) or dtype
    return Embedder(model=config.model, device=config.device, dtype=dtype, max_length=config.max_length)


def _open_index(index_dir: Path, embedder: Encoder) -> Any:
    from codesift.index import open_index  # the index area; imported only when an index is configured

    return open_index(index_dir, embedder)


async def _served_index(state: ServerState) -> Any:
    """The served index, opened again when its file was replaced (restored from a backup, rebuilt); a 409 when it
    is gone (`git clean -fdx`): answering from, or refreshing into, a deleted file would be silently wrong."""
    index = state.index
    if not index.replaced():
        return index
    from codesift.index.config import DB_NAME

    if not (Path(index.index_dir) / DB_NAME).is_file():
        raise APIError(409, "the served index was deleted; rebuild it with `codesift index ROOT` (the server opens "
                       "it again on the next request)", code="index_gone")
    log.info("the index file at %s was replaced; opening it again", index.index_dir)
    fresh = await state.batcher.run_in_engine(_open_index, index.index_dir, state.embedder)
    state.index = fresh
    await state.batcher.run_in_engine(index.close)
    return fresh


async def _load(state: ServerState, embedder: Encoder | None) -> None:
    try:
        if embedder is None:
            embedder = await state.batcher.run_in_engine(_load_engine, state.config)
        if state.config.index_dir is not None:
            state.index = await state.batcher.run_in_engine(_open_index, state.config.index_dir, embedder)
        state.count_tokens, state.count_tokens_big = embedder.token_counter(), embedder.token_counter()
        state.embedder = state.batcher.engine = embedder
        state.status = "ready"
        state.metrics.ready.set(1)
        log.info("serving %s as %r", embedder, state.model_name)
    except Exception as exc:  # said in the log only: /health needs no key, and must not show paths or errors
        user_error = isinstance(exc, (ValueError, OSError)) or type(exc).__name__ == "ModelNotAvailableError"
        log.error("loading %s failed: %s", state.config.model, exc, exc_info=not user_error)
        state.status, state.error = "failed", exc
        state.metrics.ready.set(0)
        if state.on_load_failure is not None:
            state.on_load_failure()


class BodyLimitMiddleware:
    """Answer 413 to bodies over ``max_bytes`` (declared or streamed) before any parsing, and 408 to a body
    that takes longer than ``timeout_s`` to arrive (a slow or stalled client must not hold a connection)."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        deadline = time.monotonic() + self.timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return await self._error(send, 408, f"the request body did not arrive within {self.timeout_s:g} s",
                                         "body_timeout")
            if message["type"] != "http.request":
                return  # the client went away while sending
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._too_large(send)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for http.disconnect

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        await self._error(send, 413, f"request body is larger than {self.max_bytes} bytes; send fewer or shorter "
                                     "inputs per request", "request_too_large")

    @staticmethod
    async def _error(send: Any, status: int, message: str, code: str) -> None:
        body = render_json({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                      "code": code}})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Count requests and time them, by route template and status.

    A request answered with nothing because its client went away counts as 499 (nginx's "client
    closed request"), not as a server error.
    """

    def __init__(self, app: Any, metrics: ServerMetrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
        started = time.perf_counter()
        status: int | None = None

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            status = status or 500
            raise
        finally:
            self.metrics.requests.labels(route, str(status or 499)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# -- what every route shares ---------------------------------------------------------------------------
def server_state(request: Request) -> ServerState:
    """The ``ServerState`` of the app serving ``request`` (built by ``create_app``)."""
    return request.app.state.codesift


def authorize(request: Request) -> None:
    """A 401 unless the request carries one of the configured API keys (when keys are required)."""
    config = server_state(request).config
    if not config.auth_required:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not any(
            hmac.compare_digest(token.encode(), key.encode()) for key in config.api_keys):
        raise APIError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                       type="authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


PROTECTED = [Depends(authorize)]


# -- errors --------------------------------------------------------------------------------------------
async def api_error_response(request: Request, exc: APIError) -> Response:
    """An ``APIError`` as OpenAI's error body."""
    # printable(): a message that quotes the client's invalid text must still be valid JSON
    return json_response({"error": {"message": printable(exc.message), "type": exc.type, "param": exc.param,
                                    "code": exc.code}}, exc.status, exc.headers)


async def invalid_request_response(request: Request, exc: RequestValidationError) -> Response:
    """A body that is not JSON, or that its request model refused, as a 400 naming the field."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return await api_error_response(request, APIError(400, "request body is not valid JSON", code="invalid_json"))
    for e in errors:  # a check of the request model that names its own param and code (schemas.input_error)
        if e.get("type") == INPUT_ERROR:
            ctx = e["ctx"]
            return await api_error_response(request, APIError(400, ctx["message"], param=ctx["param"],
                                                              code=ctx["code"]))
    parts, param = [], None
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        # pydantic reports each member of a union; keep the first message per field
        name = ".".join(x for x in loc if not x.startswith(("str", "list[", "function-", "literal[")))
        param = param or name or None
        if not any(p.startswith(f"{name}:") for p in parts):
            parts.append(f"{name or 'body'}: {e.get('msg')}")
    return await api_error_response(request, APIError(400, "invalid request: " + "; ".join(parts), param=param,
                                                      code="invalid_request"))


async def http_error_response(request: Request, exc: StarletteHTTPException) -> Response:
    """Starlette's own errors (an unknown route, a wrong method) in the same shape."""
    return await api_error_response(request, APIError(exc.status_code, str(exc.detail),
                                                      code="not_found" if exc.status_code == 404 else None))


# -- routes (registered by create_app, from ROUTES) -----------------------------------------------------
async def health(request: Request) -> Response:
    """200 when the model is ready; 503 while it loads, after it failed, or while the server drains."""
    state = server_state(request)
    if state.batcher.closing:
        return json_response({"status": "draining"}, 503)
    if state.status != "ready":  # never the error itself: it may hold local paths
        return json_response({"status": state.status}, 503, {"Retry-After": str(state.config.retry_after_s * 5)})
    return json_response({"status": "ok"})


async def models(request: Request) -> Response:
    """The one model served, as OpenAI lists models."""
    state = server_state(request)
    return json_response({"object": "list", "data": [{"id": state.model_name, "object": "model",
                                                      "created": int(state.started_at), "owned_by": "codesift"}]})


async def info(request: Request) -> Response:
    """Version, model, limits and batching settings (TEI's /info)."""
    state = server_state(request)
    config, emb = state.config, state.embedder
    out: dict[str, Any] = {
        "version": __version__, "model": state.model_name, "status": state.status,
        "default_task": config.default_task, "index": state.index is not None,
        "embedding_types": ["float", "base64", "binary", "ubinary"],
        "limits": {"max_inputs_per_request": config.max_inputs_per_request, "max_body_bytes": config.max_body_bytes,
                   "max_input_tokens": emb.max_length if emb is not None else config.max_length,
                   "max_queue_tokens": config.max_queue_tokens, "max_queue_requests": config.max_queue_requests},
        "batching": {"enabled": config.batching, "max_batch_tokens": config.max_batch_tokens,
                     "max_wait_ms": config.max_wait_ms, "share_tokens": config.share_tokens},
    }
    if emb is not None:
        out.update(dimension=emb.dimension, matryoshka_dims=list(emb.matryoshka_dims), pooling=emb.pooling,
                   fingerprint=emb.fingerprint,
                   tasks=[f"{t}.{r}" for t in TASKS.names() for r in ("query", "passage")])  # what resolve_task takes
    return json_response(out)


async def prometheus(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(server_state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """Vectors of the inputs (the body checked itself: ``EmbeddingRequest``), batched by tokens on the engine."""
    state = server_state(request)
    config = state.config
    emb = state.ready_embedder()
    if body.model is not None and body.model not in (state.model_name, config.model):
        raise APIError(404, f"model {body.model!r} is not served here; this server serves {state.model_name!r} "
                            "(see GET /v1/models)", param="model", code="model_not_found")
    texts = body.texts()
    if len(texts) > config.max_inputs_per_request:
        raise APIError(413, f"input has {len(texts)} items, more than the limit of "
                            f"{config.max_inputs_per_request} per request; split it into several requests",
                       param="input", code="too_many_inputs")
    try:
        task, role = resolve_task(body.task or config.default_task)
    except ValueError as exc:
        raise APIError(400, str(exc), param="task") from None
    if body.dimensions is not None and body.dimensions > emb.dimension:
        raise APIError(400, f"dimensions={body.dimensions} is larger than the model's {emb.dimension}; "
                            f"Matryoshka dims: {list(emb.matryoshka_dims)}", param="dimensions")
    counts = await _count_tokens(state, texts, task.name, role, body.truncate)
    if await request.is_disconnected():  # gone while its tokens were counted: queue nothing
        state.metrics.cancelled.inc()
        raise APIError(499, "client closed the request", code="client_closed")
    ticket = _submit(state, texts, counts, BatchKey(task.name, role, body.truncate))
    vectors = await _wait(state, request, ticket)
    if body.dimensions is not None:
        from codesift.model.embedder import finish_vectors

        vectors = finish_vectors(vectors, body.dimensions, normalize=True)
    data = [{"object": "embedding", "index": i, "embedding": v}
            for i, v in enumerate(encode_vectors(vectors, body.output_type()))]
    total = sum(counts)
    return json_response({"object": "list", "data": data, "model": state.model_name,
                          "usage": {"prompt_tokens": total, "total_tokens": total}})


async def _count_tokens(state: ServerState, texts: list[str], task: str, role: str, truncate: bool) -> list[int]:
    """Token counts of ``texts`` (each at most the model's limit), or the 400/413/503 that admission answers."""
    try:
        if state.batcher.closing:
            raise ShuttingDown("the server is shutting down")
        # Counting runs on its own thread with its own tokenizer copy, so admission (and 429s) never waits behind a
        # forward pass on the engine thread; long texts are counted only as far as the limit needs
        # (Embedder.count_tokens).
        executor, count = state.counting_lane(texts)
        counts = await asyncio.get_running_loop().run_in_executor(executor, lambda: count(texts, task=task, role=role))
    except ShuttingDown as exc:
        raise APIError(503, str(exc), type="server_error") from None
    limit = state.embedder.max_length
    too_long = [i for i, n in enumerate(counts) if n > limit]
    if too_long and not truncate:
        i = too_long[0]
        more = f" ({len(too_long) - 1} more inputs are too long too)" if len(too_long) > 1 else ""
        raise APIError(400, f"input[{i}] is over the limit of {limit} tokens ({counts[i]} counted){more}; shorten or "
                            "split it, or send \"truncate\": true to cut it", param=f"input[{i}]", code="input_too_long")
    counts = [min(n, limit) for n in counts]
    total, most = sum(counts), state.config.max_queue_tokens
    if total > most:
        raise APIError(413, f"the request has {total} tokens, more than this server can queue ({most}); split it into "
                            "several requests", param="input", code="request_too_large")
    return counts


def _submit(state: ServerState, texts: list[str], counts: list[int], key: BatchKey) -> Any:
    """Queue ``texts`` on the batcher; a 429 when the queue is full, a 503 while shutting down."""
    retry = {"Retry-After": str(state.config.retry_after_s)}
    try:
        return state.batcher.submit(texts, counts, key)
    except QueueFull as exc:
        state.metrics.rejected.labels("queue_full").inc()
        raise APIError(429, f"{exc}; retry later", type="server_error", code="queue_full", headers=retry) from None
    except ShuttingDown as exc:
        state.metrics.rejected.labels("shutting_down").inc()
        raise APIError(503, str(exc), type="server_error", code="shutting_down", headers=retry) from None


async def _wait(state: ServerState, request: Request, ticket: Any) -> np.ndarray:
    """The ticket's vectors; drops its queued work if the client disconnects or the timeout passes."""
    batcher, timeout_s = state.batcher, state.config.request_timeout_s
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({ticket.future, watcher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server gave up on this request (shutdown timeout)
        batcher.cancel(ticket)
        raise
    finally:
        watcher.cancel()
    if ticket.future in done:
        exc = ticket.future.exception()
        if isinstance(exc, ShuttingDown):
            raise APIError(503, str(exc), type="server_error", code="shutting_down")
        if exc is not None:
            log.error("request failed on the engine: %s: %s", type(exc).__name__, exc)
            raise APIError(500, "the engine failed on this request; the server log says why", type="server_error",
                           code="engine_error")
        return ticket.future.result()
    batcher.cancel(ticket)
    if watcher in done:
        state.metrics.cancelled.inc()
        raise APIError(499, "client closed the request", code="client_closed")
    raise APIError(504, f"the request took longer than {timeout_s:g} s; send fewer inputs", type="server_error",
                   code="timeout")


def _require_index(state: ServerState) -> None:
    """A 503 until the model is ready, a 404 when the server has no index."""
    state.ready_embedder()
    if state.index is None:
        raise APIError(404, "no index is configured on this server; start it with `codesift serve --index DIR`",
                       code="no_index")


async def search(body: SearchRequest, request: Request) -> Response:
    """One ``SearchRequest`` on the served index, run on the engine thread."""
    state = server_state(request)
    _require_index(state)
    if body.limit > state.config.max_search_limit:
        raise APIError(400, f"limit={body.limit} is over the maximum of {state.config.max_search_limit}", param="limit")
    index = await _served_index(state)
    try:
        results = await state.batcher.run_in_engine(index.run, body)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    return json_response({"object": "list", "query": body.query, "mode": body.mode,
                          "results": [r.to_dict() for r in results]})


async def refresh_index(request: Request) -> Response:
    """Re-index what changed in the served index's tree (incremental), on the engine thread."""
    state = server_state(request)
    _require_index(state)
    index = await _served_index(state)
    try:
        report = await state.batcher.run_in_engine(index.refresh)
    except ValueError as exc:
        raise APIError(409, printable(str(exc)), code="refresh_failed") from None
    return json_response({"object": "index.refresh", "report": report.to_dict()})


ROUTES = (  # path, method, handler, whether it needs an API key (when keys are configured)
    ("/health", "GET", health, False),
    ("/v1/models", "GET", models, True),
    ("/info", "GET", info, True),
    ("/metrics", "GET", prometheus, True),
    ("/v1/embeddings", "POST", embeddings, True),
    ("/v1/search", "POST", search, True),
    ("/v1/index/refresh", "POST", refresh_index, True),
)


# -- the app ---------------------------------------------------------------------------------------------
@asynccontextmanager
async def _lifespan(app: FastAPI, embedder: Encoder | None = None):
    """Start the batcher and load the model (``embedder``, else ``config.model``) in the background; on the way
    out (uvicorn has already let in-flight requests finish: SIGTERM drain), stop the engine."""
    state: ServerState = app.state.codesift
    state.batcher.start()
    loading = asyncio.create_task(_load(state, embedder))
    try:
        yield
    finally:
        loading.cancel()
        await state.batcher.close(timeout=state.config.drain_timeout_s)
        state.tokenize_executor.shutdown(wait=False, cancel_futures=True)
        state.big_tokenize_executor.shutdown(wait=False, cancel_futures=True)


def create_app(config: ServeConfig, embedder: Encoder | None = None, on_load_failure: Any = None) -> FastAPI:
    """The ASGI app. With ``embedder`` given it serves that model; otherwise it loads ``config.model``
    in the background (``/health`` answers 503 until it is ready). ``on_load_failure()`` is called if
    loading fails (`codesift serve` then stops and exits non-zero, so that a supervisor restarts it)."""
    metrics = ServerMetrics()
    batcher = TokenBudgetBatcher(
        max_batch_tokens=config.max_batch_tokens, max_wait_ms=config.max_wait_ms, share_tokens=config.share_tokens,
        max_queue_tokens=config.max_queue_tokens, max_queue_requests=config.max_queue_requests,
        batching=config.batching, on_batch=metrics.observe_batch,
    )
    metrics.watch_queue(lambda: batcher.queued_requests, lambda: batcher.queued_tokens)
    app = FastAPI(title="codesift", version=__version__, lifespan=partial(_lifespan, embedder=embedder),
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.codesift = ServerState(config=config, batcher=batcher, metrics=metrics, model_name=served_name(config),
                                     on_load_failure=on_load_failure)
    app.add_exception_handler(APIError, api_error_response)
    app.add_exception_handler(RequestValidationError, invalid_request_response)
    app.add_exception_handler(StarletteHTTPException, http_error_response)
    for path, method, handler, protected in ROUTES:
        app.add_api_route(path, handler, methods=[method], dependencies=PROTECTED if protected else None)
    # The last middleware added is the outermost: metrics see every answer, 413s included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, timeout_s=config.body_timeout_s)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    routes = {r.path for r in app.routes if hasattr(r, "path")}
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes)
    return app
