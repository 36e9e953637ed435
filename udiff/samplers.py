"""Samplers: plain functions over (model, initial state, time grid, noise source), time grids, and the driver.

Every sampler has the signature

    sample_<name>(model, z, ts, noise, *, callback=None, **options) -> (x0, nfe)

z: the initial state (B, k, *event) drawn from the prior; ts: float64 times from 1 down to t_end;
noise(stream, shape): per-sample normal noise (rng.NoiseSource; stream i + 1 is used at step i);
x0: the final data estimate in component space (B, 1, *event); nfe: network evaluations used.
callback(i, z, lvl) runs after step i and may return a replacement state (inpainting uses this).
They take every formula from udiff/conversions.py, so they work for every process, basis and schedule
whose traits their registry entry requires (udiff/registry.py). No hidden state, no printing, no device
choice: the caller decides. `generate` draws one sample per seed in batches; `Plan` says what to run.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace

import torch

from . import conversions as C
from .errors import NonFiniteResult, UdiffError
from .ode import dopri5
from .process import Process
from .registry import GRIDS, SAMPLERS, SSCS_SCORE_TIMES
from .rng import NoiseSource


# ------------------------------------------------------------------------------------------------
# Time grids: float64, decreasing from 1 to t_end, steps + 1 points.


@GRIDS.implements("uniform")
def grid_uniform(steps: int, t_end: float, **_) -> torch.Tensor:
    return torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64)


@GRIDS.implements("quadratic")
def grid_quadratic(steps: int, t_end: float, **_) -> torch.Tensor:
    # PSLD's quadratic striding: big steps near the prior, small ones near the data.
    k = torch.arange(steps + 1, dtype=torch.float64) / steps
    return t_end + (1.0 - t_end) * (1.0 - k) ** 2


def component_groups(schedule, t_end: float, probes: int = 65) -> torch.Tensor:
    """Indices (G,) of one representative component per group of components whose γ curves differ only by a
    constant (a scalar schedule is one group), told apart on `probes` times from t_end to 1."""
    t = torch.linspace(t_end, 1.0, probes, dtype=torch.float64)
    g = schedule.gamma(t).reshape(probes, -1)
    rel = torch.round((g - g[:1]) * 1e6)
    _, first = torch.unique(rel, dim=1, return_inverse=True)
    reps = torch.stack([torch.nonzero(first == i)[0, 0] for i in range(int(first.max()) + 1)])
    return reps


EDM_SIGMA_MAX = 80.0  # EDM's sigma_max: above it (sigma/alpha >> the data's scale) the flow is linear in tau
EDM_SIGMA_MIN = 0.002  # EDM's sigma_min: below it a step of any size is the denoiser's output


@GRIDS.implements("edm")
def grid_edm(steps: int, t_end: float, schedule=None, rho: float = 7.0, process=None, **_) -> torch.Tensor:
    """EDM's grid (Karras et al. 2022, eq. 5) in the process's own s = σ/α (e^{γ/2} for VP and VE; sub-VP's
    is Process.own_gamma of the VP clock's γ): s_i^{1/ρ} linear in i from s(1) to s(t_end).

    Where s(1) exceeds EDM's σ_max = 80 (the cosine and VP-SDE schedules reach 1800 and 150), the first step
    goes from t = 1 straight to s = 80 and the others are spaced from there: up there the probability-flow ODE
    is linear in s (du/ds = ε̂ is constant once s is far above the data's scale), so one step is exact, and
    the ρ-spacing would otherwise spend most steps on it. Likewise at the data end: where s(t_end) is below
    EDM's σ_min = 0.002 (sub-VP's s reaches 1e-6 on the VP-SDE schedule), the grid is spaced down to 0.002 and
    its last step goes from there to t_end, where every sampler's step lands on the denoiser's output.

    With a component-wise schedule, every group of components (those whose γ differ by a constant) has its
    own such grid over its own range; the grid taken is the one whose fraction of steps passed is, at every
    t, the mean of the groups' fractions, so each group gets its share of steps, spaced as EDM would space
    them for it alone. For one group this is EDM's grid exactly."""
    proc = process if process is not None else Process()  # the base class: own γ = the schedule's
    own = proc.own_gamma

    def t_of_own(g):
        return schedule.t_of_gamma(proc.schedule_gamma(g))

    reps = component_groups(schedule, t_end)
    ends = own(schedule.gamma(torch.tensor([1.0, t_end], dtype=torch.float64)).reshape(2, -1)[:, reps])
    cap = 2.0 * math.log(EDM_SIGMA_MAX)
    top = None
    scalar = not getattr(schedule, "componentwise", False)
    if steps > 1 and scalar and float(ends[0].max()) > cap > float(ends[1].max()):
        top = float(t_of_own(torch.tensor(cap, dtype=torch.float64)))
        steps, ends = steps - 1, torch.stack([torch.full_like(ends[0], cap), ends[1]])
    floor, bottom = 2.0 * math.log(EDM_SIGMA_MIN), None
    if steps > 1 and scalar and float(ends[1].max()) < floor < float(ends[0].min()):
        bottom = float(t_of_own(torch.tensor(floor, dtype=torch.float64)))
        steps, ends = steps - 1, torch.stack([ends[0], torch.full_like(ends[1], floor)])
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    r_hi, r_lo = torch.exp(ends[0] / (2 * rho)), torch.exp(ends[1] / (2 * rho))  # s^{1/ρ} at the two ends
    if reps.numel() == 1 and scalar:
        s = (r_hi + i * (r_lo - r_hi)) ** rho
        t = t_of_own(2.0 * torch.log(s)).clamp(t_end, 1.0)
    else:
        def passed(t):  # mean over groups of the fraction of each group's grid passed at times t (n,)
            g = own(schedule.gamma(t).reshape(t.shape[0], -1)[:, reps])
            u = (r_hi - torch.exp(g / (2 * rho))) / (r_hi - r_lo).clamp_min(1e-300)
            return u.clamp(0.0, 1.0).mean(1)

        lo = torch.full_like(i, t_end)
        hi = torch.ones_like(i)
        for _ in range(60):  # bisection: passed() falls from 1 at t_end to 0 at t = 1
            mid = 0.5 * (lo + hi)
            late = passed(mid) > i
            lo = torch.where(late, mid, lo)
            hi = torch.where(late, hi, mid)
        t = 0.5 * (lo + hi)
    t[0], t[-1] = (1.0 if top is None else top), (t_end if bottom is None else bottom)
    if top is not None:
        t = torch.cat([torch.ones(1, dtype=torch.float64), t])
    if bottom is not None:
        t = torch.cat([t, torch.full((1,), t_end, dtype=torch.float64)])
    return t


def make_grid(kind: str, steps: int, t_end: float, schedule, rho: float = 7.0, process=None) -> torch.Tensor:
    return GRIDS.get(kind)(steps, t_end, schedule=schedule, rho=rho, process=process)


# ------------------------------------------------------------------------------------------------
# Samplers


def _eps(model, z, lvl):
    return model.eps(z, lvl).to(z.dtype)


def _final(model, z, lvl, denoise: bool):
    """The data estimate at the last grid time: one denoising evaluation, or the state taken as is."""
    if denoise:
        return C.x0_from_eps(model.process, z, _eps(model, z, lvl), lvl), 1
    return C.x0_plain(model.process, z, lvl), 0


def _hooked(callback, i, z, lvl):
    """callback(i, z, lvl) after step i (state z at the step's end level); it may return a new state."""
    out = callback(i, z, lvl) if callback else None
    return z if out is None else out


def _levels(model, ts, device):
    return [model.level(t.reshape(1).to(device)) for t in ts]


@SAMPLERS.implements("ancestral")
def sample_ancestral(model, z, ts, noise, *, denoise=True, callback=None, **_):
    """Ancestral sampling: z_s ~ q(z_s | z_t, x0 = x̂0) at each step (VDM's sampler)."""
    lv = _levels(model, ts, z.device)
    shape = tuple(z.shape[1:])
    for i in range(len(ts) - 1):
        eps = _eps(model, z, lv[i])
        z = C.ancestral_step(model.process, z, eps, lv[i], lv[i + 1], noise(i + 1, shape).to(z))
        z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, len(ts) - 1 + extra


@SAMPLERS.implements("em")
def sample_em(model, z, ts, noise, *, denoise=True, callback=None, **_):
    """Euler–Maruyama on the reverse-time SDE dz = (f − g g^T s) dt + g dw (t decreasing)."""
    proc = model.process
    lv = _levels(model, ts, z.device)
    shape = tuple(z.shape[1:])
    for i in range(len(ts) - 1):
        dt = float(ts[i + 1] - ts[i])  # negative
        drift = C.reverse_drift(proc, z, _eps(model, z, lv[i]), lv[i])
        z = z + drift * dt + C.diffuse(proc, noise(i + 1, shape).to(z), lv[i], -dt)
        z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, len(ts) - 1 + extra


@SAMPLERS.implements("ddim")
def sample_ddim(model, z, ts, noise, *, eta=0.0, denoise=True, callback=None, **_):
    """DDIM (Song et al. 2021): deterministic for eta = 0, ancestral for eta = 1."""
    lv = _levels(model, ts, z.device)
    shape = tuple(z.shape[1:])
    for i in range(len(ts) - 1):
        xi = noise(i + 1, shape).to(z) if eta > 0 else None
        z = C.ddim_step(model.process, z, _eps(model, z, lv[i]), lv[i], lv[i + 1], xi, eta=eta)
        z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, len(ts) - 1 + extra


def _heun_step(model, z, lvl_a, lvl_b):
    """One Heun step of the probability-flow ODE from level a to level b in the coordinates of conversions.ode_*:
    an Euler step and its trapezoidal correction (EDM's Algorithm 1). Two network evaluations."""
    proc = model.process
    tau_a, tau_b = C.ode_time(proc, lvl_a).to(z.dtype), C.ode_time(proc, lvl_b).to(z.dtype)
    u = C.ode_coords(proc, z, lvl_a)
    d = C.ode_slope(proc, z, _eps(model, z, lvl_a), lvl_a)
    h = tau_b - tau_a
    z_next = C.ode_state(proc, u + h * d, lvl_b)
    d2 = C.ode_slope(proc, z_next, _eps(model, z_next, lvl_b), lvl_b)
    return C.ode_state(proc, u + 0.5 * h * (d + d2), lvl_b)


@SAMPLERS.implements("heun")
def sample_heun(model, z, ts, noise, *, denoise=True, callback=None, **_):
    """Heun's second-order method on the probability-flow ODE (EDM's Algorithm 1)."""
    lv = _levels(model, ts, z.device)
    for i in range(len(ts) - 1):
        z = _heun_step(model, z, lv[i], lv[i + 1])
        z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, 2 * (len(ts) - 1) + extra


def _mean_tau(model, t: torch.Tensor) -> torch.Tensor:
    """The mean over components of τ (conversions.ode_time) at times t (n,)."""
    lvl = model.level(t)
    tau = C.ode_time(model.process, lvl)
    return tau.reshape(tau.shape[0], -1).mean(1)


def _time_of_tau(model, target: float, t_lo: float) -> float:
    """The time in [t_lo, 1] at which the mean τ reaches `target` (bisection; τ increases with t)."""
    lo, hi = t_lo, 1.0
    if float(_mean_tau(model, torch.tensor([hi], dtype=torch.float64))) <= target:
        return hi
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if float(_mean_tau(model, torch.tensor([mid], dtype=torch.float64))) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@SAMPLERS.implements("edm")
def sample_edm(model, z, ts, noise, *, s_churn=0.0, s_tmin=0.0, s_tmax=None, s_noise=1.0, denoise=True,
               callback=None, **_):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): before step i, where S_tmin <= τ_i <= S_tmax,
    raise the noise level to τ̂ = (1 + γ_i) τ_i, γ_i = min(S_churn/N, √2 − 1), by running the forward process
    from t_i to t̂_i with noise scaled by S_noise (for k = 1 exactly EDM's u + √(τ̂² − τ²) S_noise ε; for every
    process its own forward kernel), then take a Heun step from t̂_i to t_{i+1}. S_churn = 0 is `heun`."""
    lv = _levels(model, ts, z.device)
    n = len(ts) - 1
    churn = min(float(s_churn) / n, math.sqrt(2.0) - 1.0) if n else 0.0
    shape = tuple(z.shape[1:])
    for i in range(n):
        start = lv[i]
        tau = float(_mean_tau(model, ts[i:i + 1].to(z.device)))
        if churn > 0 and s_tmin <= tau <= (math.inf if s_tmax is None else s_tmax):
            t_hat = _time_of_tau(model, (1.0 + churn) * tau, float(ts[i]))
            lvl_hat = model.level(torch.tensor([t_hat], dtype=torch.float64, device=z.device))
            xi = noise(i + 1, shape).to(z) * float(s_noise)
            z = C.forward_step(model.process, z, start, lvl_hat, xi)
            start = lvl_hat
        z = _heun_step(model, z, start, lv[i + 1])
        z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, 2 * n + extra


def _dpmpp(model, z, ts, noise, *, sde: bool, denoise=True, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022) in the VE form u = z/h, τ = √Σ/h of a k = 1 process, in λ = −ln τ
    (half the log-SNR), with h_i = λ_{i+1} − λ_i and the data prediction x̂0:

        ODE: u' = (τ'/τ) u − expm1(−h) D                                  (Lu et al. 2022, eq. 10 and Alg. 2)
        SDE: u' = (τ'/τ) e^{−h} u − expm1(−2h) D + τ' √(−expm1(−2h)) ξ     (their SDE solver, eq. 18)

    D = x̂0 + (h_i / 2h_{i−1})(x̂0 − x̂0_prev) for the ODE, and the SDE's second-order term adds
    −expm1(−2h)/2 · (h_i/h_{i−1})(x̂0 − x̂0_prev) (the midpoint rule). The first and the last step are first
    order: the last one, from s = 0.002 (or the grid's end) to t_end, would otherwise extrapolate x̂0 linearly
    in λ over a long step where it has levelled off. Component-wise schedules work per component (a frozen
    component has h = 0 and does not move)."""
    proc = model.process
    lv = _levels(model, ts, z.device)
    shape = tuple(z.shape[1:])
    taus = [C.ode_time(proc, lvl).to(z.dtype) for lvl in lv]
    x_prev, h_prev = None, None
    for i in range(len(ts) - 1):
        x0 = C.x0_from_eps(proc, z, _eps(model, z, lv[i]), lv[i])
        u = C.ode_coords(proc, z, lv[i])
        h = torch.log(taus[i] / taus[i + 1])
        if x_prev is None or i == len(ts) - 2:  # first and last steps first order (as EDM's last step)
            slope = torch.zeros_like(h)
        else:
            slope = torch.where(h_prev > 0, h / torch.where(h_prev > 0, h_prev, 1.0), 0.0)  # 1/r
        diff = x0 - x_prev if x_prev is not None else torch.zeros_like(x0)
        ratio = taus[i + 1] / taus[i]
        if sde:
            a = -torch.expm1(-2.0 * h)
            u = ratio * torch.exp(-h) * u + a * x0 + 0.5 * a * slope * diff
            u = u + taus[i + 1] * a.sqrt() * noise(i + 1, shape).to(z)
        else:
            u = ratio * u - torch.expm1(-h) * (x0 + 0.5 * slope * diff)
        z = C.ode_state(proc, u, lv[i + 1])
        x_prev, h_prev = x0, h
        z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, len(ts) - 1 + extra


