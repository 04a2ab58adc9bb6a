"""Prometheus metrics of one server, in a registry of its own (no global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_TEXT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_BATCH_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


class ServerMetrics:
    """Requests, latency, batch sizes, tokens and queue depth of a `codesift serve` process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("codesift_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("codesift_request_duration_seconds", "HTTP request latency", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.texts = Counter("codesift_embedded_texts", "texts embedded", registry=r)
        self.tokens = Counter("codesift_embedded_tokens", "tokens embedded (prefix and special tokens included)",
                              registry=r)
        self.batch_texts = Histogram("codesift_batch_texts", "texts per engine batch", buckets=_BATCH_TEXT_BUCKETS,
                                     registry=r)
        self.batch_tokens = Histogram("codesift_batch_tokens", "tokens per engine batch",
                                      buckets=_BATCH_TOKEN_BUCKETS, registry=r)
        self.batch_seconds = Histogram("codesift_batch_duration_seconds", "engine time per batch",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("codesift_rejected_requests", "requests refused before queueing, by reason",
                                ["reason"], registry=r)
        self.cancelled = Counter("codesift_cancelled_requests", "requests dropped because the client went away",
                                 registry=r)
        self.queue_requests = Gauge("codesift_queue_requests", "requests waiting in the batching queue", registry=r)
        self.queue_tokens = Gauge("codesift_queue_tokens", "tokens waiting in the batching queue", registry=r)
        self.ready = Gauge("codesift_ready", "1 once the model is loaded", registry=r)

    def watch_queue(self, requests: Callable[[], float], tokens: Callable[[], float]) -> None:
        """Read queue depth from the batcher at scrape time."""
        self.queue_requests.set_function(requests)
        self.queue_tokens.set_function(tokens)

    def observe_batch(self, n_texts: int, n_tokens: int, seconds: float) -> None:
        """Record one finished engine batch."""
        self.texts.inc(n_texts)
        self.tokens.inc(n_tokens)
        self.batch_texts.observe(n_texts)
        self.batch_tokens.observe(n_tokens)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
