"""Bases: the orthonormal transform the diffusion runs in (GUD's representations).

Components chi = S^-1 U (x - mu), with U orthonormal and S a per-component scale (1 unless whitened).
Every basis keeps the data's event shape for its components, so a component-wise schedule is a tensor
shaped like one data item. The network never sees components: it sees `to_net(chi)` = U^T chi (whitened
data space, where convolutions keep their image prior) and its output comes back through `from_net`.

Noise is drawn directly in component space: for a real orthonormal U, U eps ~ N(0, I) again.
"""

from __future__ import annotations

import torch
from torch import nn


class Basis(nn.Module):
    """Interface and identity defaults; subclasses override the four maps."""

    def __init__(self, event_shape: tuple[int, ...]):
        super().__init__()
        self.event_shape = tuple(event_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Data (B, *event) → components chi (B, *event)."""
        return x

    def decode(self, chi: torch.Tensor) -> torch.Tensor:
        """Components (B, *event) → data (B, *event)."""
        return chi

    def to_net(self, chi: torch.Tensor) -> torch.Tensor:
        """Components → what the network sees (U^T chi); (N, *event) → (N, *event)."""
        return chi

    def from_net(self, y: torch.Tensor) -> torch.Tensor:
        """Network output in data layout → components (U y)."""
        return y


class PixelBasis(Basis):
    """The identity basis: components are the pixels (or vector entries) themselves."""
