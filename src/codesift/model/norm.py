"""L2 normalisation and Matryoshka truncation of numpy vectors: the one implementation codesift uses.

(Training normalises torch tensors with ``torch.nn.functional.normalize``, inside the autograd graph.)
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12  # a zero vector stays zero instead of becoming NaN


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Each row (or a single 1-D vector) scaled to unit L2 length, as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, EPS)


def truncate_normalize(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """Keep the first ``dim`` components (Matryoshka; None keeps all) and L2-normalise each row again."""
    if dim is not None:
        if not 0 < dim <= vectors.shape[-1]:
            raise ValueError(f"dimension {dim} is out of range for {vectors.shape[-1]}-dimensional embeddings")
        vectors = vectors[..., :dim]
    return l2_normalize(vectors)
