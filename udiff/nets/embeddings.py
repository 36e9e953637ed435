"""Noise-label embeddings and weight initialisation shared by the backbones."""

from __future__ import annotations

import torch
from torch import nn


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar label (Transformer/DDPM++ style), frequencies 1 ... 1/max_positions."""

    def __init__(self, num_channels: int, max_positions: float = 10000.0):
        super().__init__()
        half = num_channels // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = c.float()[:, None] * self.freqs[None, :]
        return torch.cat([x.cos(), x.sin()], dim=1)


class ClassEmbedding(nn.Module):
    """Class labels 0 ... K-1, and K for "no class" (label dropout's null class), as vectors added to the noise
    embedding (EDM's map_label, one row per class). K = 0: an unconditional network, which takes no labels."""

    def __init__(self, classes: int, num_channels: int):
        super().__init__()
        self.classes = int(classes)
        self.table = nn.Embedding(self.classes + 1, num_channels) if self.classes else None
        if self.table is not None:
            nn.init.normal_(self.table.weight, std=1.0)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """emb (B, C) plus the rows of `labels` (B,) (None: the null class)."""
        if self.table is None:
            return emb
        if labels is None:
            labels = torch.full((emb.shape[0],), self.classes, dtype=torch.long, device=emb.device)
        return emb + self.table(labels.to(device=emb.device, dtype=torch.long)).to(emb.dtype)


def xavier_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Xavier-uniform weights scaled by `gain` (a tiny gain makes a near-zero initial output), zero bias."""
    nn.init.xavier_uniform_(module.weight)
    with torch.no_grad():
        module.weight.mul_(gain)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def noise_label(gamma_or_t: torch.Tensor, cond: str) -> torch.Tensor:
    """The scalar fed to the embedding: 50 gamma (gamma in about [-15, 15]) or 1000 t."""
    return gamma_or_t * (50.0 if cond == "gamma" else 1000.0)

