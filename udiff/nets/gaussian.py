"""The exact denoiser for Gaussian data: E[eps | z_t] when x ~ N(mean, cov), for any process/basis/schedule.

With the data mean m and covariance C in component space, and the state z_t a linear Gaussian observation
of x0 (`process.gaussian_obs` gives per component w = h^T S^-1 h and y = h^T S^-1 z), the posterior mean is

    E[x0 | z_t] = m + C (I + diag(w) C)^-1 (y - w m)          (no inverse of C: singular C is fine)

and E[eps | z_t] follows from the process (`eps_from_x0`). Fitting is the data's mean and covariance: no
gradient steps. It is the optimum every trained network approximates, so it doubles as a test oracle.
"""

from __future__ import annotations

import torch

from ..model import Model


def encode_moments(basis, mean: torch.Tensor, cov: torch.Tensor, event_shape):
    """Data-space mean (d,) and covariance (d, d) → component space (the basis is linear in x - mu)."""
    d = mean.numel()
    m = basis.encode(mean.reshape((1,) + tuple(event_shape)).float()).reshape(d).double()
    zero = basis.encode(torch.zeros((1,) + tuple(event_shape))).reshape(d).double()
    rows = basis.encode(cov.float().reshape((d,) + tuple(event_shape))).reshape(d, d).double() - zero
    cols = basis.encode(rows.t().float().reshape((d,) + tuple(event_shape))).reshape(d, d).double() - zero
    return m, 0.5 * (cols + cols.t())


class GaussianModel(Model):
    """epsilon-prediction of the Bayes-optimal denoiser for N(mean, cov) data (buffers, no parameters)."""

    def __init__(self, basis, process, schedule, event_shape, jitter: float = 0.0):
        super().__init__(basis, process, schedule, event_shape)
        d = 1
        for s in event_shape:
            d *= s
        self.jitter = float(jitter)
        self.register_buffer("mean", torch.zeros(d, dtype=torch.float64))  # component space
        self.register_buffer("cov", torch.eye(d, dtype=torch.float64))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> "GaussianModel":
        """Set mean and covariance from data items x (N, *event), in data space, then move them to components."""
        flat = x.reshape(x.shape[0], -1).double()
        mean = flat.mean(0)
        centred = flat - mean
        cov = centred.t() @ centred / max(flat.shape[0] - 1, 1)
        if self.jitter:
            cov = cov + self.jitter * torch.eye(cov.shape[0], dtype=cov.dtype)
        m, c = encode_moments(self.basis, mean, cov, self.event_shape)
        self.mean.copy_(m)
        self.cov.copy_(c)
        return self

    def posterior_mean(self, z, lvl):
        """E[x0 | z_t] in component space, (B, 1, *event), float64."""
        b = z.shape[0]
        zd = z.double()
        w, y = self.process.gaussian_obs(zd, lvl)
        w = w.expand((w.shape[0],) + self.event_shape).reshape(w.shape[0], -1)
        y = y.reshape(b, -1)
        r = y - w * self.mean
        eye = torch.eye(self.cov.shape[0], dtype=torch.float64, device=z.device)
        a = eye + w[:, :, None] * self.cov[None]  # (1 or B, d, d)
        if a.shape[0] == 1:  # one time for the whole batch: factor once, solve for every item
            sol = torch.linalg.solve(a[0], r.t()).t()
        else:
            sol = torch.linalg.solve(a, r.unsqueeze(-1)).squeeze(-1)
        x0 = self.mean + sol @ self.cov
        return x0.reshape((b, 1) + self.event_shape)

    def eps(self, z, lvl):
        x0 = self.posterior_mean(z, lvl)
        eps = self.process.eps_from_x0(z.double(), x0, lvl)
        return eps[:, self.process.k - self.process.predicted:].to(torch.float32)
