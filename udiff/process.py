"""Processes: the linear Gaussian SDE each component follows, known by its kernel (docs/processes.md).

A process is a linear SDE on k numbers per component (k = 1: position only; k = 2: position and momentum),
driven by the schedule's gamma(t). It answers five questions, per component, as float64 blocks (..., k, k)
(vectors (..., k)) whose leading dimensions broadcast against a state's (B, *event); `lvl` is a
schedule.NoiseLevel (t, gamma, gamma'):

    sde(lvl)               (F, GG): dz = F z dgamma + G dW with G Gᵀ = GG, per unit of gamma
    mean_map(lvl)          Φ: E[z | z at the data end] = Φ z_data, the transition from the data level
    cov(lvl)               Σ: covariance of z given x0 (the initial covariance init_cov carried along)
    transition(lvl_s, lt)  (Φ_st, Q_st): q(z_t | z_s) = N(Φ_st z_s, Q_st), s earlier than t
    prior_cov(lvl1)        covariance of the prior p(z_1) = N(0, prior_cov)

Everything else (conversions ε ↔ x0 ↔ score, the Gaussian posterior and DDIM steps, the reverse SDE and
probability-flow ODE, the KL terms) is written once over any process in udiff/conversions.py.

Per unit of gamma rather than of t: the process is the same object whatever the schedule, and samplers
that move in gamma (or in exp(gamma/2)) are blind to the schedule's speed. Per unit t, multiply by gamma'.

This module holds the processes with one number per component (`ScalarProcess`: VP, VE, sub-VP); the
phase-space ones (CLD, PSLD, any constant complete recipe) are in udiff/phase_space.py.
"""

from __future__ import annotations

import torch

from .schedule import NoiseLevel


class Process:
    """The kernel contract (module docstring). `predicted`: how many state slots the network predicts (the
    last ones). `traits`: what samplers may require (registry.TRAIT_WORDS)."""

    name: str = "process"
    k: int = 1
    predicted: int = 1

    @property
    def traits(self) -> frozenset:
        return frozenset({"scalar"} if self.k == 1 else set())

    def sde(self, lvl: NoiseLevel):  # pragma: no cover - contract
        raise NotImplementedError

    def mean_map(self, lvl: NoiseLevel) -> torch.Tensor:  # pragma: no cover - contract
        raise NotImplementedError

    def cov(self, lvl: NoiseLevel) -> torch.Tensor:  # pragma: no cover - contract
        raise NotImplementedError

    def transition(self, lvl_s: NoiseLevel, lvl_t: NoiseLevel):  # pragma: no cover - contract
        raise NotImplementedError

    def prior_cov(self, lvl1: NoiseLevel) -> torch.Tensor:  # pragma: no cover - contract
        raise NotImplementedError

    def ode_frame(self, lvl: NoiseLevel) -> torch.Tensor:
        """M with dM/dγ = (F + GG P⁻¹/2) M, M = I at the data end: the flow of the probability-flow ODE's
        stationary part, factored out by Heun's sampler for k = 2 (conversions.ode_coords). Default: I."""
        return torch.eye(self.k, dtype=torch.float64, device=lvl.gamma.device)

    def init_cov(self) -> torch.Tensor:
        """(k, k) covariance of the state at the data end given x0 (0 but for an initial momentum)."""
        return torch.zeros(self.k, self.k, dtype=torch.float64)

    def own_gamma(self, g: torch.Tensor) -> torch.Tensor:
        """The process's own noise level ln τ² (τ = conversions.ode_time) as a function of the schedule's γ:
        what EDM's grid spaces. Identity for VP and VE (τ² = e^γ), and taken so for k = 2."""
        return g

    def schedule_gamma(self, own: torch.Tensor) -> torch.Tensor:
        """The inverse of own_gamma."""
        return own


def _block(v: torch.Tensor) -> torch.Tensor:
    """A per-component scalar (B, 1, *e) → 1×1 blocks (B, *e, 1, 1)."""
    return v[:, 0][..., None, None]


