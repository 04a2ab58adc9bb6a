"""An on-disk cache of corpus embeddings keyed by (model fingerprint, task, role, dim, hash of the texts)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from codesift.model.inputs import texts_digest

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$CODESIFT_CACHE/embeddings``, else ``~/.cache/codesift/embeddings``."""
    from codesift.model.loading import codesift_cache_dir

    return codesift_cache_dir() / "embeddings"



class EmbeddingCache:
    """Embedding matrices stored as ``<key>.npy`` with a ``<key>.json`` that records what the key stands for."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    @staticmethod
    def key(fingerprint: str, task: str, role: str, dim: int | None, texts: list[str]) -> str:
        """The cache key of one embedding matrix."""
        parts = json.dumps([fingerprint, task, role, dim, texts_digest(texts)])
        return hashlib.sha256(parts.encode()).hexdigest()[:32]

    def get(self, key: str) -> np.ndarray | None:
        """The stored matrix, or None if absent or unreadable."""
        path = self.root / f"{key}.npy"
        if not path.is_file():
            return None
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None

    def put(self, key: str, vectors: np.ndarray, meta: dict | None = None) -> Path:
        """Store a matrix atomically (a crash never leaves a half-written entry)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{key}.npy"
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(vectors, dtype=np.float32))
        os.replace(tmp, path)
        (self.root / f"{key}.json").write_text(json.dumps({"shape": list(vectors.shape), **(meta or {})}, indent=1))
        return path
