"""What every sampler, loss and likelihood needs from a process, written once over any kernel.

State layout: z (B, k, *event), k numbers per component; data enter as x0 (B, 1, *event) in component space;
the network predicts ε of the last `process.predicted` slots. With h = Φ e₁ (z's mean per unit x0) and L the
lower Cholesky factor of Σ (process.cov), the kernel is z = h x0 + L ε (docs/processes.md):

    perturb, eps_from_x0, x0_from_eps, score_from_eps     the conversions ε ↔ x0 ↔ score (eps_shift: a score change)
    observation                                            z as a linear observation of x0 (w = hᵀΣ⁻¹h)
    reverse_drift, diffuse                                 the reverse SDE / probability-flow ODE per unit t
    posterior, ancestral_step, forward_step, ddim_step     Gaussian steps between two levels
    ode_time, ode_coords, ode_state, ode_slope             the PF-ODE in coordinates where it is nearly linear
    prior_sample, x0_plain

Level tensors are float64; results take the dtype of the state they act on.
"""

from __future__ import annotations

import torch

from . import blocks
from .blocks import apply, chol, matvec, tril_solve, triu_solve_t, unvec, vec


def mean_and_factor(proc, lvl):
    """h (..., k): z's mean per unit x0, and L (..., k, k): the lower Cholesky factor of Σ."""
    return proc.mean_map(lvl)[..., :, 0], chol(proc.cov(lvl))


def perturb(proc, x0, eps, lvl):
    """A draw of q(z_t | x0) = N(h x0, Σ) from standard normal eps (B, k, *event)."""
    h, L = mean_and_factor(proc, lvl)
    return unvec(h.to(eps.dtype) * vec(x0).to(eps.dtype)) + apply(L, eps)


def eps_from_x0(proc, z, x0, lvl):
    """ε of every slot, L⁻¹ (z − h x0)."""
    h, L = mean_and_factor(proc, lvl)
    return unvec(tril_solve(L, vec(z).double() - h * vec(x0).double())).to(z.dtype)


def x0_from_eps(proc, z, eps, lvl):
    """E[x0 | z_t] from the predicted ε: from the position slot, or (ε of the momentum only) from both."""
    h, L = mean_and_factor(proc, lvl)
    zz, e = z.double(), eps.double()
    if eps.shape[1] == proc.k:  # z_x = h_x x0 + l11 ε_x
        x0 = (zz[:, 0] - L[..., 0, 0] * e[:, 0]) / h[..., 0]
    else:  # eliminate ε_x from z_x = h_x x0 + l11 ε_x and z_m = h_m x0 + l21 ε_x + l22 ε_m
        l11, l21, l22 = L[..., 0, 0], L[..., 1, 0], L[..., 1, 1]
        x0 = (l21 * zz[:, 0] - l11 * (zz[:, 1] - l22 * e[:, 0])) / (l21 * h[..., 0] - l11 * h[..., 1])
    return x0.unsqueeze(1).to(z.dtype)


def score_from_eps(proc, eps, lvl):
    """∇ log q(z_t | x0) = −L⁻ᵀ ε (PSLD §2.4). With ε of the momentum only, the position entry is returned as
    0: it is unknown, and such a process has no noise on the position, so no drift uses it."""
    _, L = mean_and_factor(proc, lvl)
    if eps.shape[1] == proc.k:
        return unvec(-triu_solve_t(L, vec(eps).double())).to(eps.dtype)
    s_m = -eps[:, 0].double() / L[..., 1, 1]
    return torch.stack([torch.zeros_like(s_m), s_m], 1).to(eps.dtype)


def eps_shift(proc, ds, lvl):
    """The change of the predicted slots' ε that adds ds (B, k, *event) to the score: ε = −Lᵀ s is the inverse of
    score_from_eps, so s + ds is ε − Lᵀ ds (classifier guidance; docs/guidance.md). For a network of the
    momentum's ε only, (Lᵀ ds)_m = l22 ds_m: the position's entry of the score is not used."""
    _, L = mean_and_factor(proc, lvl)
    shift = unvec(matvec(L.mT.to(ds.dtype), vec(ds)))
    return shift[:, proc.k - proc.predicted:]


