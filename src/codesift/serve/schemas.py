"""Request bodies of the HTTP API and the encodings of vectors in its answers.

``/v1/embeddings`` accepts the OpenAI fields (``input``, ``model``, ``encoding_format``,
``dimensions``, ``user``) and the hosted code-embedding API's fields (``task``, ``embedding_type``,
``truncate``). Types are strict: ``"8"`` is not a dimension and ``1`` is not a text. A request checks itself: an
empty or invalid text, an unknown task or two encodings that disagree are refused before any route runs, each as
an ``INPUT_ERROR`` that names the field (``input[3]``) and the API's error code. ``/v1/search`` takes the index's
own ``codesift.index.request.SearchRequest``, so its fields are the CLI's and the MCP tools'.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from codesift.model.inputs import text_problem
from codesift.tasks import resolve_task

EmbeddingType = Literal["float", "base64", "binary", "ubinary"]
INPUT_ERROR = "codesift_input"  # the pydantic error type of a check below; its context: message, param, code


def input_error(message: str, param: str, code: str | None = None) -> PydanticCustomError:
    """A request check's error that the HTTP layer answers as a 400 naming ``param`` with ``code``."""
    return PydanticCustomError(INPUT_ERROR, "{message}", {"message": message, "param": param, "code": code})


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

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise input_error("input is an empty list; send at least one string", "input")
        for i, text in enumerate(texts):
            name = "input" if isinstance(value, str) else f"input[{i}]"
            if not text:
                raise input_error(f"{name} is an empty string; every input needs at least one character", name,
                                  "empty_input")
            problem = text_problem(text)
            if problem is not None:
                raise input_error(f"{name} is not valid UTF-8 text: {problem}; send UTF-8 text", name, "invalid_text")
        return value

    @field_validator("task")
    @classmethod
    def _task(cls, task: str | None) -> str | None:
        if task is not None:
            try:
                resolve_task(task)
            except ValueError as exc:
                raise input_error(str(exc), "task") from None
        return task

    @model_validator(mode="after")
    def _one_encoding(self) -> EmbeddingRequest:
        if self.encoding_format and self.embedding_type and self.encoding_format != self.embedding_type:
            raise input_error(f"encoding_format={self.encoding_format!r} and embedding_type={self.embedding_type!r} "
                              "disagree; send one of them", "embedding_type")
        return self

    def texts(self) -> list[str]:
        """``input`` as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def output_type(self) -> EmbeddingType:
        """The vector encoding asked for (the two fields agree when both are set)."""
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