@SAMPLERS.implements("dpmpp-2m")
def sample_dpmpp_2m(model, z, ts, noise, *, denoise=True, callback=None, **_):
    """DPM-Solver++(2M): deterministic, second order, one network evaluation per step (see `_dpmpp`)."""
    return _dpmpp(model, z, ts, noise, sde=False, denoise=denoise, callback=callback)


@SAMPLERS.implements("dpmpp-2m-sde")
def sample_dpmpp_2m_sde(model, z, ts, noise, *, denoise=True, callback=None, **_):
    """DPM-Solver++(2M) SDE: the reverse SDE's exact linear part, second-order data term (see `_dpmpp`)."""
    return _dpmpp(model, z, ts, noise, sde=True, denoise=denoise, callback=callback)


@SAMPLERS.implements("sscs")
def sample_sscs(model, z, ts, noise, *, denoise=True, callback=None, sscs_score_time="start", **_):
    """Symmetric splitting (CLD's SSCS, generalized by PSLD §2.6): per step, half a step of the linear part
    solved exactly, one Euler step of the score part, another exact half step; one network evaluation.

    The score is evaluated at the state after the first half step, at the step's start time ("start", as
    the CLD and PSLD code do) or at its midpoint ("midpoint"). Both are first order in the step (docs/
    samplers.md has the measurements that chose the default)."""
    proc = model.process
    if sscs_score_time not in SSCS_SCORE_TIMES:
        raise UdiffError(f"[sample] sscs_score_time: {sscs_score_time!r} (allowed: {', '.join(SSCS_SCORE_TIMES)})")
    lv = _levels(model, ts, z.device)
    mid = _levels(model, 0.5 * (ts[:-1] + ts[1:]), z.device)
    shape = tuple(z.shape[1:])
    for i in range(len(ts) - 1):
        at = lv[i] if sscs_score_time == "start" else mid[i]
        z = proc.split_linear(z, lv[i], mid[i], noise(2 * i + 1, shape).to(z))
        score = C.score_from_eps(proc, _eps(model, z, at), at).to(z.dtype)
        z = proc.split_score(z, score, lv[i], lv[i + 1])
        z = proc.split_linear(z, mid[i], lv[i + 1], noise(2 * i + 2, shape).to(z))
        z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, len(ts) - 1 + extra


