"""Exact top-k search by inner product (cosine on normalised vectors), chunked to bound memory."""

from __future__ import annotations

import numpy as np


def exact_top_k(
    queries: np.ndarray, docs: np.ndarray, k: int, *, query_chunk: int = 1024, doc_chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and corpus indices of the ``k`` best documents per query, best first (ties: lower index first)."""
    import torch

    if queries.ndim != 2 or docs.ndim != 2 or queries.shape[1] != docs.shape[1]:
        raise ValueError(f"query and document embeddings must be 2-D with the same width, got {queries.shape} and {docs.shape}")
    k = min(k, docs.shape[0])
    d = torch.from_numpy(np.ascontiguousarray(docs, dtype=np.float32))
    all_scores, all_idx = [], []
    for qs in range(0, queries.shape[0], query_chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[qs : qs + query_chunk], dtype=np.float32))
        best_s = torch.empty((q.shape[0], 0))
        best_i = torch.empty((q.shape[0], 0), dtype=torch.long)
        for ds in range(0, d.shape[0], doc_chunk):
            s = q @ d[ds : ds + doc_chunk].T
            # A stable sort keeps the lower corpus index first among ties, also across chunks.
            cs, ci = torch.sort(s, dim=1, descending=True, stable=True)
            merged_s = torch.cat([best_s, cs[:, :k]], 1)
            merged_i = torch.cat([best_i, ci[:, :k] + ds], 1)
            best_s, pos = torch.sort(merged_s, dim=1, descending=True, stable=True)
            best_s, best_i = best_s[:, :k], torch.gather(merged_i, 1, pos[:, :k])
        all_scores.append(best_s.numpy())
        all_idx.append(best_i.numpy())
    return np.concatenate(all_scores), np.concatenate(all_idx)

def to_run(
    query_ids: list[str], doc_ids: list[str], scores: np.ndarray, indices: np.ndarray
) -> dict[str, dict[str, float]]:
    """A run (``{query_id: {doc_id: score}}``) from :func:`exact_top_k` output."""
    return {
        qid: {doc_ids[j]: float(s) for s, j in zip(row_s, row_i)}
        for qid, row_s, row_i in zip(query_ids, scores, indices)
    }
