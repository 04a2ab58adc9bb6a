"""Gradient caching (GradCache, Gao et al. 2021): a big contrastive batch in the memory of a small one.

1. Embed every mini-batch WITHOUT autograd and concatenate: the full-batch embeddings.
2. Take the loss on them as leaf tensors and backprop to get d(loss)/d(embedding) (cheap: B x D).
3. Re-run each mini-batch WITH autograd and backprop its slice of that cached gradient.

Only one mini-batch's activations are alive at any time, so peak memory depends on the
mini-batch size, not on the batch size. Parameter gradients equal plain backprop through the
full batch (up to float summation order). The RNG state of each mini-batch is replayed in the
second pass so that dropout masks match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext

import torch

from codesift.train.loss import LossOutput

Features = Mapping[str, torch.Tensor]


def split_features(features: Features, chunk_size: int) -> list[dict[str, torch.Tensor]]:
    """Split a dict of (B, ...) tensors into mini-batches of at most ``chunk_size`` rows."""
    if chunk_size < 1:
        raise ValueError(f"mini-batch size must be >= 1, got {chunk_size}")
    n = next(iter(features.values())).shape[0]
    return [{k: v[i : i + chunk_size] for k, v in features.items()} for i in range(0, n, chunk_size)]


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def grad_cached_backward(
    embed: Callable[[Features], torch.Tensor],
    query_chunks: Sequence[Features],
    document_chunks: Sequence[Features],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], LossOutput],
    autocast: Callable[[], object] = nullcontext,
) -> LossOutput:
    """Accumulate into ``.grad`` the gradient of ``loss_fn(embed(queries), embed(documents))``.

    ``embed`` maps a feature dict to (b, D) embeddings; it is called twice per chunk (no-grad, then
    with grad). ``autocast`` is a context factory wrapped around every ``embed`` call.
    """
    chunks = [*query_chunks, *document_chunks]
    n_q = len(query_chunks)
    device = next(iter(chunks[0].values())).device
    states, reps = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_rng_state(device))
            with autocast():
                reps.append(embed(chunk))
    q = torch.cat(reps[:n_q]).float().requires_grad_()
    d = torch.cat(reps[n_q:]).float().requires_grad_()
    out = loss_fn(q, d)
    out.loss.backward()
    grads = [*q.grad.split([r.shape[0] for r in reps[:n_q]]), *d.grad.split([r.shape[0] for r in reps[n_q:]])]
    after = _rng_state(device)
    for chunk, state, grad in zip(chunks, states, grads):
        _set_rng_state(state, device)
        with autocast():
            rep = embed(chunk)
        # a dot product with the cached gradient has exactly that gradient w.r.t. rep
        torch.autograd.backward(rep.float(), grad_tensors=grad)
    _set_rng_state(after, device)
    return LossOutput(out.loss.detach(), out.per_dim)


def plain_backward(
    embed: Callable[[Features], torch.Tensor],
    query_chunks: Sequence[Features],
    document_chunks: Sequence[Features],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], LossOutput],
    autocast: Callable[[], object] = nullcontext,
) -> LossOutput:
    """The same gradient as :func:`grad_cached_backward` by ordinary backprop: one forward per chunk.

    Every chunk's graph stays alive until the loss is backpropagated, so memory grows with the
    batch; in exchange there is no second forward (about a quarter of a cached step's compute).
    Chunking still matters for speed: on CPU, forwards of ~1-2k tokens run at the best rate.
    """
    reps = []
    for chunk in [*query_chunks, *document_chunks]:
        with autocast():
            reps.append(embed(chunk))
    n_q = len(query_chunks)
    out = loss_fn(torch.cat(reps[:n_q]).float(), torch.cat(reps[n_q:]).float())
    out.loss.backward()
    return LossOutput(out.loss.detach(), out.per_dim)