@SAMPLERS.implements("rk45")
def sample_rk45(model, z, ts, noise, *, rtol=1e-5, atol=1e-5, denoise=True, callback=None, **_):
    """The probability-flow ODE from ts[0] to ts[-1] with adaptive Dormand–Prince 5(4) (ode.dopri5, tolerances
    rtol/atol); nfe = the solver's evaluations (+ 1 for the final denoising step). The grid's inner points are
    not used: the solver picks its own steps."""
    if callback:
        raise UdiffError("sampler 'rk45' takes its own steps, so it cannot replace known pixels at each step; "
                         "use heun, em or ancestral for inpainting")
    proc = model.process

    def f(t, y):
        lvl = model.level(torch.tensor([t], dtype=torch.float64, device=y.device))
        return C.reverse_drift(proc, y, _eps(model, y, lvl), lvl, pf_ode=True)

    z, nfe = dopri5(f, z, float(ts[0]), float(ts[-1]), rtol=rtol, atol=atol)
    x0, extra = _final(model, z, model.level(ts[-1:].to(z.device)), denoise)
    return x0, nfe + extra


# ------------------------------------------------------------------------------------------------
# Defaults, measured (docs/samplers.md): the registry holds each sampler's steps and grid.


def default_sampler(process, schedule) -> str:
    """The sampler a model uses when its recipe names none: DPM-Solver++(2M) for the reverse SDE for k = 1
    (65 network evaluations, within 5% of the Gaussian oracle on every schedule, and on trained Fashion-MNIST
    networks the lowest classifier FD at that cost: fresh noise lets later steps correct the network's errors,
    which an ODE sampler carries into the sample; docs/samplers.md), SSCS for phase-space processes."""
    return "sscs" if process.k == 2 else "dpmpp-2m-sde"