def observation(proc, z, lvl):
    """z as a linear Gaussian observation of x0, per component: w = hᵀΣ⁻¹h = |L⁻¹h|² (the precision of x0 in z;
    SNR for VP) and y = hᵀΣ⁻¹z, so y ~ N(w x0, w)."""
    h, L = mean_and_factor(proc, lvl)
    v = tril_solve(L, h)
    u = tril_solve(L, vec(z).double())
    return (v * v).sum(-1).to(z.dtype), (v * u).sum(-1).to(z.dtype)


def precision(proc, lvl) -> torch.Tensor:
    """w = hᵀΣ⁻¹h per component (Bt, *e), float64: the SNR of a VP process."""
    h, L = mean_and_factor(proc, lvl)
    v = tril_solve(L, h)
    return (v * v).sum(-1)


def _per_t(lvl) -> torch.Tensor:
    """γ'(t) as (Bt, *e, 1, 1): per-unit-γ blocks times this are per unit t."""
    return lvl.dgamma[:, 0][..., None, None]


def reverse_drift(proc, z, eps_hat, lvl, pf_ode: bool = False):
    """dz/dt of the reverse-time SDE, γ'(F z − GG s), or of the probability-flow ODE, γ'(F z − GG s/2)
    (Song et al. 2021; PSLD eq. 11), s = score_from_eps(eps_hat)."""
    Fg, GG = proc.sde(lvl)
    rate = _per_t(lvl)
    s = score_from_eps(proc, eps_hat, lvl).to(z.dtype)
    return apply(rate * Fg, z) - (0.5 if pf_ode else 1.0) * apply(rate * GG, s)


def diffuse(proc, xi, lvl, dt: float):
    """G √(γ' dt) ξ: the noise an Euler–Maruyama step of length dt > 0 adds (ξ standard normal)."""
    _, GG = proc.sde(lvl)
    return apply(chol(GG * (_per_t(lvl) * dt).clamp_min(0.0)), xi)


def posterior(proc, z, eps_hat, lvl_t, lvl_s):
    """q(z_s | z_t, x0 = x̂0) = N(mean, P), s earlier than t: mean (B, k, *event) in z's dtype, P float64 blocks.

    Gaussian conditioning with Φ, Q = transition(s, t): gain K = Σ_s Φᵀ Σ_t⁻¹, mean = h_s x̂0 + K (z − h_t x̂0),
    P = (I − KΦ) Σ_s (I − KΦ)ᵀ + K Q Kᵀ (Joseph's form: positive semi-definite by construction). For k = 1
    this is VDM's q(z_s | z_t, x) (eq. 20-25): K = Σ_s Φ/Σ_t, P = Σ_s Q/Σ_t."""
    x0 = vec(x0_from_eps(proc, z, eps_hat, lvl_t)).double()
    h_s, h_t = proc.mean_map(lvl_s)[..., :, 0], proc.mean_map(lvl_t)[..., :, 0]
    S_s, S_t = proc.cov(lvl_s), proc.cov(lvl_t)
    phi, Q = proc.transition(lvl_s, lvl_t)
    K = S_s @ phi.mT @ blocks.inv(S_t)
    r = vec(z).double() - h_t * x0
    mean = h_s * x0 + matvec(K, r)
    A = blocks.eye_like(K) - K @ phi
    P = A @ S_s @ A.mT + K @ Q @ K.mT
    return unvec(mean).to(z.dtype), blocks.sym(P)


def ancestral_step(proc, z, eps_hat, lvl_t, lvl_s, xi):
    """A draw of q(z_s | z_t, x0 = x̂0) (VDM's ancestral sampler; the reverse of RePaint's forward_step)."""
    mean, P = posterior(proc, z, eps_hat, lvl_t, lvl_s)
    return mean + apply(chol(P), xi.to(mean.dtype))


