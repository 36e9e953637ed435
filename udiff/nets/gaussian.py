"""The exact denoiser for Gaussian data: E[x0 | z_t] when x0 ~ N(mean, cov), for any process/basis/schedule.

With the data mean m and covariance C in component space, and the state z_t a linear Gaussian observation
of x0 (conversions.observation gives per component w = hᵀΣ⁻¹h and y = hᵀΣ⁻¹z, y ~ N(w x0, w)), the
posterior mean is

    E[x0 | z_t] = m + C (I + diag(w) C)⁻¹ (y − w m)          (no inverse of C: a singular C is fine)

Fitting is the data's mean and covariance: no gradient steps. It is the optimum every trained network
approximates, so it doubles as a test oracle (model.GaussianModel wraps it as a model).
"""

from __future__ import annotations

import torch


def moments(x: torch.Tensor, jitter: float = 0.0):
    """Mean (d,) and covariance (d, d), float64, of data items x (N, *event)."""
    flat = x.reshape(x.shape[0], -1).double()
    mean = flat.mean(0)
    centred = flat - mean
    cov = centred.t() @ centred / max(flat.shape[0] - 1, 1)
    if jitter:
        cov = cov + jitter * torch.eye(cov.shape[0], dtype=cov.dtype)
    return mean, cov


def encode_moments(basis, mean: torch.Tensor, cov: torch.Tensor, event_shape):
    """Data-space mean (d,) and covariance (d, d) → component space (the basis is linear in x - mu)."""
    d = mean.numel()
    m = basis.encode(mean.reshape((1,) + tuple(event_shape)).float()).reshape(d).double()
    zero = basis.encode(torch.zeros((1,) + tuple(event_shape))).reshape(d).double()
    rows = basis.encode(cov.float().reshape((d,) + tuple(event_shape))).reshape(d, d).double() - zero
    cols = basis.encode(rows.t().float().reshape((d,) + tuple(event_shape))).reshape(d, d).double() - zero
    return m, 0.5 * (cols + cols.t())


def posterior_mean(mean: torch.Tensor, cov: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """m + C (I + diag(w) C)⁻¹ (y − w m) for observations with precisions w (1 or B, d) and statistics y (B, d)."""
    r = y.double() - w * mean
    eye = torch.eye(cov.shape[0], dtype=torch.float64, device=y.device)
    a = eye + w[:, :, None] * cov[None]  # (1 or B, d, d)
    if a.shape[0] == 1:  # one level for the whole batch: factor once, solve for every item
        sol = torch.linalg.solve(a[0], r.t()).t()
    else:
        sol = torch.linalg.solve(a, r.unsqueeze(-1)).squeeze(-1)
    return mean + sol @ cov


def log_evidence(mean: torch.Tensor, cov: torch.Tensor, w: torch.Tensor, y: torch.Tensor, post=None) -> torch.Tensor:
    """log p(z_t) up to a term that does not depend on (mean, cov), for x0 ~ N(mean, cov), (B,):

        mᵀy − ½ mᵀWm − ½ log det(I + W^½ C W^½) + ½ rᵀ C (I + W C)⁻¹ r,    r = y − W m, W = diag(w)

    (q(z | x0) ∝ exp(x0ᵀy − ½ x0ᵀWx0) in x0, integrated against N(m, C); docs/guidance.md). Differences of it
    between Gaussians are log-likelihood ratios: a class posterior p(k | z_t) is softmax(log π_k + this).
    `post`: posterior_mean(mean, cov, w, y) when the caller has it."""
    r = y.double() - w * mean
    eye = torch.eye(cov.shape[0], dtype=torch.float64, device=y.device)
    sw = w.clamp_min(0).sqrt()
    _, logdet = torch.linalg.slogdet(eye + sw[:, :, None] * cov[None] * sw[:, None, :])  # (1 or B,)
    post = posterior_mean(mean, cov, w, y) if post is None else post
    quad = (r * (post - mean)).sum(-1)
    return (y.double() * mean).sum(-1) - 0.5 * (w * mean * mean).sum(-1) - 0.5 * logdet + 0.5 * quad


def class_moments(x: torch.Tensor, labels: torch.Tensor, classes: int, jitter: float = 0.0):
    """Per class k < `classes`: the fraction π_k of the items, their mean and covariance ((K,), (K, d), (K, d, d))."""
    stats = [moments(x[labels == k], jitter) for k in range(classes)]
    counts = torch.stack([(labels == k).sum() for k in range(classes)]).double()
    return counts / counts.sum(), torch.stack([m for m, _ in stats]), torch.stack([c for _, c in stats])
