"""Samplers: plain functions over (model, initial state, time grid, noise source), and time grids.

Every sampler has the signature

    sample_<name>(model, z, ts, noise, *, callback=None, **options) -> (x0, nfe)

z: the initial state (B, k, *event) drawn from the prior; ts: float64 times from 1 down to t_end;
noise(stream, shape): per-sample normal noise (rng.NoiseSource; stream i + 1 is used at step i);
x0: the final data estimate in component space (B, 1, *event); nfe: network evaluations used.
callback(i, z, lvl) runs after step i and may return a replacement state (inpainting uses this).
They ask the process for every formula, so they work for every process, basis and schedule that
supports the step they take. No hidden state, no printing, no device choice: the caller decides.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import UdiffError
from .ode import dopri5
from .rng import NoiseSource

SAMPLERS = {}
DEFAULTS = {}  # sampler → (steps, grid)
ADAPTIVE = {"rk45"}  # samplers that choose their own steps ([sample] steps and grid do not apply)


def register(name: str, steps: int, grid: str):
    def deco(fn):
        SAMPLERS[name] = fn
        DEFAULTS[name] = (steps, grid)
        return fn
    return deco


# ------------------------------------------------------------------------------------------------
# Time grids: float64, decreasing from 1 to t_end, steps + 1 points.


def grid_uniform(steps: int, t_end: float, **_) -> torch.Tensor:
    return torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64)


def grid_quadratic(steps: int, t_end: float, **_) -> torch.Tensor:
    # PSLD's quadratic striding: big steps near the prior, small ones near the data.
    k = torch.arange(steps + 1, dtype=torch.float64) / steps
    return t_end + (1.0 - t_end) * (1.0 - k) ** 2


def grid_edm(steps: int, t_end: float, schedule=None, rho: float = 7.0, **_) -> torch.Tensor:
    # EDM's grid in sigma/alpha = exp(gamma / 2): (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho
    g = schedule.gamma(torch.tensor([1.0, t_end], dtype=torch.float64)).reshape(2, -1).mean(1)
    s_max, s_min = torch.exp(0.5 * g[0]), torch.exp(0.5 * g[1])
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    s = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    t = schedule.t_of_gamma(2.0 * torch.log(s)).clamp(t_end, 1.0)
    t[0], t[-1] = 1.0, t_end
    return t


GRIDS = {"uniform": grid_uniform, "quadratic": grid_quadratic, "edm": grid_edm}


def make_grid(kind: str, steps: int, t_end: float, schedule, rho: float = 7.0) -> torch.Tensor:
    return GRIDS[kind](steps, t_end, schedule=schedule, rho=rho)


# ------------------------------------------------------------------------------------------------
# Samplers


def _final(model, z, lvl, denoise: bool):
    """The data estimate at the last grid time: one denoising evaluation, or the state taken as is."""
    if denoise:
        return model.process.x0_from_eps(z, _eps(model, z, lvl), lvl), 1
    return model.process.x0_plain(z, lvl), 0


def _hooked(callback, i, z, lvl):
    """callback(i, z, lvl) after step i (state z at the step's end level); it may return a new state."""
    out = callback(i, z, lvl)
    return z if out is None else out


def _eps(model, z, lvl):
    return model.eps(z, lvl).to(z.dtype)


def _levels(model, ts, device):
    return [model.level(t.reshape(1).to(device)) for t in ts]


@register("ancestral", steps=256, grid="uniform")
def sample_ancestral(model, z, ts, noise, *, denoise=True, callback=None, **_):
    """Ancestral sampling: z_s ~ q(z_s | z_t, x0 = x0_hat) at each step (VDM's sampler)."""
    lv = _levels(model, ts, z.device)
    shape = tuple(z.shape[1:])
    for i in range(len(ts) - 1):
        eps = _eps(model, z, lv[i])
        z = model.process.ancestral_step(z, eps, lv[i], lv[i + 1], noise(i + 1, shape).to(z))
        if callback:
            z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, len(ts) - 1 + extra


@register("em", steps=256, grid="uniform")
def sample_em(model, z, ts, noise, *, denoise=True, callback=None, **_):
    """Euler-Maruyama on the reverse-time SDE dz = (f - g^2 s) dt + g dw (t decreasing)."""
    lv = _levels(model, ts, z.device)
    shape = tuple(z.shape[1:])
    for i in range(len(ts) - 1):
        dt = float(ts[i + 1] - ts[i])  # negative
        eps = _eps(model, z, lv[i])
        drift = model.process.reverse_drift(z, eps, lv[i])
        z = z + drift * dt + model.process.diffuse(noise(i + 1, shape).to(z), lv[i], -dt)
        if callback:
            z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, len(ts) - 1 + extra


@register("ddim", steps=50, grid="edm")
def sample_ddim(model, z, ts, noise, *, eta=0.0, denoise=True, callback=None, **_):
    """DDIM (Song et al. 2021): deterministic for eta = 0, ancestral for eta = 1."""
    lv = _levels(model, ts, z.device)
    shape = tuple(z.shape[1:])
    for i in range(len(ts) - 1):
        eps = _eps(model, z, lv[i])
        xi = noise(i + 1, shape).to(z) if eta > 0 else None
        z = model.process.ddim_step(z, eps, lv[i], lv[i + 1], xi, eta=eta)
        if callback:
            z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, len(ts) - 1 + extra


@register("heun", steps=32, grid="edm")
def sample_heun(model, z, ts, noise, *, denoise=True, callback=None, **_):
    """Heun's 2nd-order method on the probability-flow ODE, in the process's ODE coordinates (EDM Alg. 1)."""
    proc = model.process
    lv = _levels(model, ts, z.device)
    tau = [proc.ode_time(lvl).to(z.dtype) for lvl in lv]
    nfe = 0
    for i in range(len(ts) - 1):
        u = proc.ode_coords(z, lv[i])
        d = proc.ode_slope(z, _eps(model, z, lv[i]), lv[i])
        h = tau[i + 1] - tau[i]
        z_next = proc.ode_state(u + h * d, lv[i + 1])
        d2 = proc.ode_slope(z_next, _eps(model, z_next, lv[i + 1]), lv[i + 1])
        z = proc.ode_state(u + 0.5 * h * (d + d2), lv[i + 1])
        nfe += 2
        if callback:
            z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, nfe + extra


@register("sscs", steps=100, grid="quadratic")
def sample_sscs(model, z, ts, noise, *, denoise=True, callback=None, **_):
    """Symmetric splitting (CLD's SSCS, generalized by PSLD §2.6): per step, half a step of the linear OU part
    solved exactly, one Euler step of the score part, another exact half step; one network evaluation.

    The score is evaluated at the state after the first half step and the time halfway through the step
    (the symmetric, second-order choice). Needs a process with `sscs_linear` (psld, cld, recipe).
    """
    proc = model.process
    if not hasattr(proc, "sscs_linear"):
        raise UdiffError(f"sampler 'sscs' needs a phase-space process ([process] kind = \"psld\", \"cld\" or "
                         f"\"recipe\"), not {type(proc).__name__}; use em, heun or rk45")
    lv = _levels(model, ts, z.device)
    mid = _levels(model, 0.5 * (ts[:-1] + ts[1:]), z.device)
    shape = tuple(z.shape[1:])
    for i in range(len(ts) - 1):
        z = proc.sscs_linear(z, lv[i], mid[i], noise(2 * i + 1, shape).to(z))
        z = proc.sscs_score(z, _eps(model, z, mid[i]), mid[i], lv[i], lv[i + 1])
        z = proc.sscs_linear(z, mid[i], lv[i + 1], noise(2 * i + 2, shape).to(z))
        if callback:
            z = _hooked(callback, i, z, lv[i + 1])
    x0, extra = _final(model, z, lv[-1], denoise)
    return x0, len(ts) - 1 + extra


@register("rk45", steps=1, grid="uniform")
def sample_rk45(model, z, ts, noise, *, rtol=1e-5, atol=1e-5, denoise=True, callback=None, **_):
    """The probability-flow ODE dz/dt = f - g^2 s / 2 from ts[0] to ts[-1] with adaptive Dormand-Prince 5(4)
    (ode.dopri5, tolerances rtol/atol); nfe = the solver's evaluations (+ 1 for the final denoising step).
    The grid's inner points are not used: the solver picks its own steps."""
    if callback:
        raise UdiffError("sampler 'rk45' takes its own steps, so it cannot replace known pixels at each step; "
                         "use heun, em or ancestral for inpainting")
    proc = model.process

    def f(t, y):
        lvl = model.level(torch.tensor([t], dtype=torch.float64, device=y.device))
        return proc.reverse_drift(y, _eps(model, y, lvl), lvl, pf_ode=True)

    z, nfe = dopri5(f, z, float(ts[0]), float(ts[-1]), rtol=rtol, atol=atol)
    x0, extra = _final(model, z, model.level(ts[-1:].to(z.device)), denoise)
    return x0, nfe + extra


def generate(model, seeds, *, sampler: str, steps=None, grid=None, rho=7.0, eta=0.0, t_end=None,
             denoise=True, rtol=1e-5, atol=1e-5, batch_size=256, device="cpu", autocast=None, progress=None):
    """Draw one sample per seed (sample k from seed k) in data space, float32 (N, *event).

    Returns (x, used) with used = {"steps", "grid", "t_end", "nfe"}: what was actually run.

    Batches never change the result: every random number of sample k comes from seed k.
    """
    if sampler not in SAMPLERS:
        raise UdiffError(f"unknown sampler {sampler!r} (allowed: {', '.join(sorted(SAMPLERS))})")
    d_steps, d_grid = DEFAULTS[sampler]
    steps, grid = steps or d_steps, grid or d_grid
    t_end = model.schedule.t_min if t_end is None else max(float(t_end), model.schedule.t_min)
    ts = make_grid(grid, steps, t_end, model.schedule, rho)
    fn = SAMPLERS[sampler]
    shape = (model.process.k,) + model.event_shape
    out, nfe = [], 0
    seeds = list(seeds)
    for start in range(0, len(seeds), batch_size):
        batch = seeds[start:start + batch_size]
        noise = NoiseSource(batch, device=device)
        z = model.process.prior_sample(noise(0, shape).double())
        with torch.no_grad(), (autocast or contextlib.nullcontext()):
            x0, nfe = fn(model, z, ts, noise, eta=eta, denoise=denoise, rtol=rtol, atol=atol)
        out.append(model.decode(x0.float()).cpu())
        if progress:
            progress(len(batch))
    x = torch.cat(out) if out else torch.zeros((0,) + model.event_shape)
    if sampler in ADAPTIVE:  # the solver chose its own steps: only the NFE says what was run
        steps, grid = "adaptive", None
    return x, {"steps": steps, "grid": grid, "t_end": t_end, "nfe": nfe}
