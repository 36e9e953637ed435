"""Training losses: epsilon-prediction MSE with a weighting over noise levels (EDM-sized: small functions).

The weight multiplies (eps_hat - eps)^2 component by component, so component-wise schedules weight each
component by its own level. `vlb` is VDM's continuous-time diffusion term, 1/2 gamma'(t) per component
(VDM eq. 17; docs/likelihood.md): with it, the loss is the diffusion part of the bound in nats per dim.
"""

from __future__ import annotations

import torch

from . import conversions as C
from .registry import TIMES, WEIGHTINGS
from .rng import lattice
from .schedule import NoiseLevel


@WEIGHTINGS.implements("uniform")
def weight_uniform(model, lvl: NoiseLevel):
    return None  # plain epsilon-MSE (DDPM's L_simple, PSLD's "fid" weighting)


@WEIGHTINGS.implements("vlb")
def weight_vlb(model, lvl: NoiseLevel):
    return 0.5 * lvl.dgamma  # continuous-time VLB weight 1/2 gamma'(t) (VDM eq. 17)


@WEIGHTINGS.implements("min-snr")
def weight_min_snr(model, lvl: NoiseLevel):
    snr = C.precision(model.process, lvl).unsqueeze(1)  # the precision of x0 in z: SNR for VP
    return snr.clamp(max=5.0) / snr  # Min-SNR-5 in epsilon form (Hang et al. 2023)


@WEIGHTINGS.implements("edm")
def weight_edm(model, lvl: NoiseLevel):
    # EDM's lambda(sigma) = (sigma^2 + sigma_d^2)/(sigma sigma_d)^2 on |D - x0|^2 = sigma^2 |eps_hat - eps|^2
    # (Karras et al. 2022, eq. 8 and Table 1), sigma = sqrt(Sigma)/h, the VE form of the k = 1 process
    sd = getattr(getattr(model, "precond", None), "sigma_data", None) or 0.5
    return (C.ode_time(model.process, lvl).square() + sd * sd) / (sd * sd)


@TIMES.implements("stratified")
def times_stratified(model, batch: int, device, spec=None) -> torch.Tensor:
    """Low-discrepancy times t_i = t_min + (1 - t_min)((u0 + i/B) mod 1), one u0 per batch (VDM)."""
    return stratified_times(batch, model.schedule.t_min, device)


@TIMES.implements("log-normal")
def times_log_normal(model, batch: int, device, spec) -> torch.Tensor:
    """EDM's training noise levels: ln sigma ~ N(p_mean, p_std^2) with sigma = e^(gamma/2), truncated to the
    schedule's gamma range, by the inverse CDF of low-discrepancy uniforms; t = gamma^-1."""
    f64 = {"dtype": torch.float64, "device": device}  # drawn on the device: no host-to-device copy in the step
    normal = torch.distributions.Normal(torch.tensor(float(spec.p_mean), **f64), torch.tensor(float(spec.p_std), **f64))
    lo, hi = (normal.cdf(torch.tensor(0.5 * g, **f64)) for g in model.schedule.gamma_range)
    u = lo + (hi - lo) * lattice(torch.rand((), **f64), batch)
    gamma = 2.0 * normal.icdf(u.clamp(1e-12, 1 - 1e-12))
    return model.schedule.t_of_gamma(gamma).clamp(model.schedule.t_min, 1.0)


def stratified_times(batch: int, t_min: float, device="cpu") -> torch.Tensor:
    """Low-discrepancy times t_i = t_min + (1 - t_min)((u0 + i/B) mod 1), one u0 per batch (VDM)."""
    u = lattice(torch.rand((), dtype=torch.float64, device=device), batch)
    return t_min + (1.0 - t_min) * u


def diffusion_loss(model, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, weighting: str = "uniform",
                   params: dict | None = None):
    """Per-item weighted epsilon-MSE, mean over components: (B,).

    x0: (B, 1, *event) in component space; t: (B,) float64; eps: (B, k, *event) standard normal;
    params: per-item schedule parameters (schedule.draw_params), e.g. a softness per item.
    """
    lvl = model.level(t, **(params or {}))
    z = C.perturb(model.process, x0, eps, lvl)
    eps_hat = model.eps(z, lvl)
    target = eps[:, model.process.k - model.process.predicted:]
    err = (eps_hat.float() - target.float()).square()
    w = WEIGHTINGS.get(weighting)(model, lvl)
    if w is not None:
        err = err * w.to(err.dtype)
    return err.flatten(1).mean(1)
