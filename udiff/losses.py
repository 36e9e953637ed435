"""Training losses: epsilon-prediction MSE with a weighting over noise levels (EDM-sized: small functions).

The weight multiplies (eps_hat - eps)^2 component by component, so component-wise schedules weight each
component by its own level. `vlb` is VDM's continuous-time diffusion term, 1/2 gamma'(t) per component
(VDM eq. 17; algorithms.md §1.3): with it, the loss is the diffusion part of the bound in nats per dim.
"""

from __future__ import annotations

import torch

from .schedule import NoiseLevel


def weight_uniform(lvl: NoiseLevel):
    return None  # plain epsilon-MSE (DDPM's L_simple, PSLD's "fid" weighting)


def weight_vlb(lvl: NoiseLevel):
    return 0.5 * lvl.dgamma  # continuous-time VLB weight 1/2 gamma'(t) (VDM eq. 17)


def weight_min_snr(lvl: NoiseLevel):
    snr = lvl.snr
    return snr.clamp(max=5.0) / snr  # Min-SNR-5 in epsilon form (Hang et al. 2023)


WEIGHTINGS = {"uniform": weight_uniform, "vlb": weight_vlb, "min-snr": weight_min_snr}


def stratified_times(batch: int, t_min: float, device="cpu") -> torch.Tensor:
    """Low-discrepancy times t_i = t_min + (1 - t_min)((u0 + i/B) mod 1), one u0 per batch (VDM)."""
    u0 = torch.rand((), dtype=torch.float64, device=device)
    u = torch.remainder(u0 + torch.arange(batch, dtype=torch.float64, device=device) / batch, 1.0)
    return t_min + (1.0 - t_min) * u


def diffusion_loss(model, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, weighting: str = "uniform",
                   params: dict | None = None):
    """Per-item weighted epsilon-MSE, mean over components: (B,).

    x0: (B, 1, *event) in component space; t: (B,) float64; eps: (B, k, *event) standard normal;
    params: per-item schedule parameters (schedule.draw_params), e.g. a softness per item.
    """
    lvl = model.level(t, **(params or {}))
    z = model.process.perturb(x0, eps, lvl)
    eps_hat = model.eps(z, lvl)
    target = eps[:, model.process.k - model.process.predicted:]
    err = (eps_hat.float() - target.float()).square()
    w = WEIGHTINGS[weighting](lvl)
    if w is not None:
        err = err * w.to(err.dtype)
    return err.flatten(1).mean(1)
