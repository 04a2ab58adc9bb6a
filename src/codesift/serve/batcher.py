"""The token-budget batching queue between the HTTP layer and the engine.

Requests from many clients wait in one queue; a scheduler task cuts batches of at most
``max_batch_tokens`` tokens that share one (task, role, truncate) key, runs each on the engine in
a single worker thread (so the event loop stays responsive and torch is never called from two
threads), and scatters the vectors back to their requests. Batches are filled round-robin: each
waiting request adds at most ``share_tokens`` per turn, so a huge request is cut into parts that
interleave with small ones instead of starving them. The queue knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codesift.model.encoder import Encoder

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds as much as it may; the client should retry later."""


class ShuttingDown(Exception):
    """The server is draining and accepts no new work."""


@dataclass(frozen=True)
class BatchKey:
    """Texts with the same key can share one forward pass."""

    task: str
    role: str
    truncate: bool


@dataclass(eq=False)
class Ticket:
    """One request in the queue: its texts, how far they have been batched, and its result."""

    key: BatchKey
    texts: list[str]
    tokens: list[int]
    future: asyncio.Future
    next_index: int = 0  # first text not yet put into a batch
    outstanding: int = 0  # texts handed to the engine whose vectors have not come back
    result: np.ndarray | None = None
    cancelled: bool = False
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def waiting_tokens(self) -> int:
        return sum(self.tokens[self.next_index:])


@dataclass
class Batch:
    """A cut batch: the key and (ticket, start, stop) slices in the order of ``texts``."""

    key: BatchKey
    slices: list[tuple[Ticket, int, int]]

    @property
    def texts(self) -> list[str]:
        return [t for ticket, a, b in self.slices for t in ticket.texts[a:b]]

    @property
    def tokens(self) -> int:
        return sum(sum(ticket.tokens[a:b]) for ticket, a, b in self.slices)


BatchObserver = Callable[[int, int, float], None]  # (texts, tokens, seconds) of each finished batch