def forward_step(proc, z, lvl_s, lvl_t, xi):
    """A draw of q(z_t | z_s), s earlier than t: the forward process run from s to t."""
    phi, Q = proc.transition(lvl_s, lvl_t)
    return apply(phi, z) + apply(chol(Q), xi.to(z.dtype))


def ddim_step(proc, z, eps_hat, lvl_t, lvl_s, xi, eta: float = 0.0):
    """DDIM (Song et al. 2021) for k = 1: z_s = h_s x̂0 + √(Σ_s − σ_η²) ε̂ + σ_η ξ with σ_η² = η² P (the
    posterior variance): deterministic for η = 0, ancestral for η = 1."""
    x0 = x0_from_eps(proc, z, eps_hat, lvl_t)
    h_s = proc.mean_map(lvl_s)[..., 0, 0].unsqueeze(1)
    S_s = proc.cov(lvl_s)[..., 0, 0].unsqueeze(1)
    out = h_s.to(z.dtype) * x0
    if eta > 0:
        _, P = posterior(proc, z, eps_hat, lvl_t, lvl_s)
        var = (eta ** 2) * P[..., 0, 0].unsqueeze(1)
        return out + (S_s - var).clamp_min(0).sqrt().to(z.dtype) * eps_hat + var.sqrt().to(z.dtype) * xi
    return out + S_s.sqrt().to(z.dtype) * eps_hat


# ------------------------------------------------------------------------------------------------
# The probability-flow ODE in coordinates where it is nearly linear (Heun's sampler; docs/samplers.md).
#
# k = 1: u = z/h and τ = √Σ/h, in which du/dτ = ε̂ exactly (DDIM's and EDM's form: the linear part and the
# schedule's speed are gone). k = 2: τ = e^{γ/2} and u = M⁻¹z, M = process.ode_frame, the flow of the
# PF-ODE's part that stays once the state is stationary, dM/dγ = A M with A = F + GG P⁻¹/2 (P = prior_cov;
# for a complete recipe A = −(dB/dγ) Q Σ∞⁻¹, a rotation). With r = s + P⁻¹z, the PF-ODE is
# dz/dγ = A z − GG r/2, so du/dτ = −M⁻¹ GG r / τ, which vanishes as the state becomes stationary: large
# steps near the prior cost nothing.


def ode_time(proc, lvl) -> torch.Tensor:
    """τ per item and component, (Bt, 1, *e), float64."""
    if proc.k == 1:
        return (proc.cov(lvl)[..., 0, 0].sqrt() / proc.mean_map(lvl)[..., 0, 0]).unsqueeze(1)
    return torch.exp(0.5 * lvl.gamma)


def ode_coords(proc, z, lvl):
    if proc.k == 1:
        return z / proc.mean_map(lvl)[..., 0, 0].unsqueeze(1).to(z.dtype)
    return apply(blocks.inv(proc.ode_frame(lvl)), z)


def ode_state(proc, u, lvl):
    if proc.k == 1:
        return u * proc.mean_map(lvl)[..., 0, 0].unsqueeze(1).to(u.dtype)
    return apply(proc.ode_frame(lvl), u)


def ode_slope(proc, z, eps_hat, lvl):
    """du/dτ at the state z."""
    if proc.k == 1:
        return eps_hat.to(z.dtype)
    _, GG = proc.sde(lvl)
    s = score_from_eps(proc, eps_hat, lvl).to(z.dtype)
    r = s + apply(blocks.inv(proc.prior_cov(lvl)), z)
    tau = torch.exp(0.5 * lvl.gamma[:, 0])[..., None, None]
    return -apply(blocks.inv(proc.ode_frame(lvl)) @ GG / tau, r)


def prior_sample(proc, eps, lvl1):
    """A draw of the prior N(0, prior_cov) from standard normal eps (B, k, *event)."""
    return apply(chol(proc.prior_cov(lvl1).to(eps.device)), eps)


def x0_plain(proc, z, lvl):
    """The state read as data without a denoising evaluation: the position over its mean coefficient."""
    h = proc.mean_map(lvl)[..., 0, 0].unsqueeze(1)
    return (z[:, :1].double() / h).to(z.dtype)
