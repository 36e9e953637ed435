"""Unnormalized target densities for `udiff sample RECIPE`: log pi(x) up to a constant, batched, torch.

A target is an object with

    dim                   d, the dimension of x
    log_prob(x)           (N, d) -> (N,): log pi(x) up to an additive constant, differentiable by autograd
    sample(n, generator)  (n, d) float64 exact draws on the CPU, or None when no exact sampler exists
    assign(x)             (N, d) -> (N,) int64 index of the mode each point belongs to (mixtures), else None
    mode_names            one label per mode (empty when the target has no modes to count)
    log_z                 log of the integral of exp(log_prob) when known exactly (0 for the normalized kinds
                          below), else None: what a sampler's log Z estimate is checked against
    to(device)            the same target with its parameters on `device`

Kinds, registered by name in `KINDS` (build.py maps recipe specs onto these constructors):

    gmm        Gaussian mixture: means K x d, weights K, isotropic stds K or covariances K x d x d
    grid       2-D grid of size x size Gaussian modes with unequal weights, centred on the origin
    circle     2-D Gaussian modes with unequal weights, equally spaced on a circle around the origin
    separated  K Gaussian modes far apart in d dimensions, at +-distance along the first coordinate axes
    rings      2-D concentric rings: |x| ~ N(r_k, std^2) folded onto the plane, angle uniform
    funnel     Neal's funnel: v ~ N(0, scale^2), x_i | v ~ N(0, e^v) for the other d - 1 coordinates
    fitted     a Gaussian mixture fitted by EM to data (`fit_gmm`); build.py chooses the coordinates
    python     any `module:function` returning log pi(x) for a batch (`PythonTarget`)

Every mixture here, the rings and the funnel are normalized (log_prob is the exact log-density, log_z = 0), which
the tests use; samplers only rely on log_prob up to a constant. Exact samples make the metrics of metrics.py possible.

No click, tqdm or file system here: data and modules arrive as tensors and callables.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .errors import RecipeError

LOG_2PI = math.log(2.0 * math.pi)

KINDS: dict[str, Callable] = {}


def register(name: str):
    """Register a target constructor under `name` (the `[target] kind` of a recipe)."""

    def add(fn):
        KINDS[name] = fn
        return fn

    return add


class Target:
    """Base class: a dimension and a batched log-density; subclasses add exact sampling and modes."""

    kind = "target"
    log_z: Optional[float] = None  # exact log of the integral of exp(log_prob), where known

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.mode_names: list[str] = []
        self.extra: dict = {}  # provenance the builder adds (the data a fitted target came from, ...)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        return None

    def assign(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return None

    @property
    def has_exact_samples(self) -> bool:
        return False

    def to(self, device) -> "Target":
        return self

    def info(self) -> dict:
        """What a samples artifact records about its target."""
        known = {} if self.log_z is None else {"log_z": self.log_z}
        return {"kind": self.kind, "dim": self.dim, "modes": len(self.mode_names),
                "exact_samples": self.has_exact_samples, **known, **self.extra}


# ---------------------------------------------------------------------------------------------------
# Gaussian mixtures (gmm, grid, separated, fitted)


class GaussianMixture(Target):
    """pi(x) = sum_k w_k N(x; m_k, C_k), with C_k = s_k^2 I (isotropic) or a full covariance.

    Args:
        means: (K, d) component means.
        weights: (K,) positive weights (normalized here).
        stds: (K,) isotropic standard deviations, or None.
        covs: (K, d, d) symmetric positive definite covariances, or None (then `stds`, default 1).
    """

    kind = "gmm"
    log_z = 0.0  # normalized

    def __init__(self, means, weights=None, stds=None, covs=None, kind: str = "gmm"):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise RecipeError("[target] means: expected K lists of d numbers")
        k, d = means.shape
        super().__init__(d)
        self.kind = kind
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or not bool((w > 0).all()):
            raise RecipeError(f"[target] weights: expected {k} positive numbers, one per mean")
        self.log_weights = torch.log(w / w.sum())
        self.means = means
        if covs is not None:
            covs = torch.as_tensor(covs, dtype=torch.float64)
            if covs.shape != (k, d, d):
                raise RecipeError(f"[target] covs: expected {k} matrices of {d}x{d} (one per mean), "
                                  f"got shape {tuple(covs.shape)}")
            if not torch.allclose(covs, covs.transpose(1, 2), atol=1e-10, rtol=1e-8):
                raise RecipeError("[target] covs: every covariance must be symmetric")
            chol, info = torch.linalg.cholesky_ex(covs)
            if int(info.max()) > 0:
                bad = int(torch.nonzero(info)[0, 0])
                raise RecipeError(f"[target] covs: covariance {bad} is not positive definite")
        else:
            s = torch.ones(k, dtype=torch.float64) if stds is None else torch.as_tensor(stds, dtype=torch.float64)
            if s.shape != (k,) or not bool((s > 0).all()):
                raise RecipeError(f"[target] stds: expected {k} positive numbers, one per mean")
            chol = s[:, None, None] * torch.eye(d, dtype=torch.float64)
        self.chol = chol                                                   # C_k = L_k L_k^T
        self.prec_chol = torch.linalg.inv(chol)                           # L_k^{-1}
        self.log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)  # log det C_k
        self.mode_names = [f"{i}" for i in range(k)]
        self._cast(torch.device("cpu"))

    def _cast(self, device):
        self._m = self.means.to(device, torch.float32)
        self._p = self.prec_chol.to(device, torch.float32)
        self._c = (self.log_weights - 0.5 * self.log_det - 0.5 * self.dim * LOG_2PI).to(device, torch.float32)

    def to(self, device):
        self._cast(torch.device(device))
        return self

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K): log w_k + log N(x; m_k, C_k)."""
        diff = x[:, None, :].to(self._m.dtype) - self._m[None]              # (N, K, d)
        z = torch.einsum("kij,nkj->nki", self._p, diff)                     # L_k^{-1} (x - m_k)
        return self._c[None] - 0.5 * (z * z).sum(-1)

    def component_log_probs_f64(self, x: torch.Tensor) -> torch.Tensor:
        """The same in float64 on the CPU, from the exact parameters (for fitting and tests)."""
        diff = x.to(torch.float64)[:, None, :] - self.means[None]
        z = torch.einsum("kij,nkj->nki", self.prec_chol, diff)
        return (self.log_weights - 0.5 * self.log_det - 0.5 * self.dim * LOG_2PI)[None] - 0.5 * (z * z).sum(-1)

    def log_prob(self, x):
        # log pi(x) = logsumexp_k [log w_k + log N(x; m_k, C_k)]: the mixture density (exact, normalized)
        return torch.logsumexp(self.component_log_probs(x), dim=1)

    def assign(self, x):
        """The component of largest responsibility (the mode a point belongs to)."""
        with torch.no_grad():
            return self.component_log_probs(x).argmax(1)

    @property
    def has_exact_samples(self):
        return True

    def sample(self, n, generator=None):
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[k] + torch.einsum("nij,nj->ni", self.chol[k], z)

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def dilated(self, lam: float) -> "GaussianMixture":
        """The law of sqrt(lam) X for X ~ this mixture: means sqrt(lam) m_k, covariances lam C_k."""
        return GaussianMixture(math.sqrt(lam) * self.means, self.weights, covs=lam * (self.chol @ self.chol.mT),
                               kind=self.kind)


