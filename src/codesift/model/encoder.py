"""The ``Encoder`` protocol: what the areas that embed text (index, eval, serve, tune) need from a model.

As in mteb, a model meets its callers through one small protocol instead of callers probing it with
``getattr``. ``Embedder`` implements it (every dtype, the int8 ONNX path included); stand-ins for tests
and benchmarks implement it too, most simply by subclassing ``codesift.testing.StandInEncoder``.

The members, and who reads them:

- ``encode``: every caller. Texts in the caller's order -> an (n, d) float32 array; ``task`` and
  ``role`` choose the instruction prefix, ``dim`` truncates (Matryoshka) before normalising.
- ``name``, ``fingerprint``, ``precision``: what an index or an embedding cache records, so vectors of
  another model (or another precision) are never mixed in.
- ``dimension``, ``matryoshka_dims``, ``max_length``, ``pooling``: sizes and limits (index layout,
  the server's 400s, reports).
- ``count_tokens``, ``token_counter``, ``token_spans``, ``prefix``: token accounting as the model sees a
  text, prefix and special tokens included (chunking, query windows, the server's admission).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


class TokenCount(Protocol):
    """Token count of each text with its prefix and special tokens (a lower bound past ``max_length``)."""

    def __call__(self, texts: Sequence[str], task: str = "nl2code", role: str | None = "query") -> list[int]: ...


@runtime_checkable
class Encoder(Protocol):
    """A task-aware embedding model: texts in, L2-normalised vectors out, with its sizes and token counts."""

    @property
    def name(self) -> str:
        """The model's name as the user gave it (hub id or path)."""
        ...

    @property
    def fingerprint(self) -> str:
        """A stable id of weights + pooling + precision: vectors with equal fingerprints are comparable."""
        ...

    @property
    def precision(self) -> str:
        """What runs the forward pass: ``int8``, ``float32``, ``bfloat16``, ..."""
        ...

    @property
    def pooling(self) -> str:
        """How token states become one vector: ``lasttoken``, ``mean``, ``cls``, ..."""
        ...

    @property
    def dimension(self) -> int:
        """The full vector size."""
        ...

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        """The truncation sizes the model was trained for (the last one is ``dimension``)."""
        ...

    @property
    def max_length(self) -> int:
        """The most tokens one input may have, prefix and special tokens included."""
        ...

    def encode(
        self,
        texts: Sequence[str],
        task: str = "nl2code",
        role: str | None = "query",
        dim: int | None = None,
        normalize: bool = True,
        truncate: bool = False,
        batch_tokens: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` as ``role`` of ``task``: an (n, dim or dimension) float32 array in the caller's order."""
        ...

    def count_tokens(self, texts: Sequence[str], task: str = "nl2code", role: str | None = "query") -> list[int]:
        """Token count of each text with its prefix and special tokens (a lower bound past ``max_length``)."""
        ...

    def token_counter(self) -> TokenCount:
        """A ``count_tokens`` safe to call from one other thread while ``encode`` runs (e.g. a server's)."""
        ...

    def token_spans(self, text: str, task: str = "nl2code",
                    role: str | None = "query") -> tuple[list[tuple[int, int]], int] | None:
        """Each token's character span in ``text`` and the tokens the prefix and special tokens add;
        None where there are no offsets (callers then count pieces with ``count_tokens``)."""
        ...

    def prefix(self, task: str = "nl2code", role: str | None = "query") -> str:
        """The instruction prefix for ``task`` and ``role`` ('' for models without prefixes)."""
        ...


__all__ = ["Encoder", "TokenCount"]