def defaults(sampler: str, process, schedule) -> tuple[int, str]:
    """(steps, grid) a sampler takes when neither is given."""
    info = SAMPLERS.entry(sampler).info
    return info["steps"], info["grid"]


@dataclass(frozen=True)
class Plan:
    """What a sampling run does: sampler and its settings ([sample] of a recipe); None = the default."""

    sampler: str | None = None
    steps: int | None = None
    grid: str | None = None
    rho: float = 7.0
    eta: float = 0.0
    t_end: float | None = None
    denoise: bool = True
    rtol: float = 1e-5
    atol: float = 1e-5
    sscs_score_time: str = "start"
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float | None = None
    s_noise: float = 1.0

    @classmethod
    def from_spec(cls, spec) -> "Plan":
        """A Plan from a recipe's [sample] section (recipe.SampleSpec)."""
        names = cls.__dataclass_fields__
        return cls(**{k: getattr(spec, k) for k in names if hasattr(spec, k)})

    def resolve(self, model) -> "Plan":
        """Fill in the defaults for this model and check that its process can take the sampler."""
        proc = model.process
        sampler = self.sampler or default_sampler(proc, model.schedule)
        SAMPLERS.check(sampler, proc.traits, f"process {proc.name!r}")
        d_steps, d_grid = defaults(sampler, proc, model.schedule)
        t_min = float(model.schedule.t_min)
        t_end = t_min if self.t_end is None else max(float(self.t_end), t_min)
        return replace(self, sampler=sampler, steps=self.steps or d_steps, grid=self.grid or d_grid, t_end=t_end)

    def grid_times(self, model) -> torch.Tensor:
        return make_grid(self.grid, self.steps, self.t_end, model.schedule, self.rho, model.process)

    def options(self) -> dict:
        return {"eta": self.eta, "denoise": self.denoise, "rtol": self.rtol, "atol": self.atol,
                "sscs_score_time": self.sscs_score_time, "s_churn": self.s_churn, "s_tmin": self.s_tmin,
                "s_tmax": self.s_tmax, "s_noise": self.s_noise}

    def described(self, nfe) -> dict:
        """What was run, for the artifact's metadata and the --json line."""
        adaptive = SAMPLERS.entry(self.sampler).info.get("adaptive", False)
        out = {"sampler": self.sampler, "steps": "adaptive" if adaptive else self.steps,
               "grid": None if adaptive else self.grid, "t_end": self.t_end, "nfe": nfe}
        if self.sampler == "sscs":
            out["sscs_score_time"] = self.sscs_score_time
        if self.sampler == "edm":
            out.update(s_churn=self.s_churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise)
        return out


