"""Request bodies of the HTTP API and the encodings of vectors in its answers.

``/v1/embeddings`` accepts the OpenAI fields (``input``, ``model``, ``encoding_format``,
``dimensions``, ``user``) and the hosted code-embedding API's fields (``task``, ``embedding_type``,
``truncate``). Types are strict: ``"8"`` is not a dimension and ``1`` is not a text. ``/v1/search`` takes the
index's own ``codesift.index.request.SearchRequest``, so its fields are the CLI's and the MCP tools'.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

EmbeddingType = Literal["float", "base64", "binary", "ubinary"]


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings."""

    model_config = ConfigDict(extra="ignore")  # clients add fields of their own (e.g. `user`)

    input: StrictStr | list[StrictStr]
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] | None = None
    embedding_type: EmbeddingType | None = None
    dimensions: StrictInt | None = Field(default=None, ge=1)
    task: StrictStr | None = None
    truncate: StrictBool = False
    user: StrictStr | None = None

    def texts(self) -> list[str]:
        """``input`` as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def output_type(self) -> EmbeddingType:
        """The vector encoding asked for; ``encoding_format`` and ``embedding_type`` must agree if both are set."""
        if self.encoding_format and self.embedding_type and self.encoding_format != self.embedding_type:
            raise ValueError(
                f"encoding_format={self.encoding_format!r} and embedding_type={self.embedding_type!r} disagree; "
                "send one of them"
            )
        return self.embedding_type or self.encoding_format or "float"


def encode_vectors(vectors: np.ndarray, kind: EmbeddingType) -> list:
    """Each row of ``vectors`` as the API returns it.

    ``base64``: little-endian float32 bytes, as OpenAI sends them. ``ubinary``: sign bits
    (value > 0) packed 8 per byte, big-endian bit order, as uint8; ``binary``: the same bytes minus
    128, as int8 (the sentence-transformers / hosted-API quantisation).
    """
    if kind == "float":
        return list(vectors.astype(np.float32, copy=False))
    if kind == "base64":
        le = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in le]
    packed = np.packbits(vectors > 0, axis=1)
    if kind == "ubinary":
        return [row.tolist() for row in packed]
    if kind == "binary":
        return [row.tolist() for row in (packed.astype(np.int16) - 128).astype(np.int8)]
    raise ValueError(f"unknown embedding type {kind!r}")
