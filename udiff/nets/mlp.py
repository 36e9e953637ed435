"""A residual MLP for vector data (and, flattened, for tiny images)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import ClassEmbedding, PositionalEmbedding, xavier_


class ResidualBlock(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc0 = xavier_(nn.Linear(hidden, hidden))
        self.affine = xavier_(nn.Linear(hidden, hidden))
        self.fc1 = xavier_(nn.Linear(hidden, hidden), gain=1e-5)
        self.dropout = dropout

    def forward(self, h, emb):
        y = F.silu(self.fc0(F.silu(self.norm(h))) + self.affine(emb))
        return h + self.fc1(F.dropout(y, p=self.dropout, training=self.training))


class MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, *, hidden: int = 256, depth: int = 4, dropout: float = 0.0,
                 classes: int = 0):
        super().__init__()
        self.embed = PositionalEmbedding(hidden)
        self.label_embed = ClassEmbedding(classes, hidden)
        self.map = nn.Sequential(xavier_(nn.Linear(hidden, hidden)), nn.SiLU(), xavier_(nn.Linear(hidden, hidden)))
        self.inp = xavier_(nn.Linear(in_dim, hidden))
        self.blocks = nn.ModuleList(ResidualBlock(hidden, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden)
        self.out = xavier_(nn.Linear(hidden, out_dim), gain=1e-5)

    def forward(self, x: torch.Tensor, label: torch.Tensor, class_labels=None) -> torch.Tensor:
        emb = F.silu(self.map(self.label_embed(self.embed(label), class_labels)))
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.norm_out(h)))
