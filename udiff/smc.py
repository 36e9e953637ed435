"""Sequential Monte Carlo machinery, generic: weighted particles split into independent populations.

Nothing here knows the dilation path (dilation.py builds its sampler from these pieces; docs/dilation-smc.md has the
derivations). Particles live in one flat (N, ...) batch; `Populations` says which contiguous block of seeds each
particle belongs to. Every population is an independent SMC run: its own weights, its own schedule, its own
estimate of the normalizing constant; the spread of those estimates is the standard error of their pooled value.

    log-weights      log W_i, normalized within each population: logsumexp over a population is 0
    ESS              (sum W)^2 / sum W^2 over a population, as a fraction of its size (Kong, Liu & Wong 1994)
    conditional ESS  (sum W w)^2 / sum W w^2 for incremental weights w, as a fraction (Zhou, Johansen & Aston
                     2016): how much a step of the schedule costs; `bisect_next` finds the step that costs a bound
    resampling       systematic (Carpenter, Clifford & Fearnhead 1999): one uniform per population and event
    log Z            log of the product over levels of sum_i W_i w_i (Del Moral 2004: unbiased for Z)

Shapes: (N,) float64 log-weights and per-particle scalars; (R,) per-population values. No click or files here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


class Populations:
    """N particles in R contiguous blocks of near-equal size (the larger ones last): particle i is in block pop[i]."""

    def __init__(self, n: int, r: int, device="cpu"):
        sizes = [n // r + (1 if k >= r - n % r else 0) for k in range(r)]
        self.n, self.r = n, r
        self.sizes = torch.tensor(sizes, dtype=torch.int64, device=device)                # (R,)
        self.starts = torch.cumsum(self.sizes, 0) - self.sizes                           # (R,) first index
        self.pop = torch.repeat_interleave(torch.arange(r, device=device), self.sizes)   # (N,)
        self.local = torch.arange(n, device=device) - self.starts[self.pop]              # (N,) index in its block

    def logsumexp(self, v: torch.Tensor) -> torch.Tensor:
        """(R,) logsumexp of v (N,) over each population (-inf for a population of -inf values)."""
        m = torch.full((self.r,), -math.inf, dtype=v.dtype, device=v.device).scatter_reduce(
            0, self.pop, v, "amax", include_self=True)
        safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        s = torch.zeros(self.r, dtype=v.dtype, device=v.device).index_add_(0, self.pop, torch.exp(v - safe[self.pop]))
        return torch.log(s) + safe

    def sum(self, v: torch.Tensor) -> torch.Tensor:
        """(R,) sum of v (N,) or (N, k) over each population."""
        out = torch.zeros((self.r,) + v.shape[1:], dtype=v.dtype, device=v.device)
        return out.index_add_(0, self.pop, v)

    def normalize(self, logw: torch.Tensor) -> torch.Tensor:
        """log-weights normalized within each population."""
        return logw - self.logsumexp(logw)[self.pop]

    def ess(self, logw: torch.Tensor) -> torch.Tensor:
        """(R,) effective sample size fraction of normalized log-weights: 1 / (M sum W^2)."""
        return torch.exp(-self.logsumexp(2.0 * logw)) / self.sizes.to(logw.dtype)

    def cess(self, logw: torch.Tensor, log_inc: torch.Tensor) -> torch.Tensor:
        """(R,) conditional ESS fraction of incremental log-weights given normalized logw (`conditional_ess`)."""
        return torch.exp(2.0 * self.logsumexp(logw + log_inc) - self.logsumexp(logw + 2.0 * log_inc))

    def systematic(self, logw: torch.Tensor, u: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """(N,) ancestor indices: systematic resampling of the populations where `which` (R,) bool is set.

        Particle j of block r (local index l, block size M) takes the first ancestor whose cumulative weight in the
        block reaches (l + u_r) / M; u (R,) are uniforms in (0, 1). Other blocks keep their particles (index i).
        """
        w = torch.exp(logw)
        cum = torch.cumsum(w, 0)
        base = cum[self.starts] - w[self.starts]                               # cumulative weight before each block
        key = self.pop.to(w.dtype) + (cum - base[self.pop]).clamp(max=1.0)     # increasing across blocks
        query = self.pop.to(w.dtype) + (self.local.to(w.dtype) + u[self.pop]) / self.sizes[self.pop].to(w.dtype)
        lo, hi = self.starts[self.pop], self.starts[self.pop] + self.sizes[self.pop] - 1
        anc = torch.minimum(torch.maximum(torch.searchsorted(key, query), lo), hi)
        return torch.where(which[self.pop], anc, torch.arange(self.n, device=logw.device))


def conditional_ess(logw: torch.Tensor, log_inc: torch.Tensor) -> float:
    """Conditional ESS fraction, in (0, 1], of incremental log-weights log_inc (N,) given normalized logw (N,)."""
    # CESS = (sum_i W_i w_i)^2 / sum_i W_i w_i^2 (Zhou, Johansen & Aston 2016); 1 for equal w
    return float(torch.exp(2.0 * torch.logsumexp(logw + log_inc, 0) - torch.logsumexp(logw + 2.0 * log_inc, 0)))


def bisect_next(cess: Callable[[float], float], current: float, target: float, iterations: int = 60) -> float:
    """The next parameter b in [0, current], as far towards 0 as keeps cess(b) >= target.

    `cess(b)` is the conditional ESS of moving from `current` to b; it must fall as b moves away from `current`
    (true for an exponential tilt: docs/dilation-smc.md §3). b = 0 when cess(0) >= target already.
    """
    if cess(0.0) >= target:
        return 0.0
    lo, hi = 0.0, current                                       # cess(hi) = 1 >= target > cess(lo)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if cess(mid) >= target else (mid, hi)
    return hi


def pooled_log_z(log_z: torch.Tensor, sizes: torch.Tensor) -> tuple[float, float]:
    """log of the size-weighted mean of R independent estimates Z_r (unbiased for Z), and its standard error.

    The standard error is the delta-method one, sd(Z_r / Z_mean) / sqrt(R), from the spread of the R estimates
    (NaN for R = 1): an estimate of the spread of log Z_mean over repeated runs.
    """
    a = sizes.to(torch.float64) / sizes.sum()
    lz = log_z.to(torch.float64)
    top = float(torch.logsumexp(lz + torch.log(a), 0))
    r = len(lz)
    if r < 2:
        return top, math.nan
    ratio = torch.exp(lz - top)                                 # Z_r / Z_mean
    return top, float(ratio.std(unbiased=True)) / math.sqrt(r)
