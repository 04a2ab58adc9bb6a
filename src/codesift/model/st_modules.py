"""sentence-transformers modules that codesift adds, so a saved folder loads in ``SentenceTransformer`` too."""

from __future__ import annotations

from typing import ClassVar

import torch
from sentence_transformers.base.modules.module import Module

from codesift.model.pooling import LatentAttentionPooling as _LatentAttention


class LatentAttentionPooling(Module):
    """NV-Embed latent-attention pooling as a sentence-transformers module (replaces ``Pooling``)."""

    config_keys: ClassVar[list[str]] = ["hidden_size", "num_latents", "num_heads", "mlp_ratio"]

    def __init__(self, hidden_size: int, num_latents: int = 512, num_heads: int = 8, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.hidden_size, self.num_latents, self.num_heads, self.mlp_ratio = hidden_size, num_latents, num_heads, mlp_ratio
        self.pooler = _LatentAttention(hidden_size, num_latents, num_heads, mlp_ratio)

    def forward(self, features: dict, **kwargs) -> dict:
        features["sentence_embedding"] = self.pooler(features["token_embeddings"], features["attention_mask"])
        return features

    def get_embedding_dimension(self) -> int:
        return self.hidden_size

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> LatentAttentionPooling:
        hub = {k: kwargs[k] for k in ("token", "cache_folder", "revision", "local_files_only") if k in kwargs}
        config = cls.load_config(model_name_or_path, subfolder=subfolder, **hub)
        module = cls(**config)
        cls.load_torch_weights(model_name_or_path, subfolder=subfolder, model=module, **hub)
        return module

    @classmethod
    def from_pooler(cls, pooler: _LatentAttention) -> LatentAttentionPooling:
        """Wrap an existing (trained) pooler without copying its weights."""
        cfg = pooler.config()
        module = cls(**cfg)
        module.pooler = pooler
        return module

    def to(self, *args, **kwargs):  # keep nn.Module semantics
        return torch.nn.Module.to(self, *args, **kwargs)