def check_finite(x: torch.Tensor, what: str) -> None:
    """Stop with one line (exit 1) when a result holds NaN or Inf: nothing non-finite is ever written."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n = int(bad.reshape(bad.shape[0], -1).any(1).sum()) if x.ndim > 1 else int(bad.sum())
        raise NonFiniteResult(f"{what}: {n} of {x.shape[0]} results are not finite (NaN or Inf); the network's "
                              "output or the sampler diverged: try more steps, another sampler or time grid, or "
                              "check the model (udiff show)")


def in_batches(seeds, batch_size: int, device, body, progress=None, world=None, event_shape=None):
    """Run body(batch_seeds, start, noise) -> (x (b, *event), nfe) per batch of seeds, each with its own
    per-sample noise source; concatenate on the CPU. Returns (x, nfe of the last batch).

    Under torchrun (`world` of several ranks) each rank runs its block of the one-process batches
    (distributed.batches) and rank 0 gathers them in order: it returns the whole x, the other ranks None
    (`event_shape` is then needed, for a rank with no batch). `progress` counts every rank's items."""
    from . import distributed

    world = world or distributed.World()
    seeds = list(seeds)
    out, nfe = [], 0
    with torch.inference_mode():
        for start, stop in distributed.batches(len(seeds), batch_size, world):
            batch = seeds[start:stop]
            x, nfe = body(batch, start, NoiseSource(batch, device=device))
            out.append(x.float().cpu())
            if progress:
                progress(len(batch) * world.size)
    if world.size > 1:
        mine = torch.cat(out) if out else torch.zeros((0,) + tuple(event_shape))
        return distributed.gather(mine), nfe
    return (torch.cat(out) if out else None), nfe


