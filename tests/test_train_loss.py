"""The InfoNCE + Matryoshka loss on hand-computed similarity matrices, and gradient caching."""

from __future__ import annotations

import math

import pytest
import torch

from codesift.train.gradcache import grad_cached_backward, split_features
from codesift.train.loss import infonce, matryoshka_infonce


def _lse_loss(row: list[float], pos: int) -> float:
    return -row[pos] + math.log(sum(math.exp(v) for v in row))


def test_infonce_matches_hand_computed_matrix():
    # unit vectors: cos(q1,d1)=1, cos(q1,d2)=0.6, cos(q2,d1)=0, cos(q2,d2)=0.8
    q = torch.tensor([[2.0, 0.0], [0.0, 5.0]])  # norms differ: the loss must normalise
    d = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = 0.05
    want = (math.log1p(math.exp(-(1 - 0.6) / t)) + math.log1p(math.exp(-(0.8 - 0.0) / t))) / 2
    assert infonce(q, d, temperature=t).item() == pytest.approx(want, rel=1e-5)
    # temperature 1 on a 3x3 matrix, every row by the log-sum-exp formula
    q3 = torch.eye(3)
    d3 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.8, 0.6]])
    sims = [[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.8, 0.6]]  # q_i . d_j
    want3 = sum(_lse_loss(sims[i], i) for i in range(3)) / 3
    assert infonce(q3, d3, temperature=1.0).item() == pytest.approx(want3, rel=1e-6)


def test_hard_negatives_are_candidates_for_every_query_and_positive_for_none():
    q = torch.eye(2)
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    hard = torch.tensor([[0.6, 0.8], [0.8, 0.6]])  # rows 2, 3: negatives of both queries
    sims = [[1.0, 0.0, 0.6, 0.8], [0.0, 1.0, 0.8, 0.6]]
    want = (_lse_loss(sims[0], 0) + _lse_loss(sims[1], 1)) / 2
    got = infonce(q, torch.cat([d, hard]), temperature=1.0).item()
    assert got == pytest.approx(want, rel=1e-6)
    assert got > infonce(q, d, temperature=1.0).item()  # harder than in-batch negatives alone
    # symmetric: the document -> query direction has rows only for the positives
    d2q = (_lse_loss([1.0, 0.0], 0) + _lse_loss([0.0, 1.0], 1)) / 2
    assert infonce(q, torch.cat([d, hard]), temperature=1.0, symmetric=True).item() == pytest.approx((want + d2q) / 2)
    out = matryoshka_infonce(q, torch.cat([d, hard]), dims=[2], temperature=1.0)
    assert out.loss.item() == pytest.approx(want, rel=1e-6)


def test_symmetric_adds_document_to_query_direction():
    q = torch.eye(3)
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.8, 0.6]])
    sims = [[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.8, 0.6]]
    cols = [[sims[i][j] for i in range(3)] for j in range(3)]  # d_j . q_i
    q2d = sum(_lse_loss(sims[i], i) for i in range(3)) / 3
    d2q = sum(_lse_loss(cols[j], j) for j in range(3)) / 3
    got = infonce(q, d, temperature=1.0, symmetric=True).item()
    assert got == pytest.approx((q2d + d2q) / 2, rel=1e-6)
    # this matrix is symmetric, so make a non-symmetric one where the two directions differ
    d_ns = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.8, 0.6]])
    s = [[1.0, 0.6, 0.0], [0.0, 0.8, 0.8], [0.0, 0.0, 0.6]]
    c = [[s[i][j] for i in range(3)] for j in range(3)]
    want = (sum(_lse_loss(s[i], i) for i in range(3)) + sum(_lse_loss(c[j], j) for j in range(3))) / 6
    assert infonce(q, d_ns, temperature=1.0, symmetric=True).item() == pytest.approx(want, rel=1e-6)
    assert infonce(q, d_ns, temperature=1.0).item() != pytest.approx(want, rel=1e-3)


