"""Noise schedules: gamma(t) = -log SNR(t), per component, and the noise level they define at time t.

Conventions (VDM, GUD): t in [0, 1], t = 0 is data, t = 1 is the prior; gamma is increasing in t. What
gamma means for the state is the process's business (udiff/process.py): for VP, sigma_t^2 = sigmoid(gamma_t)
and SNR = exp(-gamma); phase-space processes run on the clock B = softplus(gamma); VE has sigma^2 = e^gamma.

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
    """gamma(t) and gamma'(t), float64, shaped (B or 1, 1, *e) to broadcast against a state (B, k, *event).
    A process reads what the level means for its state (process.Process)."""

    t: torch.Tensor
    gamma: torch.Tensor
    dgamma: torch.Tensor

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

    def draw_params(self, batch: int, device) -> dict:
        """Per-item schedule parameters drawn during training (none for fixed schedules)."""
        return {}

    def level(self, t: torch.Tensor, event_ndim: int) -> NoiseLevel:
        """The noise level at times t (shape (B,) or scalar), shaped for states (B, k, *event)."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        g, d = self.gamma(t), self.dgamma(t)
        shape = (t.shape[0], 1) + (tuple(g.shape[1:]) if g.ndim > 1 else (1,) * event_ndim)
        return NoiseLevel(t=t, gamma=g.reshape(shape), dgamma=d.reshape(shape))

    def t_of_gamma(self, g: torch.Tensor) -> torch.Tensor:
        """Inverse of gamma (its mean over components), by bisection; subclasses give closed forms."""
        g = torch.as_tensor(g, dtype=torch.float64)
        lo = torch.full_like(g, self.t_min)
        hi = torch.ones_like(g)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            below = self.gamma(mid.reshape(-1)).reshape(mid.numel(), -1).mean(1).reshape(g.shape) < g
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    @property
    def gamma_range(self) -> tuple[float, float]:
        """(gamma(t_min), gamma(1)), the mean over components for a component-wise schedule."""
        ends = self.gamma(torch.tensor([self.t_min, 1.0], dtype=torch.float64)).reshape(2, -1).mean(1)
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


class SoftConditioning(Schedule):
    """GUD's component-wise linear schedule (Gerdes et al. 2024, eq. 13), one gamma per component.

    With ordering labels l_i (lower = generated earlier), a = 1/softness, targets gamma_d (denoise) and
    gamma_n (noise), and offset_i = log(Sigma_i / S_i^2):

        gamma_i(t) = gamma_d + offset_i + a (l_i - l_max) + t dgamma,  dgamma = gamma_n - gamma_d + a (l_max - l_min)

    so every component's true log-SNR runs on a parallel line, shifted by a l_i. Clipping keeps each
    component between its targets (beta = 0 outside its window: it is frozen). softness = 1 with
    l_i = -log Sigma_i is standard diffusion (all true SNRs equal); softness -> 0 generates component by
    component in label order, and softness = 0 is exactly that: the K distinct label values take turns,
    each group travelling from gamma_d to gamma_n in its own window of length 1/K.

    `softness` may be a per-item tensor (training over a range of schedules).
    """

    componentwise = True

    def __init__(self, offset: torch.Tensor, label: torch.Tensor, softness: float = 1.0, gamma_denoise: float = -13.3,
                 gamma_noise: float = 10.0, clip: bool = True, softness_range=None):
        super().__init__()
        self.register_buffer("offset", offset.double().clone())
        self.register_buffer("label", label.double().clone())
        self.softness = float(softness)
        self.gamma_d, self.gamma_n = float(gamma_denoise), float(gamma_noise)
        self.clip = bool(clip)
        self.softness_range = tuple(softness_range) if softness_range else None

    def _group_rank(self):
        """Rank of each component's label among the distinct labels (0 = generated first), and K."""
        values, inverse = torch.unique(self.label, return_inverse=True)
        return inverse.to(torch.float64), values.numel()

    def _parts(self, t, softness):
        """gamma (B, *event) and gamma' for softness > 0, or the autoregressive limit for softness = 0."""
        t = t.reshape((-1,) + (1,) * self.label.ndim).to(torch.float64)
        s = self.softness if softness is None else softness
        span = self.gamma_n - self.gamma_d
        if not torch.is_tensor(s) and s == 0:
            rank, k = self._group_rank()
            start = (k - 1 - rank) / k  # forward-time start of this group's window
            u = ((t - start) * k).clamp(0.0, 1.0)
            inside = ((t - start) * k > 0) & ((t - start) * k < 1)
            return self.gamma_d + self.offset + span * u, span * k * inside.to(torch.float64)
        a = 1.0 / torch.as_tensor(s, dtype=torch.float64, device=self.label.device).reshape(
            (-1,) + (1,) * self.label.ndim)
        lmax, lmin = self.label.max(), self.label.min()
        slope = span + a * (lmax - lmin)
        g = self.gamma_d + self.offset + a * (self.label - lmax) + t * slope
        d = slope.expand_as(g).clone()
        if self.clip:
            lo, hi = self.gamma_d + self.offset, self.gamma_n + self.offset
            d = d * ((g > lo) & (g < hi)).to(torch.float64)
            g = torch.maximum(torch.minimum(g, hi), lo)
        return g, d

    def gamma(self, t, softness=None):
        return self._parts(t, softness)[0]

    def dgamma(self, t, softness=None):
        return self._parts(t, softness)[1]

    def level(self, t, event_ndim, softness=None):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        g, d = self._parts(t, softness)
        return NoiseLevel(t=t, gamma=g.unsqueeze(1), dgamma=d.unsqueeze(1))

    def draw_params(self, batch: int, device) -> dict:
        """Per-item schedule parameters for training: a softness drawn uniformly from softness_range."""
        if not self.softness_range:
            return {}
        lo, hi = self.softness_range
        return {"softness": lo + (hi - lo) * torch.rand(batch, dtype=torch.float64, device=device)}