class TokenBudgetBatcher:
    """Merge requests into token-budget batches, run them on one engine thread, split results back."""

    def __init__(self, max_batch_tokens: int = 16384, max_wait_ms: float = 5.0, share_tokens: int | None = None,
                 max_queue_tokens: int = 1_000_000, max_queue_requests: int = 1024, batching: bool = True,
                 on_batch: BatchObserver | None = None) -> None:
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000.0
        self.share_tokens = share_tokens or max(1, max_batch_tokens // 4)
        self.max_queue_tokens = max_queue_tokens
        self.max_queue_requests = max_queue_requests
        self.batching = batching
        self.on_batch = on_batch
        self.engine: Encoder | None = None  # the queue calls only its encode
        self.queued_tokens = 0  # tokens waiting, not yet in a batch
        self.in_flight = 0  # texts on the engine now
        self._active: collections.deque[Ticket] = collections.deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codesift-engine")
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler on the running event loop."""
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._schedule(), name="codesift-batcher")

    async def close(self, timeout: float = 30.0) -> None:
        """Refuse new work, finish what is queued (up to ``timeout`` s), then stop the engine thread."""
        self._closing = True
        deadline = time.monotonic() + timeout
        while (self._active or self.in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for ticket in list(self._active):
            self._fail(ticket, ShuttingDown("the server shut down before this request ran"))
        self._active.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def queued_requests(self) -> int:
        return len(self._active)

    async def run_in_engine(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the engine thread (tokenising, loading, searching share it with forward passes)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # -- submitting ------------------------------------------------------------------------------
    def check_capacity(self, n_tokens: int) -> None:
        """Raise QueueFull/ShuttingDown if a request of ``n_tokens`` cannot be queued now."""
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if len(self._active) >= self.max_queue_requests or self.queued_tokens + n_tokens > self.max_queue_tokens:
            raise QueueFull(f"the queue is full ({len(self._active)} requests, {self.queued_tokens} tokens waiting)")

    def submit(self, texts: Sequence[str], tokens: Sequence[int], key: BatchKey) -> Ticket:
        """Queue texts (with their token counts) and return a ticket whose ``future`` yields (n, d) vectors."""
        if len(texts) != len(tokens):
            raise ValueError(f"{len(texts)} texts but {len(tokens)} token counts")
        if not texts:
            raise ValueError("no texts to embed")
        n_tokens = int(sum(tokens))
        self.check_capacity(n_tokens)
        ticket = Ticket(key, list(texts), [int(t) for t in tokens], asyncio.get_running_loop().create_future())
        self._active.append(ticket)
        self.queued_tokens += n_tokens
        self._changed.set()
        return ticket

    async def embed(self, texts: Sequence[str], tokens: Sequence[int], key: BatchKey) -> np.ndarray:
        """Queue texts and wait for their vectors; cancelling the wait drops the request's pending work."""
        ticket = self.submit(texts, tokens, key)
        try:
            return await asyncio.shield(ticket.future)
        except asyncio.CancelledError:
            self.cancel(ticket)
            raise

    def cancel(self, ticket: Ticket) -> None:
        """Drop a request's texts that have not reached the engine yet (e.g. its client went away)."""
        if ticket.future.done():
            return
        ticket.cancelled = True
        self._remove(ticket)
        ticket.future.cancel()

    # -- scheduling ------------------------------------------------------------------------------
    def _remove(self, ticket: Ticket) -> None:
        try:
            self._active.remove(ticket)
        except ValueError:
            return
        self.queued_tokens -= ticket.waiting_tokens

    def _fail(self, ticket: Ticket, exc: BaseException) -> None:
        if not ticket.future.done():
            ticket.future.set_exception(exc)

    def cut_batch(self) -> Batch | None:
        """Take the next batch from the queue (round-robin over requests with the head request's key)."""
        if not self._active:
            return None
        head = self._active[0]
        key = head.key
        slices: list[tuple[Ticket, int, int]] = []
        if not self.batching:  # one request per forward pass, whole
            slices.append((head, head.next_index, len(head.texts)))
            self.queued_tokens -= head.waiting_tokens
            head.next_index = len(head.texts)
        else:
            budget = self.max_batch_tokens
            progress = True
            while budget > 0 and progress:
                progress = False
                for ticket in self._active:
                    if ticket.key != key or ticket.next_index >= len(ticket.texts):
                        continue
                    share = min(self.share_tokens, budget)
                    start = stop = ticket.next_index
                    taken = 0
                    while stop < len(ticket.texts):
                        t = ticket.tokens[stop]
                        # An over-budget text goes alone into an empty batch rather than never.
                        if taken + t > share and not (taken == 0 and (t <= budget or not slices)):
                            break
                        taken += t
                        stop += 1
                        if taken >= share:
                            break
                    if stop > start:
                        slices.append((ticket, start, stop))
                        ticket.next_index = stop
                        budget -= taken
                        self.queued_tokens -= taken
                        progress = True
                    if budget <= 0:
                        break
        for ticket, a, b in slices:
            ticket.outstanding += b - a
        # Requests fully batched leave the queue; the head, if it still waits, goes to the back (fairness).
        self._active = collections.deque(t for t in self._active if t.next_index < len(t.texts))
        if self._active and self._active[0] is head:
            self._active.rotate(-1)
        return Batch(key, slices)

    async def _wait_for_batch(self) -> None:
        """Wait for work; then, while the batch is not full, up to max_wait after the oldest request."""
        while not self._active:
            self._changed.clear()
            await self._changed.wait()
        if not self.batching or self.max_wait_s <= 0:
            return
        deadline = min(t.enqueued_at for t in self._active) + self.max_wait_s
        while self.queued_tokens < self.max_batch_tokens and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch()
            batch = self.cut_batch()
            if batch is None or not batch.slices:
                continue
            texts = batch.texts
            n_tokens = batch.tokens
            self.in_flight = len(texts)
            started = time.perf_counter()
            try:
                vecs = await loop.run_in_executor(self._executor, self._encode, texts, batch.key)
            except asyncio.CancelledError:
                for ticket, _, _ in batch.slices:
                    self._fail(ticket, ShuttingDown("the server shut down while this request ran"))
                raise
            except Exception as exc:  # the engine failed: fail every request in the batch, keep serving
                log.exception("engine failed on a batch of %d texts", len(texts))
                for ticket, _, _ in batch.slices:
                    self._remove(ticket)
                    self._fail(ticket, exc)
                continue
            finally:
                self.in_flight = 0
            if self.on_batch is not None:
                self.on_batch(len(texts), n_tokens, time.perf_counter() - started)
            self._scatter(batch, vecs)

    def _encode(self, texts: list[str], key: BatchKey) -> np.ndarray:
        if self.engine is None:
            raise RuntimeError("no engine is loaded")
        return self.engine.encode(texts, task=key.task, role=key.role, dim=None, truncate=key.truncate)

    def _scatter(self, batch: Batch, vecs: np.ndarray) -> None:
        offset = 0
        for ticket, a, b in batch.slices:
            n = b - a
            part = vecs[offset:offset + n]
            offset += n
            if ticket.cancelled or ticket.future.done():
                continue
            if ticket.result is None:
                ticket.result = np.empty((len(ticket.texts), vecs.shape[1]), dtype=np.float32)
            ticket.result[a:b] = part
            ticket.outstanding -= n
            if ticket.outstanding == 0 and ticket.next_index >= len(ticket.texts):
                ticket.future.set_result(ticket.result)
