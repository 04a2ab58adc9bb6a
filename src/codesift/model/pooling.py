"""Pooling: turn token states (batch, seq, hidden) into one vector per text.

All functions take the attention mask and are correct under left AND right padding.
"""

from __future__ import annotations

import torch
from torch import nn

POOLING_MODES = ("lasttoken", "mean", "cls", "max", "latent_attention")
_ALIASES = {"last": "lasttoken", "last_token": "lasttoken", "lasttoken": "lasttoken", "eos": "lasttoken",
            "mean": "mean", "avg": "mean", "cls": "cls", "first": "cls", "max": "max",
            "latent_attention": "latent_attention", "latent-attention": "latent_attention", "nv-embed": "latent_attention"}


def normalize_pooling(mode: str) -> str:
    """Canonical pooling name (``lasttoken``, ``mean``, ``cls``, ``max``, ``latent_attention``)."""
    try:
        return _ALIASES[mode.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown pooling {mode!r}; valid: {', '.join(POOLING_MODES)}") from None


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, whatever the padding side."""
    seq = attention_mask.shape[1]
    positions = torch.arange(seq, device=attention_mask.device).expand_as(attention_mask)
    # argmax of position*mask is the last index where mask == 1 (0 for an all-pad row).
    return (positions * attention_mask.to(positions.dtype)).argmax(dim=1)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last real token (the paper's pooling)."""
    idx = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' states (accumulated in fp32)."""
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)
    return (summed / mask.sum(dim=1).clamp(min=1e-9)).to(hidden.dtype)


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The state of the first real token."""
    idx = attention_mask.to(torch.int32).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def max_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Element-wise max over the real tokens."""
    masked = hidden.masked_fill(attention_mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min)
    return masked.max(dim=1).values


class LatentAttentionPooling(nn.Module):
    """NV-Embed latent-attention pooling: token states attend to a trainable latent array.

    Queries are the token states; keys and values come from ``num_latents`` trainable latents
    (8 heads by default); an MLP follows with a residual, then a masked mean over tokens.
    """

    def __init__(self, hidden_size: int, num_latents: int = 512, num_heads: int = 8, mlp_ratio: int = 4) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} heads")
        self.hidden_size, self.num_latents, self.num_heads = hidden_size, num_latents, num_heads
        self.latents = nn.Parameter(torch.randn(num_latents, hidden_size) * hidden_size**-0.5)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_ratio * hidden_size),
            nn.GELU(),
            nn.Linear(mlp_ratio * hidden_size, hidden_size),
        )

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "num_latents": self.num_latents, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp[0].out_features // self.hidden_size}

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        dtype = self.latents.dtype
        h = hidden.to(dtype)
        kv = self.latents.unsqueeze(0).expand(h.shape[0], -1, -1)
        attended, _ = self.attn(h, kv, kv, need_weights=False)
        out = attended + self.mlp(attended)
        return mean_pool(out, attention_mask)


_POOLERS = {"lasttoken": last_token_pool, "mean": mean_pool, "cls": cls_pool, "max": max_pool}


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str, module: nn.Module | None = None) -> torch.Tensor:
    """Apply the pooling ``mode`` (``module`` is the trained latent-attention pooler, if any)."""
    mode = normalize_pooling(mode)
    if mode == "latent_attention":
        if module is None:
            raise ValueError("latent_attention pooling needs its trained module (saved with the model)")
        return module(hidden, attention_mask)
    return _POOLERS[mode](hidden, attention_mask)
