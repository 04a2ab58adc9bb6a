"""Server configuration: every default of `codesift serve` lives here, once."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from codesift.model.loading import DEFAULT_MODEL
from codesift.tasks import resolve_task


@dataclass
class ServeConfig:
    """How the server loads its model, batches work and guards itself.

    Token figures count the instruction prefix and special tokens, as ``Embedder.count_tokens`` does.
    """

    model: str = DEFAULT_MODEL
    served_model_name: str | None = None  # the id clients send as `model`; default: the model's name
    index_dir: Path | None = None  # enables POST /v1/search
    host: str = "127.0.0.1"
    port: int = 8080
    default_task: str = "nl2code.passage"
    device: str = "auto"
    dtype: str = "auto"
    max_length: int = 8192  # the longest input in tokens; longer ones need truncate=true

    # batching queue (text-embeddings-inference style: batches cut by tokens, not by request count)
    batching: bool = True  # False: one forward pass per request, for comparison
    max_batch_tokens: int = 16384
    max_wait_ms: float = 5.0  # how long an idle engine waits for a batch to fill
    fair_share_tokens: int | None = None  # per request per round; default max_batch_tokens // 4
    max_queue_tokens: int = 1_000_000  # tokens waiting; beyond it new requests get 429
    max_queue_requests: int = 1024

    # per-request limits
    max_inputs_per_request: int = 2048
    max_body_bytes: int = 8 * 1024 * 1024
    max_search_limit: int = 100
    request_timeout_s: float = 300.0
    body_timeout_s: float = 30.0  # the whole request body must arrive within this (else 408)
    big_request_chars: int = 65536  # requests with more characters count their tokens on a lane of their own
    retry_after_s: int = 1

    # security
    api_keys: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)  # CORS off unless origins are given
    drain_timeout_s: float = 30.0  # on SIGTERM: how long in-flight requests may take to finish

    def __post_init__(self) -> None:
        self.validate()

    @property
    def share_tokens(self) -> int:
        """Tokens one request may put into a batch per round-robin turn (fairness)."""
        return self.fair_share_tokens or max(1, self.max_batch_tokens // 4)

    @property
    def auth_required(self) -> bool:
        """Whether requests (except /health) must carry a bearer key."""
        return bool(self.api_keys)

    def validate(self) -> None:
        """Raise ValueError with an actionable message for impossible settings."""
        resolve_task(self.default_task)  # raises on unknown task names
        for name in ("max_length", "max_batch_tokens", "max_queue_tokens", "max_queue_requests",
                     "max_inputs_per_request", "max_body_bytes", "max_search_limit", "big_request_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be > 0, got {self.body_timeout_s}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not 0 < self.port < 65536 and self.port != 0:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if any(not k or any(c.isspace() for c in k) for k in self.api_keys):
            raise ValueError("API keys must be non-empty and contain no whitespace")
        if not is_loopback(self.host) and not self.api_keys:
            raise ValueError(
                f"binding to {self.host!r} exposes the server beyond this machine: give an API key "
                "(--api-key-file FILE or CODESIFT_API_KEY), or bind to 127.0.0.1"
            )
        if self.index_dir is not None and not Path(self.index_dir).is_dir():
            raise FileNotFoundError(f"index directory {self.index_dir} does not exist; build it with `codesift index`")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
