"""The token-budget batching queue, on a fake engine (no model, no HTTP): merging, fairness, limits."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from codesift.serve.batcher import BatchKey, QueueFull, ShuttingDown, TokenBudgetBatcher
from codesift.testing import StandInEncoder

KEY = BatchKey("nl2code", "query", False)


class FakeEngine(StandInEncoder):
    """Vector of a text = [hash-ish code, len]; records every batch it ran; can be held on an Event."""

    def __init__(self) -> None:
        self.batches: list[tuple[BatchKey, list[str]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail = False

    def encode(self, texts, task="nl2code", role="query", dim=None, normalize=True, truncate=False, **_):
        self.started.set()
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append((BatchKey(task, role, truncate), list(texts)))
        return np.array([[float(sum(map(ord, t))), float(len(t))] for t in texts], dtype=np.float32)


def expected(texts):
    return np.array([[float(sum(map(ord, t))), float(len(t))] for t in texts], dtype=np.float32)


def run(coro):
    return asyncio.run(coro)


def make(engine, **kw) -> TokenBudgetBatcher:
    b = TokenBudgetBatcher(**kw)
    b.engine = engine
    b.start()
    return b


def test_concurrent_requests_merge_into_one_batch_and_results_split_back():
    async def main():
        eng = FakeEngine()
        eng.gate.clear()  # hold the engine so all requests queue up behind a first one
        b = make(eng, max_batch_tokens=1000, max_wait_ms=0)
        first = asyncio.ensure_future(b.embed(["warm"], [1], KEY))
        while not eng.started.is_set():
            await asyncio.sleep(0.001)
        reqs = [[f"r{i}-{j}" for j in range(i + 1)] for i in range(5)]
        futs = [asyncio.ensure_future(b.embed(t, [10] * len(t), KEY)) for t in reqs]
        await asyncio.sleep(0.01)
        eng.gate.set()
        outs = await asyncio.gather(first, *futs)
        await b.close()
        for texts, out in zip(reqs, outs[1:]):
            np.testing.assert_array_equal(out, expected(texts))
        assert len(eng.batches) == 2  # the warm-up, then all five requests together
        assert sorted(eng.batches[1][1]) == sorted(t for r in reqs for t in r)
    run(main())


def test_batches_respect_the_token_budget_and_keys_never_mix():
    async def main():
        eng = FakeEngine()
        eng.gate.clear()
        b = make(eng, max_batch_tokens=50, max_wait_ms=0)
        first = asyncio.ensure_future(b.embed(["warm"], [1], KEY))
        while not eng.started.is_set():
            await asyncio.sleep(0.001)
        other = BatchKey("qa", "document", False)
        a = asyncio.ensure_future(b.embed([f"a{i}" for i in range(12)], [10] * 12, KEY))
        c = asyncio.ensure_future(b.embed([f"c{i}" for i in range(3)], [10] * 3, other))
        await asyncio.sleep(0.01)
        eng.gate.set()
        ra, rc = await asyncio.gather(a, c)
        await first
        await b.close()
        np.testing.assert_array_equal(ra, expected([f"a{i}" for i in range(12)]))
        np.testing.assert_array_equal(rc, expected([f"c{i}" for i in range(3)]))
        for key, texts in eng.batches[1:]:
            assert len(texts) * 10 <= 50
            assert all(t.startswith("c" if key == other else "a") for t in texts)
    run(main())


def test_a_huge_request_does_not_starve_small_ones():
    """Small requests arriving after a huge one finish long before it does."""
    async def main():
        eng = FakeEngine()
        b = make(eng, max_batch_tokens=100, max_wait_ms=0, share_tokens=25)
        order: list[str] = []

        async def req(name, n):
            await b.embed([f"{name}{i}" for i in range(n)], [5] * n, KEY)
            order.append(name)

        eng.gate.clear()
        huge = asyncio.ensure_future(req("huge", 400))  # 2000 tokens = 20 full batches
        while not eng.started.is_set():
            await asyncio.sleep(0.001)
        smalls = [asyncio.ensure_future(req(f"s{i}", 2)) for i in range(6)]
        await asyncio.sleep(0.01)
        eng.gate.set()
        await asyncio.gather(huge, *smalls)
        await b.close()
        assert order[-1] == "huge"
        # every small request rode in the first or second batch after it arrived
        small_batches = [i for i, (_, texts) in enumerate(eng.batches) if any(t.startswith("s") for t in texts)]
        assert max(small_batches) <= 2
    run(main())


def test_oversized_single_text_runs_alone():
    async def main():
        eng = FakeEngine()
        b = make(eng, max_batch_tokens=10, max_wait_ms=0)
        out = await b.embed(["big", "small"], [50, 2], KEY)
        await b.close()
        np.testing.assert_array_equal(out, expected(["big", "small"]))
        assert [texts for _, texts in eng.batches] == [["big"], ["small"]]
    run(main())


def test_full_queue_raises_queue_full_and_closing_refuses_work():
    async def main():
        eng = FakeEngine()
        eng.gate.clear()
        b = make(eng, max_batch_tokens=10, max_wait_ms=0, max_queue_tokens=100, max_queue_requests=3)
        running = asyncio.ensure_future(b.embed(["x"], [1], KEY))
        while not eng.started.is_set():
            await asyncio.sleep(0.001)
        b.submit(["a"], [90], KEY)
        with pytest.raises(QueueFull):
            b.submit(["b"], [20], KEY)  # 90 + 20 > 100 tokens
        b.submit(["c"], [1], KEY)
        b.submit(["d"], [1], KEY)
        with pytest.raises(QueueFull):
            b.submit(["e"], [1], KEY)  # 3 requests waiting already
        eng.gate.set()
        await running
        await b.close()
        with pytest.raises(ShuttingDown):
            b.submit(["f"], [1], KEY)
    run(main())


def test_cancelled_request_work_is_dropped_before_the_engine():
    async def main():
        eng = FakeEngine()
        eng.gate.clear()
        b = make(eng, max_batch_tokens=10, max_wait_ms=0)
        running = asyncio.ensure_future(b.embed(["x"], [1], KEY))
        while not eng.started.is_set():
            await asyncio.sleep(0.001)
        gone = asyncio.ensure_future(b.embed([f"gone{i}" for i in range(20)], [5] * 20, KEY))
        await asyncio.sleep(0.01)
        assert b.queued_tokens == 100
        gone.cancel()  # the HTTP layer cancels the wait when the client disconnects
        await asyncio.sleep(0.01)
        assert b.queued_tokens == 0 and b.queued_requests == 0
        eng.gate.set()
        await running
        kept = await b.embed(["kept"], [1], KEY)
        await b.close()
        np.testing.assert_array_equal(kept, expected(["kept"]))
        assert not any(t.startswith("gone") for _, texts in eng.batches for t in texts)
    run(main())


def test_no_batching_runs_one_request_per_forward_pass():
    async def main():
        eng = FakeEngine()
        eng.gate.clear()
        b = make(eng, batching=False, max_batch_tokens=4)
        first = asyncio.ensure_future(b.embed(["warm"], [1], KEY))
        while not eng.started.is_set():
            await asyncio.sleep(0.001)
        futs = [asyncio.ensure_future(b.embed([f"{i}a", f"{i}b", f"{i}c"], [3, 3, 3], KEY)) for i in range(3)]
        await asyncio.sleep(0.01)
        eng.gate.set()
        await asyncio.gather(first, *futs)
        await b.close()
        assert [texts for _, texts in eng.batches] == [["warm"], ["0a", "0b", "0c"], ["1a", "1b", "1c"],
                                                       ["2a", "2b", "2c"]]
    run(main())


def test_engine_error_fails_only_that_batch_and_close_drains_queued_work():
    async def main():
        eng = FakeEngine()
        b = make(eng, max_batch_tokens=100, max_wait_ms=0)
        eng.fail = True
        with pytest.raises(RuntimeError, match="boom"):
            await b.embed(["x"], [1], KEY)
        eng.fail = False
        eng.gate.clear()
        futs = [asyncio.ensure_future(b.embed([f"t{i}"], [60], KEY)) for i in range(3)]
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(b.close(timeout=10))
        await asyncio.sleep(0.01)
        eng.gate.set()
        outs = await asyncio.gather(*futs)
        await closing
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out, expected([f"t{i}"]))
    run(main())