def generate(model, seeds, plan: Plan | None = None, *, batch_size=256, device="cpu", autocast=None,
             progress=None, world=None, cond=None):
    """Draw one sample per seed (sample k from seed k) in data space, float32 (N, *event).

    Returns (x, used): `used` says what was run (plan.described). Batches never change the result: every
    random number of sample k comes from seed k. A non-finite sample stops the run (NonFiniteResult).
    Under torchrun (`world`), the ranks share the batches and rank 0 returns all samples in order; the other
    ranks return x = None. `cond`: a guidance.Conditioning with one label per seed (class-conditional sampling
    and guidance).
    """
    if cond is not None:
        cond.check(model)
    plan = (plan or Plan()).resolve(model)
    ts = plan.grid_times(model)
    fn = SAMPLERS.get(plan.sampler)
    shape = (model.process.k,) + model.event_shape
    lvl1 = model.level(torch.ones(1, dtype=torch.float64, device=device))

    def body(batch, start, noise):
        z = C.prior_sample(model.process, noise(0, shape).double(), lvl1)
        run = model if cond is None else cond.bind(model, start, len(batch))
        with autocast or contextlib.nullcontext():
            x0, nfe = fn(run, z, ts, noise, **plan.options())
        return model.decode(x0.float()), nfe

    x, nfe = in_batches(seeds, batch_size, device, body, progress, world, model.event_shape)
    if world is not None and not world.main:
        return None, plan.described(nfe)
    if x is None:
        x = torch.zeros((0,) + model.event_shape)
    check_finite(x, f"udiff sample ({plan.sampler}, {plan.steps} steps)")
    return x, {**plan.described(nfe), **(cond.described() if cond is not None else {})}