class VarianceGrad:
    """What the loss of one step tells a learned schedule's shape: the per-item scale 2 L_i of its gradient.

    The loss creates one, passes it to `level(t, variance_grad=...)` for the levels of the diffusion term, and
    sets `scale` from the per-item diffusion loss before the backward pass; the shape parameters then follow
    grad mean(L^2) = grad Var(L) + const instead of grad mean(L) (VDM App. I.2, eqs. 60-62). It belongs to the
    step that made it: nothing is kept on the schedule."""

    def __init__(self):
        self.scale = None

    def set(self, per_item: torch.Tensor) -> None:
        self.scale = 2.0 * per_item.detach().to(torch.float64)


class _ScaleGrad(torch.autograd.Function):
    """Identity on the normalized shape (n(t), n'(t)); in the backward pass item i's gradient is multiplied by
    box.scale[i] (a VarianceGrad whose scale the loss has set)."""

    @staticmethod
    def forward(ctx, n, dn, box):
        ctx.box = box
        return n.clone(), dn.clone()

    @staticmethod
    def backward(ctx, gn, gdn):
        scale = ctx.box.scale
        if scale is None:
            raise RuntimeError("VarianceGrad: the loss did not set the per-item scale before backward")
        scale = scale.to(gn.dtype).reshape(gn.shape)
        return gn * scale, gdn * scale, None


class VDMLearned(Schedule):
    """VDM's learned schedule (Kingma et al. 2021): trainable endpoints gamma_0 = gamma(0), gamma_1 = gamma(1)
    and, with `features` > 0, VDM's monotone network for the shape in between; linear between them otherwise.

        gamma(t) = gamma_0 + (gamma_1 - gamma_0) (g(t) - g(0)) / (g(1) - g(0))             (VDM eq. 59)
        g(t) = |w1| t + (1/F) sum_j |w3_j| phi(|w2_j| (2t - 1) + b2_j),  phi(h) = 2 sigmoid(h) - 1

    g is VDM's `NoiseSchedule_NNet` (l1, l2, l3 with every weight through |.|, so g increases; l1's bias cancels
    in the normalization), and gamma_1 = gamma_0 + |span| keeps the endpoints ordered. The endpoints are learned
    on the bound (prior and reconstruction terms); the shape does not change the continuous-time bound, only
    its variance, so `minimize_variance` trains it on mean(L_diff^2) instead (the "endpoint trick", VDM App. I.2):
    the training loss passes a `VarianceGrad` to the diffusion term's `level` and sets it from the per-item loss.
    gamma' is closed form (no double backward). Parameters are float32, arithmetic float64.
    """

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0, features: int = 1024,
                 minimize_variance: bool = False):
        super().__init__()
        self.gamma0 = nn.Parameter(torch.tensor(float(gamma_min)))
        self.span = nn.Parameter(torch.tensor(float(gamma_max) - float(gamma_min)))
        self.features = int(features)
        self.minimize_variance = bool(minimize_variance) and self.features > 0
        if self.features:
            self.w1 = nn.Parameter(torch.tensor(float(gamma_max) - float(gamma_min)))
            self.w2 = nn.Parameter(torch.randn(self.features))
            self.b2 = nn.Parameter(torch.zeros(self.features))
            self.w3 = nn.Parameter(torch.randn(self.features))

    def _g(self, t):
        """The unnormalized monotone network g(t) and g'(t), float64, t of shape (N,)."""
        w2 = self.w2.double().abs()
        w3 = self.w3.double().abs()
        h = w2 * (2.0 * t[:, None] - 1.0) + self.b2.double()
        s = torch.sigmoid(h)
        a = self.w1.double().abs()
        g = a * t + ((2.0 * s - 1.0) * w3).sum(-1) / self.features
        d = a + (2.0 * s * (1.0 - s) * 2.0 * w2 * w3).sum(-1) / self.features
        return g, d

    def _parts(self, t, variance_grad=None):
        t = torch.as_tensor(t, dtype=torch.float64)
        flat = t.reshape(-1).to(self.gamma0.device)
        lo = self.gamma0.double()
        span = self.span.double().abs()
        if not self.features:
            return (lo + span * flat).reshape(t.shape), span.expand(flat.shape).reshape(t.shape)
        g, d = self._g(flat)
        ends, _ = self._g(torch.tensor([0.0, 1.0], dtype=torch.float64, device=flat.device))
        n, dn = (g - ends[0]) / (ends[1] - ends[0]), d / (ends[1] - ends[0])
        if variance_grad is not None and self.minimize_variance and torch.is_grad_enabled():
            n, dn = _ScaleGrad.apply(n, dn, variance_grad)
        return (lo + span * n).reshape(t.shape), (span * dn).reshape(t.shape)

    def gamma(self, t):
        return self._parts(t)[0]

    def dgamma(self, t):
        return self._parts(t)[1]

    def level(self, t, event_ndim, variance_grad: VarianceGrad | None = None):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        g, d = self._parts(t, variance_grad)
        shape = (t.shape[0], 1) + (1,) * event_ndim
        return NoiseLevel(t=t, gamma=g.reshape(shape), dgamma=d.reshape(shape))

    def t_of_gamma(self, g):
        with torch.no_grad():
            return super().t_of_gamma(g)

    @property
    def gamma_range(self) -> tuple[float, float]:
        return self.endpoints

    @property
    def endpoints(self) -> tuple[float, float]:
        """(gamma_0, gamma_1), the learned gamma(0) and gamma(1)."""
        g0 = float(self.gamma0.detach())
        return g0, g0 + abs(float(self.span.detach()))
