"""The contrastive loss: InfoNCE over normalised embeddings, summed over Matryoshka dims.

Queries and documents come in as (B, D) tensors, row i of each a positive pair; every other
document in the batch (and, in a multi-process run, every document on every other rank) is a
negative. The cross-rank gather keeps the gradient, so the loss of rank r also trains the
document encoder on rank s (open_clip's ``gather_with_grad`` + ``local_loss`` scheme).

Why our own and not sentence-transformers' (Cached)MultipleNegativesRankingLoss + MatryoshkaLoss:
those losses call a ``SentenceTransformer`` forward on feature dicts themselves, so they cannot
sit behind codesift's gradient cache (``train/gradcache.py``), which must embed once, take the
loss of ALL Matryoshka dims on the cached full-batch embeddings, and backprop one gradient per
embedding; here the loss is a pure function of two tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) when not distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for a slice and returns it to its owner."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)  # gloo has no reduce_scatter: all-reduce, then keep our slice
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) from all ranks along dim 0, keeping the gradient.

    In the backward pass every rank's gradient for a slice is summed and handed to that slice's
    owner, so averaging parameter gradients over ranks afterwards gives exactly the gradient of the
    mean loss over the global batch.
    """
    _, world = dist_info()
    if world == 1:
        return x
    return _GatherWithGrad.apply(x)


def _check_equal_rows(x: torch.Tensor) -> None:
    """Hard negatives make the document count depend on the data; the gather needs it equal on every rank."""
    import torch.distributed as dist

    rows = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, torch.tensor([x.shape[0]], device=x.device))
    if len({int(r) for r in rows}) > 1:
        raise ValueError(f"ranks hold {[int(r) for r in rows]} documents with their hard negatives: in a multi-process "
                         "run every pair needs at least hard_negatives of them (filter the pair file, or lower it)")


@dataclass
class LossOutput:
    """The summed loss and its term at each Matryoshka dim (floats, for logging)."""

    loss: torch.Tensor
    per_dim: dict[int, float] = field(default_factory=dict)


def infonce(
    queries: torch.Tensor,
    documents: torch.Tensor,
    temperature: float = 0.05,
    symmetric: bool = False,
    gather: bool = True,
) -> torch.Tensor:
    """InfoNCE of L2-normalised ``queries`` (B, D) against ``documents`` (B + H, D); positives on the diagonal.

    Rows B.. of ``documents`` are hard negatives (candidates for every query, positive for none).
    With ``gather`` in a multi-process run, the documents (and for ``symmetric`` the queries) of
    all ranks are the candidates; the loss is the mean over this rank's rows.
    """
    if queries.dim() != 2 or documents.dim() != 2 or queries.shape[1] != documents.shape[1] \
            or documents.shape[0] < queries.shape[0]:
        raise ValueError(f"queries {tuple(queries.shape)} must be (B, D) and documents {tuple(documents.shape)} "
                         "(B + hard negatives, D)")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = queries.shape[0]
    q = F.normalize(queries.float(), dim=-1)
    d = F.normalize(documents.float(), dim=-1)
    rank, world = dist_info() if gather else (0, 1)
    if world > 1 and d.shape[0] != n:  # only hard negatives can make the ranks' counts differ
        _check_equal_rows(d)
    all_d = gather_with_grad(d) if world > 1 else d
    labels = torch.arange(n, device=q.device) + rank * d.shape[0]
    loss = F.cross_entropy(q @ all_d.T / temperature, labels)
    if symmetric:
        # document -> query direction: only the positives have a query to find
        all_q = gather_with_grad(q) if world > 1 else q
        q_labels = torch.arange(n, device=q.device) + rank * n
        loss = (loss + F.cross_entropy(d[:n] @ all_q.T / temperature, q_labels)) / 2
    return loss


def matryoshka_infonce(
    queries: torch.Tensor,
    documents: torch.Tensor,
    dims: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    temperature: float = 0.05,
    symmetric: bool = False,
    gather: bool = True,
) -> LossOutput:
    """Sum over ``dims`` of ``weight * infonce`` on the first ``dim`` coordinates (renormalised).

    ``dims=None`` uses the full dimension only; weights default to 1 (the paper does not publish them).
    """
    full = queries.shape[-1]
    dims = list(dims) if dims else [full]
    weights = list(weights) if weights is not None else [1.0] * len(dims)
    if len(weights) != len(dims):
        raise ValueError(f"{len(weights)} Matryoshka weights for {len(dims)} dims")
    bad = [d for d in dims if not 0 < d <= full]
    if bad:
        raise ValueError(f"Matryoshka dims {bad} are outside 1..{full} (the embedding dimension)")
    total = queries.new_zeros((), dtype=torch.float32)
    per_dim: dict[int, float] = {}
    for dim, w in zip(dims, weights):
        term = infonce(queries[:, :dim], documents[:, :dim], temperature, symmetric, gather)
        total = total + w * term
        per_dim[dim] = float(term.detach())
    return LossOutput(total, per_dim)