def test_matryoshka_terms_truncate_then_renormalise():
    q = torch.tensor([[1.0, 1.0], [-1.0, 2.0]])
    d = torch.tensor([[2.0, 1.0], [-1.0, 1.0]])
    # dim 1: every vector becomes +-1 -> sims [[1,-1],[-1,1]]
    term1 = math.log1p(math.exp(-2.0))

    def cos(a, b):
        return (a[0] * b[0] + a[1] * b[1]) / math.hypot(*a) / math.hypot(*b)

    qs, ds = q.tolist(), d.tolist()
    s = [[cos(qs[i], ds[j]) for j in range(2)] for i in range(2)]
    term2 = (_lse_loss(s[0], 0) + _lse_loss(s[1], 1)) / 2
    out = matryoshka_infonce(q, d, dims=[1, 2], temperature=1.0)
    assert out.per_dim[1] == pytest.approx(term1, rel=1e-6)
    assert out.per_dim[2] == pytest.approx(term2, rel=1e-6)
    assert out.loss.item() == pytest.approx(term1 + term2, rel=1e-6)
    weighted = matryoshka_infonce(q, d, dims=[1, 2], weights=[0.5, 2.0], temperature=1.0)
    assert weighted.loss.item() == pytest.approx(0.5 * term1 + 2.0 * term2, rel=1e-6)
    assert matryoshka_infonce(q, d, temperature=1.0).per_dim == {2: pytest.approx(term2, rel=1e-6)}


def test_loss_rejects_bad_input():
    q = torch.randn(4, 8)
    with pytest.raises(ValueError, match="outside"):
        matryoshka_infonce(q, q, dims=[4, 16])
    with pytest.raises(ValueError, match="hard negatives"):
        infonce(q, torch.randn(3, 8))  # fewer documents than queries
    with pytest.raises(ValueError, match="hard negatives"):
        infonce(q, torch.randn(4, 6))
    with pytest.raises(ValueError, match="temperature"):
        infonce(q, q, temperature=0.0)


class _Encoder(torch.nn.Module):
    """A small tower with dropout, so the RNG replay of the second pass matters."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Dropout(0.2),
                                       torch.nn.Linear(32, 12))

    def forward(self, feats):
        mask = feats["attention_mask"].unsqueeze(-1).float()
        return self.mlp((self.emb(feats["input_ids"]) * mask).sum(1) / mask.sum(1))


@pytest.mark.parametrize("symmetric", [False, True])
def test_cached_gradients_equal_plain_backprop(symmetric):
    torch.manual_seed(0)
    enc = _Encoder().train()
    n = 10
    qf = {"input_ids": torch.randint(0, 50, (n, 7)), "attention_mask": (torch.rand(n, 7) > 0.2).long()}
    df = {"input_ids": torch.randint(0, 50, (n, 9)), "attention_mask": (torch.rand(n, 9) > 0.2).long()}
    qf["attention_mask"][:, 0] = 1
    df["attention_mask"][:, 0] = 1

    def loss_fn(a, b):
        return matryoshka_infonce(a, b, dims=[4, 8, 12], temperature=0.05, symmetric=symmetric)

    torch.manual_seed(1)
    chunk_states = []
    # plain backprop: one forward per mini-batch (same dropout masks as the cached run), one loss
    reps = []
    for c in split_features(qf, 3) + split_features(df, 3):
        chunk_states.append(torch.get_rng_state())
        reps.append(enc(c))
    plain = loss_fn(torch.cat(reps[:4]), torch.cat(reps[4:]))
    plain.loss.backward()
    want = {k: p.grad.clone() for k, p in enc.named_parameters()}
    enc.zero_grad()

    torch.manual_seed(1)
    out = grad_cached_backward(enc, split_features(qf, 3), split_features(df, 3), loss_fn)
    assert out.loss.item() == pytest.approx(plain.loss.item(), rel=1e-6)
    assert out.per_dim == pytest.approx(plain.per_dim, rel=1e-6)
    for k, p in enc.named_parameters():
        torch.testing.assert_close(p.grad, want[k], rtol=1e-5, atol=1e-6, msg=k)


def test_split_features_sizes():
    f = {"input_ids": torch.arange(10).view(5, 2), "attention_mask": torch.ones(5, 2)}
    chunks = split_features(f, 2)
    assert [c["input_ids"].shape[0] for c in chunks] == [2, 2, 1]
    assert chunks[2]["input_ids"].tolist() == [[8, 9]]
    with pytest.raises(ValueError):
        split_features(f, 0)
