"""Noise schedules: gamma(t) = -log SNR(t), per component, and the noise level they define at time t.

Conventions (VDM, GUD): t in [0, 1], t = 0 is data, t = 1 is the prior; gamma is increasing in t;
sigma_t^2 = sigmoid(gamma_t), alpha_t^2 = sigmoid(-gamma_t), SNR = exp(-gamma). The equivalent SDE rate is
beta(t) = sigma_t^2 gamma'(t) and the integrated rate B(t) = softplus(gamma_t) (so a phase-space process,
which runs on B, is driven by the same schedule object).

A schedule returns gamma of shape (B,) for a scalar schedule or (B, *event) for a component-wise one;
`level(t, event_ndim)` wraps it into a `NoiseLevel` shaped (B, 1, *e) so it broadcasts against a process
state (B, k, *event). All schedule arithmetic is float64: near t = 0 the kernels need it.

Schedules are nn.Modules so that learned ones can carry parameters; the fixed ones here have none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class NoiseLevel:
    """gamma(t) and gamma'(t), float64, shaped (B or 1, 1, *e) to broadcast against a state (B, k, *event)."""

    t: torch.Tensor
    gamma: torch.Tensor
    dgamma: torch.Tensor

    @property
    def alpha2(self):
        return torch.sigmoid(-self.gamma)

    @property
    def sigma2(self):
        return torch.sigmoid(self.gamma)

    @property
    def alpha(self):
        return torch.sigmoid(-self.gamma).sqrt()

    @property
    def sigma(self):
        return torch.sigmoid(self.gamma).sqrt()

    @property
    def snr(self):
        return torch.exp(-self.gamma)

    @property
    def beta(self):
        """SDE rate beta = sigma^2 gamma' (algorithms.md §0)."""
        return torch.sigmoid(self.gamma) * self.dgamma

    @property
    def integrated_rate(self):
        """B(t) = int_0^t beta = softplus(gamma): the clock of a phase-space process."""
        return F.softplus(self.gamma)

    def label(self) -> torch.Tensor:
        """One scalar per item for network conditioning: the mean gamma over components, shape (B,)."""
        return self.gamma.reshape(self.gamma.shape[0], -1).mean(dim=1)


class Schedule(nn.Module):
    """gamma(t) for t in [t_min, 1]; subclasses implement `gamma` and, where they can, `dgamma`."""

    t_min: float = 0.0
    componentwise: bool = False

    def gamma(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dgamma(self, t: torch.Tensor) -> torch.Tensor:
        """gamma'(t) by autograd (subclasses with a closed form override this)."""
        keep_graph = torch.is_grad_enabled()  # training a learned schedule differentiates through gamma'
        with torch.enable_grad():
            t = t.detach().requires_grad_(True)
            g = self.gamma(t)
            (d,) = torch.autograd.grad(g.sum(), t, create_graph=keep_graph)
        if not keep_graph:
            g, d = g.detach(), d.detach()
        return d.reshape(t.shape + (1,) * (g.ndim - t.ndim)).expand_as(g)

    def level(self, t: torch.Tensor, event_ndim: int) -> NoiseLevel:
        """The noise level at times t (shape (B,) or scalar), shaped for states (B, k, *event)."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        g, d = self.gamma(t), self.dgamma(t)
        shape = (t.shape[0], 1) + (tuple(g.shape[1:]) if g.ndim > 1 else (1,) * event_ndim)
        return NoiseLevel(t=t, gamma=g.reshape(shape), dgamma=d.reshape(shape))

    def t_of_gamma(self, g: torch.Tensor) -> torch.Tensor:
        """Inverse of a scalar schedule, by bisection (monotone gamma); subclasses give closed forms."""
        g = torch.as_tensor(g, dtype=torch.float64)
        lo = torch.full_like(g, self.t_min)
        hi = torch.ones_like(g)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            below = self.gamma(mid.reshape(-1)).reshape(g.shape) < g
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    @property
    def gamma_range(self) -> tuple[float, float]:
        """(gamma(t_min), gamma(1)) of a scalar schedule."""
        ends = self.gamma(torch.tensor([self.t_min, 1.0], dtype=torch.float64))
        return float(ends[0]), float(ends[1])


class VDMLinear(Schedule):
    """gamma(t) = gamma_min + (gamma_max - gamma_min) t (VDM's fixed schedule)."""

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__()
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)

    def gamma(self, t):
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t

    def dgamma(self, t):
        return torch.full_like(t, self.gamma_max - self.gamma_min)

    def t_of_gamma(self, g):
        return (torch.as_tensor(g, dtype=torch.float64) - self.gamma_min) / (self.gamma_max - self.gamma_min)


class VPLinear(Schedule):
    """VP-SDE linear beta: B(t) = beta_min t + (beta_max - beta_min) t^2 / 2, gamma = log expm1(B)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5):
        super().__init__()
        self.beta_min, self.beta_max, self.t_min = float(beta_min), float(beta_max), float(t_min)

    def _B(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def gamma(self, t):
        return torch.log(torch.expm1(self._B(t)))

    def dgamma(self, t):
        # gamma' = beta(t) / sigma^2 with sigma^2 = 1 - exp(-B)
        beta = self.beta_min + (self.beta_max - self.beta_min) * t
        return beta / -torch.expm1(-self._B(t))

    def t_of_gamma(self, g):
        B = F.softplus(torch.as_tensor(g, dtype=torch.float64))
        a, b = 0.5 * (self.beta_max - self.beta_min), self.beta_min
        if a == 0:
            return B / b
        return (-b + torch.sqrt(b * b + 4 * a * B)) / (2 * a)


class Cosine(Schedule):
    """alpha = cos(theta), sigma = sin(theta), theta linear in t; gamma = 2 log tan(theta) in [gamma_min, gamma_max]."""

    def __init__(self, gamma_min: float = -15.0, gamma_max: float = 15.0):
        super().__init__()
        self.theta_min = math.atan(math.exp(gamma_min / 2))
        self.theta_span = math.atan(math.exp(gamma_max / 2)) - self.theta_min

    def gamma(self, t):
        return 2.0 * torch.log(torch.tan(self.theta_min + self.theta_span * t))

    def dgamma(self, t):
        return 4.0 * self.theta_span / torch.sin(2.0 * (self.theta_min + self.theta_span * t))

    def t_of_gamma(self, g):
        g = torch.as_tensor(g, dtype=torch.float64)
        return (torch.atan(torch.exp(g / 2)) - self.theta_min) / self.theta_span
