"""codesift: code embeddings from code generation models (jina-code-embeddings, end to end)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from codesift.tasks import BUILTIN_TASKS, register_task, resolve_task

__version__ = "0.1.0"
__all__ = ["BUILTIN_TASKS", "Embedder", "__version__", "register_task", "resolve_task"]

if TYPE_CHECKING:
    from codesift.model.embedder import Embedder


def __getattr__(name: str):
    # Import torch and transformers only when the Embedder is asked for: `codesift --help` stays fast.
    if name == "Embedder":
        from codesift.model.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'codesift' has no attribute {name!r}")
