"""uvicorn's HTTP/1.1 protocol with bounds on what arrives before a request exists (and so before any auth).

uvicorn reads headers with no deadline (its keep-alive timer restarts on every byte, so a client that sends one
header line now and then holds a connection forever) and, with httptools, with no size limit. Here the h11
protocol is used with a cap on the bytes of an unfinished request head, and a connection whose head is not
complete ``HEADER_TIMEOUT_S`` seconds after it opened (or after its previous response) is closed.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 64 * 1024


class BoundedH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose request head takes longer than ``HEADER_TIMEOUT_S``."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        waiting_for = self.cycle  # a new request replaces the cycle: then its head has arrived
        self.loop.call_later(HEADER_TIMEOUT_S, self._header_deadline, waiting_for)

    def _header_deadline(self, waiting_for: Any) -> None:
        if self.cycle is waiting_for and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: Any, **options: Any) -> Any:
    """``uvicorn.Config`` for ``app`` with the bounded protocol and header cap (``options`` as uvicorn's)."""
    import uvicorn

    return uvicorn.Config(app, http=BoundedH11Protocol, h11_max_incomplete_event_size=MAX_HEADER_BYTES, **options)
