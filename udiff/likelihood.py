"""Likelihood: VDM's variational bound and the probability-flow ODE log-likelihood, for every process and basis.

The derivation is in docs/likelihood.md: the bound's three terms (prior, 256-way or Gaussian reconstruction,
diffusion in continuous or discrete time) for any linear Gaussian process, the phase-space bound with the
momentum integrated out (why the HSM network's bound needs no sampled momentum), the PF-ODE estimator with
Hutchinson's trace and its dequantization, and the estimators' control variates. Everything is computed in the
component space of the model's basis and reported for the data (the basis's Jacobian included): bits/dim for
8-bit images, nats/dim for float data.

Estimators: every item's randomness (times, noise, dequantization, momentum, probes) is a pure function of
(seed, item index, repeat), so results do not depend on the batch size; `evaluate` chooses the repeats for a
target standard error unless they are given.

Pure torch: no click, no file system, no printing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import conversions as C
from . import distributed
from .data import to_unit
from .errors import NonFiniteResult, UdiffError
from .ode import dopri5
from .registry import NLL_METHODS
from .rng import NoiseSource, step_seed
from .schedule import VarianceGrad

BINS = 256
LN2 = math.log(2.0)
METHODS = NLL_METHODS.names()

# purposes of the per-item random streams
_TIME, _EPS, _RECON, _DEQUANT, _MOMENTUM, _PROBE = range(6)


# ------------------------------------------------------------------------------------------------
# The terms of the bound, per item and component (each equation once)


def prior_kl(process, x0: torch.Tensor, lvl) -> torch.Tensor:
    """KL(q(z_1 | x0) || p(z_1)) per component, (B, *event) nats, float64 (VDM eq. 11's L_prior; for VP:
    1/2 (sigma^2 + alpha^2 x^2 - 1 - log sigma^2)), q(z_1 | x0) = N(h x0, Σ) and p = N(0, prior_cov)."""
    h = process.mean_map(lvl)[..., :, 0]
    m = h * x0.double()[:, 0].unsqueeze(-1)  # (B, *e, k)
    cov = process.cov(lvl).to(m)
    prior = process.prior_cov(lvl).to(m)
    k = process.k
    if k == 1:
        ratio = cov[..., 0, 0] / prior[..., 0, 0]
        kl = 0.5 * (ratio + m[..., 0].square() / prior[..., 0, 0] - 1.0 - torch.log(ratio))
    else:  # 1/2 [tr(P^-1 C) + m^T P^-1 m - k + log det P - log det C]
        pinv = torch.linalg.inv(prior)
        kl = 0.5 * ((pinv * cov).sum((-2, -1)) + ((m.unsqueeze(-2) @ pinv).squeeze(-2) * m).sum(-1) - k
                    + torch.logdet(prior) - torch.logdet(cov))
    return kl.expand(m.shape[:-1])


def decoder_precision(process, lvl, like: torch.Tensor) -> torch.Tensor:
    """w = h^T Sigma_t^-1 h per component, (Bt or 1, *event): the precision with which z_t observes x0 (SNR
    for VP). like: any (B, *event) tensor giving the event shape and device."""
    w = C.precision(process, lvl).to(like.device)
    return w.expand((w.shape[0],) + tuple(like.shape[1:]))


def gaussian_recon(process, lvl, like: torch.Tensor) -> torch.Tensor:
    """E[-log N(x0; y/w, 1/w)] = 1/2 log(2 pi e / w) per component (float data's decoder at t_min)."""
    return 0.5 * (math.log(2.0 * math.pi) + 1.0 - torch.log(decoder_precision(process, lvl, like)))


def discretized_nll(x: torch.Tensor, mean: torch.Tensor, prec: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """-log p(x | z_0) per element for VDM's discretized decoder: a categorical over the bin centres
    v_k = (2k + 1)/bins - 1 with logits -prec/2 (mean - v_k)^2 (VDM §1.3), x a bin centre.

    Only bins within a window around `mean` are summed: the others are more than 50 nats below the best one.
    """
    width = 2.0 / bins
    reach = math.sqrt(100.0 / float(prec.detach().min().clamp_min(1e-30)))  # logit gap of 50 nats
    half = int(min(bins, math.ceil(reach / width) + 2))
    centre = torch.floor((mean.detach() + 1.0) / width).clamp(0, bins - 1)
    offsets = torch.arange(-half, half + 1, device=mean.device, dtype=mean.dtype)
    k = centre.unsqueeze(-1) + offsets
    valid = (k >= 0) & (k < bins)
    v = (2.0 * k + 1.0) / bins - 1.0
    logits = -0.5 * prec.unsqueeze(-1) * (mean.unsqueeze(-1) - v).square()
    logits = torch.where(valid, logits, torch.full_like(logits, -math.inf))
    own = -0.5 * prec * (mean - x).square()
    return torch.logsumexp(logits, -1) - own


def data_variance(basis, var: torch.Tensor) -> torch.Tensor:
    """Per-pixel variance of decode(chi_hat) when chi_hat has independent errors of variance `var` (B, *e)."""
    v = var * basis.scale.to(var).square()
    if basis.kind == "pixel":
        return v
    flat = v.reshape(v.shape[0], -1) @ basis.spread(v.device)
    return flat.reshape(v.shape)


def recon_params(model, z0: torch.Tensor, lvl0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, precision) per data element (B, *event), float64, of the 256-way decoder given z_0: its mean
    x_hat = decode(y / w) and the inverse of that estimate's variance in data space."""
    w, y = C.observation(model.process, z0.double(), lvl0)
    w = w.double().expand_as(y)
    mean = model.decode((y.double() / w).unsqueeze(1))
    return mean.double(), 1.0 / data_variance(model.basis, 1.0 / w)


def discrete_recon(model, x: torch.Tensor, z0: torch.Tensor, lvl0) -> torch.Tensor:
    """-log p(x | z_0) summed over the data (B,), nats: the 256-way decoder on x_hat = decode(y / w)."""
    mean, prec = recon_params(model, z0, lvl0)
    return discretized_nll(x.double(), mean, prec).flatten(1).sum(1)


def _score_quadratic(process, d: torch.Tensor, lvl) -> torch.Tensor:
    """1/2 s(d)^T g g^T s(d) per component (B, *event), per unit t: s = score_from_eps (linear), d in the
    predicted slots, g g^T = gamma' GG."""
    d = d.double()
    ds = C.score_from_eps(process, d, lvl).double()
    _, GG = process.sde(lvl)
    gds = C.apply(GG * lvl.dgamma[:, 0][..., None, None], ds)
    return 0.5 * (ds * gds).sum(1)


def diffusion_continuous(process, eps_hat: torch.Tensor, eps: torch.Tensor, lvl) -> torch.Tensor:
    """1/2 (s_theta - s)^T g g^T (s_theta - s) summed over slots and components (B,): the integrand of the
    continuous-time bound (VDM eq. 17 = 1/2 gamma' ||eps - eps_hat||^2 for VP). eps: the predicted slots."""
    return _score_quadratic(process, eps_hat.double() - eps.double(), lvl).flatten(1).sum(1)


def reference_x0(process, z: torch.Tensor, lvl, ref) -> torch.Tensor:
    """E[x0 | z_t] for data with independent N(m_i, c_i) components, ref = (m, c):
    m + c (y - w m) / (1 + c w), (B, 1, *event)."""
    m, c = ref
    w, y = C.observation(process, z.double(), lvl)
    w = w.double()
    return (m + c * (y.double() - w * m) / (1.0 + c * w)).unsqueeze(1)


def reference_mean(w: torch.Tensor, x0: torch.Tensor, ref) -> torch.Tensor:
    """E_eps[(x0 - reference_x0)^2] per component: with y = w x0 + n, n ~ N(0, w), the error is
    (x0 - m - c n)/(1 + c w), so its mean square is ((x0 - m)^2 + c^2 w) / (1 + c w)^2."""
    m, c = ref
    return ((x0.double()[:, 0] - m).square() + c * c * w) / (1.0 + c * w).square()


def reference_moments(model, data: torch.Tensor, image8: bool, batch: int = 4096):
    """(mean, variance) per component (event shape, float64) of a data set in the model's components: the
    reference denoiser of the control variate (any values keep the estimate unbiased; these make it good)."""
    total, square, n = 0.0, 0.0, data.shape[0]
    dev = model.basis.scale.device
    for start in range(0, n, batch):
        x = data[start:start + batch].to(dev)
        x0 = model.encode((to_unit(x) if image8 else x.float()).double())[:, 0]
        total = total + x0.sum(0)
        square = square + x0.square().sum(0)
    mean = total / n
    var = (square / n - mean.square()).clamp_min(0.0)
    return mean, var.clamp_min(1e-6 * float(var.mean()) + 1e-30)


def diffusion_step(w_s: torch.Tensor, w_t: torch.Tensor, x0: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """KL(q(z_s | z_t, x0) || q(z_s | z_t, x0_hat)) = 1/2 (w_s - w_t)(x0 - x0_hat)^2 summed (B,) (VDM eq. 13
    with SNR -> w, the precision of x0 in z, for any linear Gaussian process)."""
    return 0.5 * ((w_s - w_t) * (x0.double() - x0_hat.double())[:, 0].square()).flatten(1).sum(1)


def log_scale(basis) -> torch.Tensor:
    """sum_i log S_i = -log|det dchi/dx|: what a component-space NLL gains in data space (scalar, float64)."""
    return torch.log(basis.scale.double()).sum()


def momentum_law(process):
    """The initial law r of the state given x0 (N(0, init_cov): PSLD/CLD's momentum; nothing for VP):
    (L with L L^T = init_cov, the mask of the slots of xi that L uses, their variances), so that
    m0 = L xi and log r(m0) = sum over the mask of -xi^2/2 - log(2 pi var)/2 per component."""
    evals, evecs = torch.linalg.eigh(process.init_cov().double())
    evals = evals.clamp_min(0.0)
    mask = evals > 1e-300
    return evecs * evals.sqrt(), mask, evals


# ------------------------------------------------------------------------------------------------
# The bound as a function of its random numbers (shared by training and evaluation)


def _level_at(model, value: float, rows: int, device, params):
    t = torch.full((rows if params else 1,), float(value), dtype=torch.float64, device=device)
    return model.level(t, **(params or {}))


def _mean_gamma(lvl) -> torch.Tensor:
    return lvl.gamma.flatten(1).mean(1)


def time_of_uniform(schedule, u: torch.Tensor, lvl0, lvl1, sampling: str = "gamma") -> torch.Tensor:
    """The time a uniform u in [0, 1) places (vlb_terms' `sampling`): "gamma", the mean gamma uniform between
    its values at t_min (lvl0) and 1 (lvl1); "uniform", t uniform on [t_min, 1]."""
    t_min = float(schedule.t_min)
    if sampling == "gamma":
        g_lo, g_hi = _mean_gamma(lvl0).detach(), _mean_gamma(lvl1).detach()
        return schedule.t_of_gamma(g_lo + u * (g_hi - g_lo)).clamp(t_min, 1.0)
    return t_min + (1.0 - t_min) * u


def vlb_terms(model, x: torch.Tensor, x0: torch.Tensor, u: torch.Tensor, eps: torch.Tensor, *, image8: bool,
              steps: int = 0, eps0: torch.Tensor | None = None, params: dict | None = None,
              sampling: str = "gamma", control: bool = True, ref=None, variance_grad=None):
    """(prior, recon, diffusion), each (R,) nats summed over the data, for R rows.

    x: data (R, *event) (bin centres for 8-bit images); x0 = model.encode(x) (R, 1, *event); u (R,) uniforms
    in [0, 1) that place the time; eps (R, k, *event) standard normal noise of z_t; eps0 the same for z_t_min
    (8-bit images only); steps = 0 for continuous time, else T. Differentiable in the network and schedule.

    sampling "uniform": t = t_min + (1 - t_min) u (VDM's estimator; the trainer's times). "gamma": the mean
    gamma is uniform, t = gamma^-1(gamma_0 + u (gamma_1 - gamma_0)), and the integrand is weighted by
    (gamma_1 - gamma_0) / mean gamma'(t) (importance sampling; the same estimator for a linear gamma, far
    lower variance where gamma is not, e.g. VP-SDE's, whose gamma' ~ 1/t near 0). For discrete T it picks
    step i with probability (mean gamma_t - mean gamma_s) / (gamma_1 - gamma_0).

    control: subtract the same term for a reference denoiser whose mean over eps is closed form (data with
    independent N(m_i, c_i) components, ref = (m, c), by default m = 0 and the basis's fitted variances:
    `reference_x0`) and add that mean back.
    Unbiased whatever the model; it removes most of the noise of ||eps - eps_hat||^2 where the noise is small
    (there both denoisers are nearly the identity on x0), which is most of the gamma range.
    """
    proc, sched = model.process, model.schedule
    rows, dev = x0.shape[0], x0.device
    t_min = float(sched.t_min)
    event = tuple(x0.shape[2:])
    kw = params or {}
    lvl1 = _level_at(model, 1.0, rows, dev, params)
    prior = prior_kl(proc, x0, lvl1).flatten(1).sum(1)
    lvl0 = _level_at(model, t_min, rows, dev, params)
    if image8:
        z0 = C.perturb(proc, x0.double(), eps0.double(), lvl0)
        recon = discrete_recon(model, x, z0, lvl0)
    else:
        per = gaussian_recon(proc, lvl0, x0[:, 0])
        recon = per.expand((per.shape[0],) + event).flatten(1).sum(1) + log_scale(model.basis).to(dev)
        recon = recon.expand(rows)
    k, p = proc.k, proc.predicted
    target = eps[:, k - p:]
    u = u.double()
    if control and ref is None:
        ref = (torch.zeros(event, dtype=torch.float64, device=dev),
               (model.basis.floored_variances() / model.basis.scale.double().square()).to(dev))
    if sampling == "gamma":
        g_lo, g_hi = _mean_gamma(lvl0).detach(), _mean_gamma(lvl1).detach()
    tc = time_of_uniform(sched, u, lvl0, lvl1, sampling).to(dev)
    if not steps:
        lvl = model.level(tc, **kw, **({"variance_grad": variance_grad} if variance_grad is not None else {}))
        z = C.perturb(proc, x0, eps, lvl)
        diff = diffusion_continuous(proc, model.eps(z, lvl), target, lvl)
        if control:  # minus the reference denoiser's integrand, plus its mean over eps
            eps_ref = C.eps_from_x0(proc, z.double(), reference_x0(proc, z, lvl, ref), lvl)[:, k - p:]
            unit = torch.zeros((1, k) + event, dtype=torch.float64, device=dev)
            h_eps = C.eps_from_x0(proc, unit, -torch.ones_like(unit[:, :1]), lvl)[:, k - p:]  # L^-1 h
            mean = _score_quadratic(proc, h_eps, lvl) * reference_mean(decoder_precision(proc, lvl, x0[:, 0]),
                                                                       x0, ref)
            diff = diff - diffusion_continuous(proc, eps_ref, target, lvl) + mean.flatten(1).sum(1)
        if sampling == "gamma":
            diff = diff * (g_hi - g_lo) / lvl.dgamma.flatten(1).mean(1).detach()
        else:
            diff = diff * (1.0 - t_min)
    else:
        i = torch.ceil((tc - t_min) / (1.0 - t_min) * steps).clamp(1, steps)
        if sampling != "gamma":
            i = torch.floor(u * steps).clamp(max=steps - 1) + 1.0
        t = t_min + (1.0 - t_min) * i / steps
        s = t_min + (1.0 - t_min) * (i - 1.0) / steps
        lvl_t, lvl_s = model.level(t, **kw), model.level(s, **kw)
        z = C.perturb(proc, x0, eps, lvl_t)
        x0_hat = C.x0_from_eps(proc, z.double(), model.eps(z, lvl_t).double(), lvl_t)
        w_t, w_s = decoder_precision(proc, lvl_t, x0[:, 0]), decoder_precision(proc, lvl_s, x0[:, 0])
        diff = diffusion_step(w_s, w_t, x0, x0_hat)
        if control:  # minus the reference denoiser's term, plus its mean over eps
            diff = (diff - diffusion_step(w_s, w_t, x0, reference_x0(proc, z, lvl_t, ref))
                    + (0.5 * (w_s - w_t) * reference_mean(w_t, x0, ref)).flatten(1).sum(1))
        if sampling == "gamma":  # divided by the probability of step i
            diff = diff * (g_hi - g_lo) / (_mean_gamma(lvl_t) - _mean_gamma(lvl_s)).detach()
        else:
            diff = diff * steps
    return prior, recon, diff


def vlb_loss(model, x: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, image8: bool,
             params: dict | None = None, eps0: torch.Tensor | None = None) -> torch.Tensor:
    """[train] weighting = "vlb": the whole continuous-time bound per item, nats per data dimension (B,).

    t: times in [t_min, 1] (stratified by the trainer); eps0: the decoder's noise (8-bit images), drawn with
    torch's generator when not given.
    Learned schedules get their gradient from it: the endpoints through the prior and reconstruction terms
    and gamma', the shape through the diffusion term (or its square, see schedule.VDMLearned).
    """
    t_min = float(model.schedule.t_min)
    u = (t.double() - t_min) / (1.0 - t_min)
    if image8 and eps0 is None:
        eps0 = torch.randn_like(eps)
    shape_grad = VarianceGrad() if getattr(model.schedule, "minimize_variance", False) else None
    prior, recon, diff = vlb_terms(model, x, x0, u, eps, image8=image8, eps0=eps0, params=params,
                                   sampling="uniform", control=False, variance_grad=shape_grad)
    d = math.prod(model.event_shape)
    if shape_grad is not None:
        shape_grad.set(diff / d)
    return ((prior + recon + diff) / d).float()


# ------------------------------------------------------------------------------------------------
# Estimators over a data set


@dataclass
class NLLEstimate:
    """An estimate of the mean negative log-likelihood (or its bound) of a data set."""

    method: str
    value: float                      # in `units`
    stderr: float | None              # standard error of the mean over the items (data and estimator)
    terms: dict                       # name → mean, in `units`; they add up to `value`
    units: str                        # "bits/dim" or "nats/dim"
    bounds: str                       # what the number bounds or estimates
    n: int
    repeats: int
    steps: int | None = None          # T of the discrete-time bound (None: continuous time)
    nfe: float | None = None          # ODE: mean network evaluations per solve
    dequantization: str | None = None
    per_item: torch.Tensor = field(default=None, repr=False)  # (n,) in `units`
    stderr_target: float | None = None  # the target the repeats were chosen for (None: repeats given)
    diffusion_density: dict | None = None  # vlb: the diffusion term over t (see `diffusion_density`)

    def as_dict(self) -> dict:
        key = "bpd" if self.units == "bits/dim" else "nll"
        out = {key: self.value, "stderr": self.stderr, "terms": self.terms,
               "units": self.units, "bounds": self.bounds, "method": self.method, "n": self.n,
               "repeats": self.repeats, "stderr_target": self.stderr_target}
        if self.method == "vlb":
            out["steps"] = self.steps
            out["time"] = "continuous" if self.steps is None else "discrete"
            if self.diffusion_density is not None:
                out["diffusion_density"] = self.diffusion_density
        else:
            out["nfe"] = self.nfe
            out["dequantization"] = self.dequantization
        return out


def _stream(seed: int, repeat: int, purpose: int) -> int:
    return step_seed(seed, repeat, salt=purpose) & 0xFFFFFFFF


def _normals(ns: NoiseSource, seed: int, purpose: int, reps, shape) -> torch.Tensor:
    """(B·K, *shape) float64 standard normals for repeats `reps` (K indices), rows item-major (item b, the
    k-th repeat at b·K + k)."""
    draws = [ns(_stream(seed, r, purpose), shape).double() for r in reps]
    return torch.stack(draws, 1).reshape((len(ns) * len(draws),) + tuple(shape))


def _reps(repeats) -> list[int]:
    return list(range(repeats)) if isinstance(repeats, int) else list(repeats)


def van_der_corput(r: int) -> float:
    """The base-2 radical inverse of r: repeats 0 .. 2^m - 1 take the offsets {i / 2^m}, a stratified lattice."""
    out, f = 0.0, 0.5
    while r:
        out += f * (r & 1)
        r >>= 1
        f *= 0.5
    return out


def time_uniforms(ns: NoiseSource, seed: int, reps) -> torch.Tensor:
    """(B, K) float64 uniforms that place the times of the items of `ns` for repeats `reps`: repeat r of an item
    sits at (u + vdc(r)) mod 1, u the item's own uniform."""
    u0 = ns.uniform(_stream(seed, 0, _TIME), (1,))[:, 0]
    offsets = torch.tensor([van_der_corput(r) for r in reps], dtype=torch.float64, device=u0.device)
    return torch.remainder(u0[:, None] + offsets, 1.0)


DENSITY_BINS = 24  # at most this many bins in eval-nll's diffusion-term density (equal steps of the mean log-SNR)


def diffusion_density(model, diffusion: torch.Tensor, first_index: int, seed: int, scale: float, device="cpu",
                      bins: int = DENSITY_BINS) -> dict:
    """Where the diffusion term comes from: its integral over each of `bins` time bins of equal width in the
    mean gamma (the estimator's own time variable), estimated by the mean of the draws that fell in the bin
    times the bin's width (a stratified estimate: the bins' shares add up to the term up to the draws'
    uneven spread over the bins). Fewer bins when there are fewer than 16 draws a bin. diffusion: (n, K) nats,
    repeat k of item i drawn at time_uniforms' (i, k). Returns the bins' edges in t and in mean gamma, each
    bin's share (in the reported unit), its density per unit of t (share / width) and its number of draws."""
    n, k = diffusion.shape
    bins = max(1, min(bins, n * k // 16))
    ns = NoiseSource(torch.arange(n) + first_index)
    u = time_uniforms(ns, seed, range(k))
    which = torch.floor(u * bins).long().clamp(0, bins - 1).flatten()
    total = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, diffusion.double().flatten().cpu())
    draws = torch.bincount(which, minlength=bins)
    share = total / draws.clamp_min(1) / bins * scale
    sched = model.schedule
    dev = torch.device(device)
    lvl0, lvl1 = _level_at(model, float(sched.t_min), 1, dev, None), _level_at(model, 1.0, 1, dev, None)
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64, device=dev)
    t = time_of_uniform(sched, edges, lvl0, lvl1).double().cpu()
    g_lo, g_hi = float(_mean_gamma(lvl0).detach()), float(_mean_gamma(lvl1).detach())
    gamma = g_lo + edges.cpu() * (g_hi - g_lo)
    width = (t[1:] - t[:-1]).clamp_min(1e-300)
    return {"t": t.tolist(), "gamma": gamma.tolist(), "share": share.tolist(), "density": (share / width).tolist(),
            "draws": draws.tolist()}


def vlb_batch(model, x: torch.Tensor, index: torch.Tensor, *, image8: bool, steps: int = 0, repeats=1,
              seed: int = 0, ref=None) -> dict[str, torch.Tensor]:
    """The bound's terms for a batch of items x (n, *event) with global indices `index`: each (n, K) nats.
    `repeats`: K, or the repeat indices to draw (repeat r of an item puts its time at (u + vdc(r)) mod 1)."""
    reps = _reps(repeats)
    n, K = x.shape[0], len(reps)
    ns = NoiseSource(index, device=x.device)
    shape = (model.process.k,) + tuple(model.event_shape)
    u = time_uniforms(ns, seed, reps).reshape(-1)
    eps = _normals(ns, seed, _EPS, reps, shape)
    eps0 = _normals(ns, seed, _RECON, reps, shape) if image8 else None
    xr = x.repeat_interleave(K, 0).double()
    x0 = model.encode(xr)
    prior, recon, diff = vlb_terms(model, xr, x0, u, eps, image8=image8, steps=steps, eps0=eps0, ref=ref)
    return {"prior": prior.reshape(n, K), "recon": recon.reshape(n, K), "diffusion": diff.reshape(n, K)}


def ode_batch(model, x: torch.Tensor, index: torch.Tensor, *, image8: bool, repeats=1, seed: int = 0,
              rtol: float = 1e-5, atol: float = 1e-5) -> tuple[dict[str, torch.Tensor], int]:
    """PF-ODE negative log-likelihood terms for a batch of items: ({term: (n, K) nats}, NFE of the solve)."""
    proc = model.process
    reps = _reps(repeats)
    n, K = x.shape[0], len(reps)
    rows = n * K
    event = tuple(model.event_shape)
    d = math.prod(event)
    shape = (proc.k,) + event
    dev = x.device
    ns = NoiseSource(index, device=dev)
    xr = x.repeat_interleave(K, 0).double()
    if image8:  # uniform dequantization within each bin of width 2/256
        u = torch.stack([ns.uniform(_stream(seed, r, _DEQUANT), event) for r in reps], 1)
        xr = xr + (u.reshape((rows,) + event) - 0.5) * (2.0 / BINS)
    chi = model.encode(xr)  # (R, 1, *e)
    factor, mask, var = momentum_law(proc)
    xi = _normals(ns, seed, _MOMENTUM, reps, shape)
    first = torch.zeros(proc.k, dtype=torch.float64, device=dev)
    first[0] = 1.0
    z0 = first.reshape((1, proc.k) + (1,) * len(event)) * chi
    z0 = z0 + torch.einsum("ij,bj...->bi...", factor.to(dev), xi)
    probe = torch.where(_normals(ns, seed, _PROBE, reps, shape) >= 0, 1.0, -1.0).to(torch.float64)

    slots = torch.eye(proc.k, dtype=torch.float64, device=dev).reshape((proc.k, proc.k) + (1,) * len(event))
    p = proc.predicted

    data_var = (model.basis.variances.double() / model.basis.scale.double().square()).to(dev)  # per component

    def reference(z, lvl):
        """A linear drift with an exactly known trace: the PF-ODE's for data with independent N(0, c_i)
        components (c_i the basis's fitted variances), whose denoiser is x0 = c y / (1 + c w)."""
        w, y = C.observation(proc, z, lvl)
        x0 = (data_var * y / (1.0 + data_var * w)).unsqueeze(1)
        return C.reverse_drift(proc, z, C.eps_from_x0(proc, z, x0, lvl)[:, proc.k - p:], lvl, pf_ode=True)

    def velocity(t: float, y: torch.Tensor) -> torch.Tensor:
        lvl = model.level(torch.tensor([t], dtype=torch.float64, device=dev))
        with torch.enable_grad():
            z = y[:, :-1].reshape((rows,) + shape).detach().requires_grad_(True)
            drift = C.reverse_drift(proc, z, model.eps(z, lvl).to(z.dtype), lvl, pf_ode=True)
            (vjp,) = torch.autograd.grad(drift, z, probe)
        # Hutchinson's v^T J v on what the linear reference does not capture, plus the reference's exact trace
        # (a control variate with known mean: it removes the probe noise of the k×k blocks, e.g. PSLD's
        # strongly coupled position and momentum near t_min)
        trace = sum(reference(slots[j:j + 1].expand((1,) + shape), lvl)[:, j].sum() for j in range(proc.k))
        div = ((vjp - reference(probe, lvl)) * probe).flatten(1).sum(1) + trace
        return torch.cat([drift.detach().flatten(1), div.detach()[:, None]], 1)

    y0 = torch.cat([z0.flatten(1), torch.zeros(rows, 1, dtype=torch.float64, device=dev)], 1)
    try:
        y1, nfe = dopri5(velocity, y0, float(model.schedule.t_min), 1.0, rtol=rtol, atol=atol)
    except UdiffError as e:
        raise UdiffError(str(e).replace("[sample] rtol/atol", "--tol").replace("or use another sampler",
                                                                              "or use --method vlb")) from None
    z1 = y1[:, :-1].reshape((rows,) + shape)
    lvl1 = model.level(torch.ones(1, dtype=torch.float64, device=dev))
    pcov = proc.prior_cov(lvl1).double().to(dev).expand(z1.shape[:1] + event + (proc.k, proc.k))
    v = z1.movedim(1, -1)
    quad = ((v.unsqueeze(-2) @ torch.linalg.inv(pcov)).squeeze(-2) * v).sum(-1).flatten(1).sum(1)
    prior = 0.5 * quad + 0.5 * torch.logdet(2.0 * math.pi * pcov).flatten(1).sum(1)  # -log N(z_1; 0, P)
    terms = {"prior": prior, "flow": -y1[:, -1]}
    extra = log_scale(model.basis).to(dev) + (d * math.log(BINS / 2) if image8 else 0.0)
    terms["correction"] = extra.expand(rows)
    if bool(mask.any()):  # + log r(m0): E_r[-log p(x, m0) + log r(m0)] = E_r[-log p(x, m0)] - H(r)
        m = mask.to(dev)
        xi_m = xi.movedim(1, -1)[..., m]
        log_r = (-0.5 * xi_m.square() - 0.5 * torch.log(2.0 * math.pi * var.to(dev)[m])).flatten(1).sum(1)
        terms["momentum"] = log_r
    return {k: v.reshape(n, K) for k, v in terms.items()}, nfe


STDERR_TARGET = 0.005  # default target of the reported standard error, in the reported unit
MAX_REPEATS = 64       # default cap of the repeats per item when they are chosen adaptively


def _one_pass(model, data, reps, *, image8, method, steps, batch_size, seed, dev, rtol, atol, first_index, ref,
              progress, world):
    """Every item's terms for the repeats `reps`: ({term: (n, len(reps)) nats}, NFEs of the ODE solves).
    Under torchrun each rank runs its block of the batches, and every rank gets all items' terms in order."""
    n_items = data.shape[0]
    per = max(1, batch_size // len(reps))
    parts, nfes = {}, []
    for start, stop in distributed.batches(n_items, per, world):
        idx = torch.arange(start, stop)
        batch = data[idx].to(dev)
        x = to_unit(batch) if image8 else batch.float()
        index = (idx + first_index).to(dev)
        if method == "vlb":
            with torch.no_grad():
                terms = vlb_batch(model, x, index, image8=image8, steps=steps, repeats=reps, seed=seed, ref=ref)
        else:
            terms, nfe = ode_batch(model, x, index, image8=image8, repeats=reps, seed=seed, rtol=rtol, atol=atol)
            nfes.append(nfe)
        for k, v in terms.items():
            parts.setdefault(k, []).append(v.detach().cpu())
        if progress:
            progress(len(idx) * world.size)
    if world.size > 1:  # a rank may have had no batch: the names come from the method, not from its results
        empty = torch.zeros((0, len(reps)), dtype=torch.float64)
        parts = {k: distributed.all_gather(torch.cat(parts[k]) if k in parts else empty)
                 for k in term_names(model, method)}
        nfes = distributed.all_gather(torch.tensor(nfes, dtype=torch.float64)).tolist()
        return parts, nfes
    return {k: torch.cat(v) for k, v in parts.items()}, nfes


def term_names(model, method: str) -> tuple[str, ...]:
    """The terms vlb_batch or ode_batch return for this model, in their order."""
    if method == "vlb":
        return ("prior", "recon", "diffusion")
    return ("prior", "flow", "correction") + (("momentum",) if bool(momentum_law(model.process)[1].any()) else ())


def evaluate(model, data: torch.Tensor, *, image8: bool, method: str = "vlb", steps: int = 0,
             repeats: int | None = None, stderr: float = STDERR_TARGET, max_repeats: int = MAX_REPEATS,
             batch_size: int = 256, seed: int = 0, device="cpu", rtol: float = 1e-5, atol: float = 1e-5,
             first_index: int = 0, progress=None, world=None) -> NLLEstimate:
    """Estimate the mean NLL (bound) of the items of `data` (uint8 images or float) under `model`.

    repeats: estimates per item; None chooses them: 1, 2, 4, ... per item (the repeats of an item put their
    times on a stratified lattice at every power of two) until the standard error of the reported number is
    at most `stderr` (in the reported unit), or what is left of it is the spread of the items themselves
    (repeats cannot remove that; the estimator's share is then below a quarter of it), or `max_repeats`.
    batch_size counts network inputs (items × repeats); items keep index first_index + position, which fixes
    their random numbers. The model is used as it is (load the EMA weights before calling).
    Under torchrun (`world`), the ranks share the batches of each pass and every rank returns the estimate of
    one process.
    """
    if method not in METHODS:
        raise UdiffError(f"unknown likelihood method {method!r} (allowed: {', '.join(METHODS)})")
    n_items = data.shape[0]
    if n_items == 0:
        raise UdiffError("no items to evaluate")
    d = math.prod(model.event_shape)
    scale = 1.0 / (d * (LN2 if image8 else 1.0))
    dev = torch.device(device)
    model.prepare(dev)
    model.eval()
    was = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    parts, nfes = {}, []
    adaptive = repeats is None
    world = world or distributed.World()
    try:
        ref = reference_moments(model, data, image8) if method == "vlb" else None
        done, todo = 0, (1 if adaptive else int(repeats))
        while todo:
            new, n_new = _one_pass(model, data, range(done, done + todo), image8=image8, method=method,
                                   steps=steps, batch_size=batch_size, seed=seed, dev=dev, rtol=rtol, atol=atol,
                                   first_index=first_index, ref=ref, progress=progress if done == 0 else None,
                                   world=world)
            for k, v in new.items():
                parts[k] = torch.cat([parts[k], v], 1) if k in parts else v
            nfes += n_new
            done += todo
            todo = 0
            if adaptive and done < max_repeats and n_items > 1:
                total = sum(parts.values()) * scale  # (n, K)
                se = float(total.mean(1).std() / math.sqrt(n_items))
                within = float(total.var(1).mean()) / done / n_items if done > 1 else math.inf
                if se > stderr and within > 0.25 * se * se:
                    todo = min(done, max_repeats - done)
    finally:
        for p, r in zip(model.parameters(), was):
            p.requires_grad_(r)
    total = sum(parts.values())  # (n, K) nats
    if not bool(torch.isfinite(total).all()):
        raise NonFiniteResult(f"the {method} estimate is not finite for "
                              f"{int((~torch.isfinite(total)).any(1).sum())} items: the model's output or the "
                              "process's kernel at the schedule's ends is not finite; check the model (udiff show) "
                              "or raise gamma(t_min)")
    per_item = total.mean(1) * scale
    n = per_item.numel()
    se = float(per_item.std(unbiased=True) / math.sqrt(n)) if n > 1 else None
    terms = {k: float(v.mean() * scale) for k, v in parts.items()}
    return NLLEstimate(method=method, value=float(per_item.mean()), stderr=se,
                       terms=terms, units="bits/dim" if image8 else "nats/dim",
                       bounds=describe(model, method, image8), n=n, repeats=total.shape[1],
                       steps=(steps or None) if method == "vlb" else None,
                       nfe=(sum(nfes) / len(nfes)) if nfes else None,
                       dequantization=("uniform" if image8 else None) if method == "ode" else None,
                       per_item=per_item, stderr_target=stderr if adaptive else None,
                       diffusion_density=diffusion_density(model, parts["diffusion"], first_index, seed, scale, dev)
                       if method == "vlb" else None)


def describe(model, method: str, image8: bool) -> str:
    """One sentence: what the reported number bounds or estimates."""
    phase = model.process.k > 1
    if method == "vlb":
        what = ("-log2 P(x) of the 8-bit data (VDM's 256-way discretized decoder; no offset)" if image8
                else "-log p(x), the model's density of the data")
        out = f"upper bound on {what}"
        if phase:
            out += ("; x alone, the momentum integrated out (equal to E_m0[-log p(x, m0)] - H(m0) with "
                    "m0 ~ N(0, kappa M))")
        return out
    if image8:
        out = ("upper bound on -log2 P(x) of the 8-bit data by uniform dequantization, E_u[-log2 p(x + u)] + 7 "
               "bits/dim")
    else:
        out = "estimate of -log p(x) under the probability-flow ODE's density"
    if phase:
        out += "; bounded through the momentum: E_m0[-log p(x, m0)] - H(m0), m0 ~ N(0, kappa M)"
    return out + " (up to the ODE solver's error; Hutchinson trace estimator)"