def ramp_weights(k: int) -> torch.Tensor:
    """Default unequal weights of the hard cases: proportional to 1, 2, ..., K (our choice)."""
    return torch.arange(1, k + 1, dtype=torch.float64)


def _equal_widths(means: torch.Tensor, weights, std: float, kind: str) -> GaussianMixture:
    """The hard cases' mixture: every mode N(m_k, std^2 I), weights ∝ 1..K unless given."""
    k = means.shape[0]
    w = ramp_weights(k) if weights is None else weights
    return GaussianMixture(means, w, stds=torch.full((k,), float(std), dtype=torch.float64), kind=kind)


@register("gmm")
def gmm(means, weights=None, stds=None, covs=None) -> GaussianMixture:
    return GaussianMixture(means, weights, stds, covs, kind="gmm")


@register("grid")
def grid(size: int = 3, spacing: float = 4.0, std: float = 0.5, weights=None) -> GaussianMixture:
    """size x size modes at spacing * (i - (size-1)/2, j - (size-1)/2), row by row; weights ∝ 1..K by default."""
    k = size * size
    if weights is not None and len(weights) != k:
        raise RecipeError(f"[target] weights: a {size}x{size} grid has {k} modes; give {k} weights (row by row)")
    c = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0) * spacing
    means = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(k, 2)
    return _equal_widths(means, weights, std, "grid")