class ScalarProcess(Process):
    """k = 1: z = a x0 + s ε, given by a(γ)² and s(γ)² and their γ-derivatives (per subclass, closed form).

    From them: F = d log a/dγ, GG = d s²/dγ − 2 F s² (so that d s²/dγ = 2 F s² + GG), Φ_st = a_t/a_s and
    Q_st = s_t² − Φ_st² s_s² (subclasses give cancellation-free forms)."""

    k = 1
    predicted = 1

    def a2(self, g):  # pragma: no cover - contract
        raise NotImplementedError

    def s2(self, g):  # pragma: no cover - contract
        raise NotImplementedError

    def dlog_a(self, g):  # pragma: no cover - contract
        raise NotImplementedError

    def ds2(self, g):  # pragma: no cover - contract
        raise NotImplementedError

    def sde(self, lvl):
        g = lvl.gamma
        f = self.dlog_a(g)
        return _block(f), _block(self.ds2(g) - 2.0 * f * self.s2(g))

    def mean_map(self, lvl):
        return _block(self.a2(lvl.gamma).sqrt())

    def cov(self, lvl):
        return _block(self.s2(lvl.gamma))

    def transition_var(self, g_s, g_t):
        a2 = self.a2(g_t) / self.a2(g_s)
        return self.s2(g_t) - a2 * self.s2(g_s)

    def transition(self, lvl_s, lvl_t):
        phi = (self.a2(lvl_t.gamma) / self.a2(lvl_s.gamma)).sqrt()
        return _block(phi), _block(self.transition_var(lvl_s.gamma, lvl_t.gamma).clamp_min(0.0))


class VP(ScalarProcess):
    """Variance preserving (VDM, DDPM): a² = sigmoid(−γ), s² = sigmoid(γ), dz = −β z/2 dt + √β dw, β = s² γ'.
    Prior N(0, 1), its stationary law."""

    name = "vp"

    def a2(self, g):
        return torch.sigmoid(-g)

    def s2(self, g):
        return torch.sigmoid(g)

    def dlog_a(self, g):
        return -0.5 * torch.sigmoid(g)  # d log a/dγ with a² = sigmoid(−γ)

    def ds2(self, g):
        return torch.sigmoid(g) * torch.sigmoid(-g)

    def transition_var(self, g_s, g_t):
        return torch.sigmoid(g_t) * -torch.expm1(g_s - g_t)  # σ_t² (1 − SNR_t/SNR_s) (VDM eq. 20-25)

    def prior_cov(self, lvl1):
        return torch.ones(1, 1, dtype=torch.float64)



class VE(ScalarProcess):
    """Variance exploding (SMLD, Song et al. 2021): a = 1, s² = e^γ = σ², dz = √(dσ²/dt) dw. Prior N(0, σ(1)²):
    the schedule sets σ_min and σ_max (vdm-linear with gamma_min = 2 ln σ_min, gamma_max = 2 ln σ_max is SMLD's
    geometric σ(t) = σ_min (σ_max/σ_min)^t)."""

    name = "ve"

    def a2(self, g):
        return torch.ones_like(g)

    def s2(self, g):
        return torch.exp(g)

    def dlog_a(self, g):
        return torch.zeros_like(g)

    def ds2(self, g):
        return torch.exp(g)

    def transition_var(self, g_s, g_t):
        return torch.exp(g_t) * -torch.expm1(g_s - g_t)  # σ_t² − σ_s²

    def prior_cov(self, lvl1):
        return _block(torch.exp(lvl1.gamma))


class SubVP(ScalarProcess):
    """Sub-VP (Song et al. 2021): the VP drift with less noise, g² = β(1 − e^{−2B}), on the VP clock
    B = softplus(γ): a² = sigmoid(−γ), s = 1 − e^{−B} = sigmoid(γ). Its variance stays below VP's; prior N(0, 1).
    The schedule's γ is the VP clock's; the process's own −log SNR is γ + log sigmoid(γ)."""

    name = "sub-vp"

    def a2(self, g):
        return torch.sigmoid(-g)

    def s2(self, g):
        return torch.sigmoid(g).square()

    def dlog_a(self, g):
        return -0.5 * torch.sigmoid(g)

    def ds2(self, g):
        s = torch.sigmoid(g)
        return 2.0 * s * s * torch.sigmoid(-g)

    def transition_var(self, g_s, g_t):
        # s_t² − (a_t/a_s)² s_s² with s = σ², a² = 1 − σ²: σ_t² (1 − e^{γ_s − γ_t}) (σ_t² + σ_s² − σ_s² σ_t²)
        p, q = torch.sigmoid(g_s), torch.sigmoid(g_t)
        return q * -torch.expm1(g_s - g_t) * (q + p - p * q)

    def prior_cov(self, lvl1):
        return torch.ones(1, 1, dtype=torch.float64)

    def own_gamma(self, g):
        # ln τ² = ln(s²/a²) = 2 ln sigmoid(γ) − ln sigmoid(−γ) = 2γ − softplus(γ)
        return 2.0 * g - torch.nn.functional.softplus(g)

    def schedule_gamma(self, own):
        # y = e^own = x²/(1 + x) with x = e^γ, so x = (y + √(y² + 4y))/2; in logs for large and small y
        y = torch.exp(own)
        return torch.log(0.5 * (y + torch.sqrt(y * (y + 4.0))))
