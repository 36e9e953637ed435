"""Arithmetic on the 1×1 and 2×2 blocks of a process, written out in closed form (k <= 2).

A process describes each component by float64 blocks (..., k, k) whose leading dimensions broadcast against
a state's (B, *event). A state (B, k, *event) is seen as vectors (B, *event, k) to apply them.
"""

from __future__ import annotations

import torch


def vec(z: torch.Tensor) -> torch.Tensor:
    """(B, k, *event) → (B, *event, k)."""
    return z.movedim(1, -1)


def unvec(v: torch.Tensor) -> torch.Tensor:
    """(B, *event, k) → (B, k, *event)."""
    return v.movedim(-1, 1)


def apply(mat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The k×k blocks `mat` applied to the slots of a state z (B, k, *event), in z's dtype."""
    m = mat.to(device=z.device, dtype=z.dtype)
    k = m.shape[-1]
    if k == 1:
        return m[..., 0, 0].unsqueeze(1) * z if m.ndim > 2 else m[0, 0] * z
    rows = [sum(m[..., i, j] * z[:, j] for j in range(k)) for i in range(k)]
    return torch.stack(rows, 1)


def matvec(mat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Blocks (..., k, k) times vectors (..., k)."""
    return (mat @ v.unsqueeze(-1)).squeeze(-1)


def chol(s: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factors of symmetric positive semi-definite blocks (exact zeros stay zeros)."""
    if s.shape[-1] == 1:
        return s.clamp_min(0).sqrt()
    l11 = s[..., 0, 0].clamp_min(0).sqrt()
    l21 = torch.where(l11 > 0, s[..., 1, 0] / torch.where(l11 > 0, l11, 1.0), 0.0)
    l22 = (s[..., 1, 1] - l21 * l21).clamp_min(0).sqrt()
    zero = torch.zeros_like(l11)
    return torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], -2)


def tril_solve(low: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """L⁻¹ v for lower-triangular blocks `low` (..., k, k) and vectors v (..., k)."""
    if low.shape[-1] == 1:
        return v / low[..., 0]
    u1 = v[..., 0] / low[..., 0, 0]
    u2 = (v[..., 1] - low[..., 1, 0] * u1) / low[..., 1, 1]
    return torch.stack([u1, u2], -1)


def triu_solve_t(low: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """L⁻ᵀ v for lower-triangular blocks (back substitution)."""
    if low.shape[-1] == 1:
        return v / low[..., 0]
    u2 = v[..., 1] / low[..., 1, 1]
    u1 = (v[..., 0] - low[..., 1, 0] * u2) / low[..., 0, 0]
    return torch.stack([u1, u2], -1)


def inv(s: torch.Tensor) -> torch.Tensor:
    """Inverse of 1×1 or 2×2 blocks."""
    if s.shape[-1] == 1:
        return 1.0 / s
    a, b, c, d = s[..., 0, 0], s[..., 0, 1], s[..., 1, 0], s[..., 1, 1]
    det = a * d - b * c
    return torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]


def sym(s: torch.Tensor) -> torch.Tensor:
    return 0.5 * (s + s.mT)


def eye_like(s: torch.Tensor) -> torch.Tensor:
    return torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)