@register("circle")
def circle(modes: int = 9, radius: float = 5.0, std: float = 0.5, weights=None) -> GaussianMixture:
    """Mode k at radius * (cos 2 pi k / K, sin 2 pi k / K); weights ∝ 1..K by default."""
    if weights is not None and len(weights) != modes:
        raise RecipeError(f"[target] weights: expected {modes} weights, one per mode")
    angle = torch.arange(modes, dtype=torch.float64) * (2.0 * math.pi / modes)
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return _equal_widths(means, weights, std, "circle")


@register("separated")
def separated(dim: int = 10, modes: int = 4, distance: float = 8.0, std: float = 1.0, weights=None):
    """Modes at +distance e_1, -distance e_1, +distance e_2, -distance e_2, ... (pairwise >= distance * sqrt 2)."""
    if modes > 2 * dim:
        raise RecipeError(f"[target] modes: at most 2 * dim = {2 * dim} modes fit on the axes of {dim} dimensions; "
                          "raise dim or lower modes")
    if weights is not None and len(weights) != modes:
        raise RecipeError(f"[target] weights: expected {modes} weights, one per mode")
    means = torch.zeros(modes, dim, dtype=torch.float64)
    for i in range(modes):
        means[i, i // 2] = distance if i % 2 == 0 else -distance
    return _equal_widths(means, weights, std, "separated")


# ---------------------------------------------------------------------------------------------------
# Rings


class Rings(Target):
    """2-D rings: pi(x) = sum_k w_k exp(-(|x| - r_k)^2 / (2 s^2)) / N_k, angle uniform on each ring.

    N_k = 2 pi int_0^inf rho exp(-(rho - r_k)^2 / (2 s^2)) d rho
        = 2 pi [s^2 exp(-r_k^2 / (2 s^2)) + r_k s sqrt(2 pi) Phi(r_k / s)]   (closed form; each ring normalized)
    """

    kind = "rings"
    log_z = 0.0  # normalized

    def __init__(self, radii, std=0.2, weights=None):
        super().__init__(2)
        r = torch.as_tensor(radii, dtype=torch.float64)
        w = ramp_weights(len(r)) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != r.shape:
            raise RecipeError(f"[target] weights: expected {len(r)} weights, one per radius")
        self.radii, self.std = r, float(std)
        self.log_weights = torch.log(w / w.sum())
        s = self.std
        phi = 0.5 * (1.0 + torch.erf(r / (s * math.sqrt(2.0))))
        norm = 2.0 * math.pi * (s * s * torch.exp(-r * r / (2 * s * s)) + r * s * math.sqrt(2 * math.pi) * phi)
        self.log_norm = torch.log(norm)
        self.mode_names = [f"r={float(v):g}" for v in r]
        self.to("cpu")

    def to(self, device):
        self._r = self.radii.to(device, torch.float32)
        self._c = (self.log_weights - self.log_norm).to(device, torch.float32)
        return self

    def log_prob(self, x):
        rho = torch.sqrt((x * x).sum(-1) + 1e-12)  # |x|, smoothed at the origin so autograd stays finite
        # log pi(x) = logsumexp_k [log w_k - log N_k - (|x| - r_k)^2 / (2 s^2)]: the ring mixture (ours, normalized)
        return torch.logsumexp(self._c[None] - (rho[:, None] - self._r[None]) ** 2 / (2 * self.std ** 2), dim=1)

    def assign(self, x):
        rho = x.norm(dim=-1)
        return (rho[:, None] - self._r.to(rho.device)[None]).abs().argmin(1)

    @property
    def has_exact_samples(self):
        return True

    def sample(self, n, generator=None):
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        rho = _radius_draws(self.radii[k], self.std, generator)
        theta = 2 * math.pi * torch.rand(n, dtype=torch.float64, generator=generator)
        return torch.stack([rho * torch.cos(theta), rho * torch.sin(theta)], -1)


def _radius_draws(r: torch.Tensor, s: float, generator) -> torch.Tensor:
    """Exact draws of rho > 0 with density ∝ rho exp(-(rho - r)^2 / (2 s^2)), one per entry of r.

    Rejection sampling with the envelope (r + |u|) phi_s(u), u = rho - r: a mixture of N(0, s^2) (mass r) and a
    signed Rayleigh(s) (mass s sqrt(2/pi)); accept with probability (r + u)_+ / (r + |u|) <= 1.
    """
    out = torch.empty_like(r)
    todo = torch.arange(len(r))
    while len(todo):
        rr = r[todo]
        m = len(todo)
        rayleigh = torch.rand(m, dtype=torch.float64, generator=generator) * (rr + s * math.sqrt(2 / math.pi)) \
            < s * math.sqrt(2 / math.pi)
        g = torch.randn(m, dtype=torch.float64, generator=generator) * s
        e = torch.rand(m, dtype=torch.float64, generator=generator).clamp_min(1e-300)
        sign = torch.where(torch.rand(m, dtype=torch.float64, generator=generator) < 0.5, -1.0, 1.0)
        u = torch.where(rayleigh, sign * s * torch.sqrt(-2.0 * torch.log(e)), g)
        ok = torch.rand(m, dtype=torch.float64, generator=generator) * (rr + u.abs()) < (rr + u).clamp_min(0.0)
        out[todo[ok]] = rr[ok] + u[ok]
        todo = todo[~ok]
    return out


@register("rings")
def rings(radii=(2.0, 4.0, 6.0), std: float = 0.2, weights=None) -> Rings:
    return Rings(radii, std, weights)


# ---------------------------------------------------------------------------------------------------
# Neal's funnel


class Funnel(Target):
    """Neal's funnel (Neal 2003): v = x_1 ~ N(0, scale^2), x_i | v ~ N(0, e^v) for i = 2..d. No modes to count."""

    kind = "funnel"
    log_z = 0.0  # normalized

    def __init__(self, dim: int = 10, scale: float = 3.0):
        super().__init__(dim)
        if dim < 2:
            raise RecipeError("[target] dim: the funnel needs at least 2 dimensions")
        self.scale = float(scale)

    def log_prob(self, x):
        # log pi(x) = log N(v; 0, scale^2) + sum_i log N(x_i; 0, e^v): Neal's funnel (exact, normalized)
        v, rest = x[:, 0], x[:, 1:]
        d1 = self.dim - 1
        return (-0.5 * v * v / self.scale ** 2 - 0.5 * LOG_2PI - math.log(self.scale)
                - 0.5 * (rest * rest).sum(-1) * torch.exp(-v) - 0.5 * d1 * v - 0.5 * d1 * LOG_2PI)

    @property
    def has_exact_samples(self):
        return True

    def sample(self, n, generator=None):
        v = torch.randn(n, 1, dtype=torch.float64, generator=generator) * self.scale
        rest = torch.randn(n, self.dim - 1, dtype=torch.float64, generator=generator) * torch.exp(0.5 * v)
        return torch.cat([v, rest], 1)


@register("funnel")
def funnel(dim: int = 10, scale: float = 3.0) -> Funnel:
    return Funnel(dim, scale)


# ---------------------------------------------------------------------------------------------------
# A Gaussian mixture fitted to data


def fit_gmm(x: torch.Tensor, components: int, covariance: str = "full", iterations: int = 100, seed: int = 0,
            reg: float = 1e-3) -> GaussianMixture:
    """Fit a K-component Gaussian mixture to points x (N, d) by EM (Dempster, Laird & Rubin 1977), float64.

    Initialized by k-means++ seeding from `seed` (deterministic). `reg` is added to every covariance's diagonal,
    relative to the mean data variance, so a component on a few points stays positive definite (our choice).
    """
    x = x.to(torch.float64)
    n, d = x.shape
    if components > n:
        raise RecipeError(f"[target] components: {components} components need at least as many data points "
                          f"(the data have {n})")
    g = torch.Generator().manual_seed(seed)
    eps = reg * float(x.var(0).mean()) + 1e-12
    centres = [x[int(torch.randint(n, (1,), generator=g))]]
    for _ in range(1, components):  # k-means++: next centre with probability ∝ squared distance to the nearest
        d2 = torch.cdist(x, torch.stack(centres)).pow(2).min(1).values
        centres.append(x[int(torch.multinomial(d2 / d2.sum() if d2.sum() > 0 else torch.ones(n), 1, generator=g))])
    means = torch.stack(centres)
    resp = torch.nn.functional.one_hot(torch.cdist(x, means).argmin(1), components).to(torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    for _ in range(iterations + 1):
        # M-step: weights, means and covariances from the responsibilities (EM for Gaussian mixtures, standard)
        nk = resp.sum(0) + 1e-10
        weights = nk / n
        means = resp.T @ x / nk[:, None]
        diff = x[None] - means[:, None]                                     # (K, N, d)
        if covariance == "diag":
            covs = torch.diag_embed((resp.T[..., None] * diff * diff).sum(1) / nk[:, None] + eps)
        else:
            covs = torch.einsum("kn,kni,knj->kij", resp.T, diff, diff) / nk[:, None, None] + eps * eye
        # E-step: responsibilities under the current mixture
        resp = torch.softmax(GaussianMixture(means, weights, covs=covs).component_log_probs_f64(x), dim=1)
    return GaussianMixture(means, weights, covs=covs, kind="fitted")



@register("fitted")
def fitted(x: torch.Tensor, components: int = 8, covariance: str = "full", iterations: int = 100,
           seed: int = 0) -> GaussianMixture:
    return fit_gmm(x, components, covariance, iterations, seed)


# ---------------------------------------------------------------------------------------------------
# Any Python function


class PythonTarget(Target):
    """log pi given by a user function f(x: (N, d) tensor) -> (N,) tensor; optional exact sampler g(n, generator)."""

    kind = "python"

    def __init__(self, fn: Callable, dim: int, name: str, exact: Optional[Callable] = None):
        super().__init__(dim)
        self.fn, self.name, self.exact = fn, name, exact
        self.extra = {"function": name}
        probe = torch.zeros(2, dim, requires_grad=True)
        try:
            out = fn(probe)
        except Exception as e:  # the user's function: report, do not crash with its traceback
            raise RecipeError(f"[target] function: {name} failed on a (2, {dim}) batch of zeros "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); it must take "
                              "an (N, dim) tensor") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2,):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RecipeError(f"[target] function: {name} returned {shape} for a (2, {dim}) batch; it must return "
                              "one log-density per row, a tensor of shape (N,)")
        if torch.isnan(out).any():
            raise RecipeError(f"[target] function: {name} returned NaN for a (2, {dim}) batch of zeros; return a "
                              "finite log-density (or -inf outside the support)")
        if not out.requires_grad:
            raise RecipeError(f"[target] function: {name} does not depend on x through torch operations (its result "
                              "has no gradient); compute log pi(x) from x with torch, not numpy or constants")

    def log_prob(self, x):
        out = self.fn(x)
        if torch.isnan(out).any():
            from .errors import NonFiniteResult

            raise NonFiniteResult(f"[target] function: {self.name} returned NaN at {int(torch.isnan(out).sum())} of "
                                  f"{len(out)} points; return -inf outside the support; nothing was written")
        return out

    @property
    def has_exact_samples(self):
        return self.exact is not None

    def sample(self, n, generator=None):
        if self.exact is None:
            return None
        out = torch.as_tensor(self.exact(n, generator), dtype=torch.float64)
        if tuple(out.shape) != (n, self.dim):
            raise RecipeError(f"[target] exact: returned shape {tuple(out.shape)} for n = {n}; expected ({n}, "
                              f"{self.dim})")
        return out



@register("python")
def python(fn: Callable, dim: int, name: str, exact: Optional[Callable] = None) -> PythonTarget:
    return PythonTarget(fn, dim, name, exact)
