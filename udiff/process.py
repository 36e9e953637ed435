"""Processes: the linear Gaussian SDE each component follows, and everything samplers need from it.

State layout: z has shape (B, k, *event): k numbers per component (k = 1 position only: VP/VDM;
k = 2 position and momentum: CLD/PSLD). Data enter as x0 of shape (B, 1, *event) in component space.
A `NoiseLevel` (schedule.py) gives gamma(t) and gamma'(t) shaped (B, 1, *e) to broadcast over k.

Every process answers the same questions, so every sampler, loss and likelihood works with all of them:

    perturb(x0, eps, lvl)            a draw of q(z_t | x0) from standard normal eps (B, k, *event)
    x0_from_eps / eps_from_x0        the network's epsilon <-> the data estimate, given z_t
    score_from_eps(eps, lvl)         grad log q(z_t | x0) = -L_t^-T eps
    sde(z, lvl)                      forward drift f(z) and diffusion g^2 = G G^T (per unit t)
    ode_time / ode_coords / ...      coordinates in which the probability-flow ODE is nearly linear
    ancestral_step / ddim_step       the Gaussian posterior q(z_s | z_t, x0 = x0_hat) and its DDIM cousin
    gaussian_obs(z, lvl)             z as a linear observation of x0 (for the exact Gaussian denoiser)
    prior_sample(eps)                the stationary law N(0, Sigma_inf)

Level tensors are float64; results take the dtype of the state they act on.
"""

from __future__ import annotations

import torch

from .schedule import NoiseLevel


def _as(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype)


class Process:
    """Interface; see the module docstring. `predicted` = how many state slots the network predicts."""

    k: int = 1
    predicted: int = 1

    def prior_sample(self, eps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def perturb(self, x0, eps, lvl: NoiseLevel):
        raise NotImplementedError  # pragma: no cover

    def x0_from_eps(self, z, eps, lvl: NoiseLevel):
        raise NotImplementedError  # pragma: no cover

    def eps_from_x0(self, z, x0, lvl: NoiseLevel):
        raise NotImplementedError  # pragma: no cover

    def score_from_eps(self, eps, lvl: NoiseLevel):
        raise NotImplementedError  # pragma: no cover

    def sde(self, z, lvl: NoiseLevel):
        raise NotImplementedError  # pragma: no cover

    def reverse_drift(self, z, eps_hat, lvl: NoiseLevel, pf_ode: bool = False):
        """dz/dt of the reverse-time SDE (f - g^2 s) or of the probability-flow ODE (f - g^2 s / 2)."""
        f, g2 = self.sde(z, lvl)
        s = self.score_from_eps(eps_hat, lvl)
        return f - (0.5 if pf_ode else 1.0) * g2 * s

    # The probability-flow ODE in the process's preferred coordinates: u = ode_coords(z), and
    # du/dtau = ode_slope(...) with tau = ode_time(lvl) per component. Default: tau = t, u = z.
    def ode_time(self, lvl: NoiseLevel) -> torch.Tensor:
        return lvl.t.reshape((-1,) + (1,) * (lvl.gamma.ndim - 1))

    def ode_coords(self, z, lvl: NoiseLevel):
        return z

    def ode_state(self, u, lvl: NoiseLevel):
        return u

    def ode_slope(self, z, eps_hat, lvl: NoiseLevel):
        return self.reverse_drift(z, eps_hat, lvl, pf_ode=True)

    def transition(self, z, lvl_s: NoiseLevel, lvl_t: NoiseLevel, xi):
        """A draw of q(z_t | z_s) for s < t: the forward process run from s to t (RePaint's re-noising)."""
        raise NotImplementedError(f"{type(self).__name__} has no forward transition")

    def ancestral_step(self, z, eps_hat, lvl_t: NoiseLevel, lvl_s: NoiseLevel, xi):
        raise NotImplementedError(f"{type(self).__name__} has no ancestral sampler")

    def ddim_step(self, z, eps_hat, lvl_t: NoiseLevel, lvl_s: NoiseLevel, xi, eta: float = 0.0):
        raise NotImplementedError(f"{type(self).__name__} has no DDIM sampler")

    def gaussian_obs(self, z, lvl: NoiseLevel):
        """(w, y) per component with z a linear Gaussian observation of x0: w = h^T S^-1 h, y = h^T S^-1 z."""
        raise NotImplementedError  # pragma: no cover


class VP(Process):
    """Variance preserving, k = 1: q(z_t | x) = N(alpha_t x, sigma_t^2), dz = -beta z/2 dt + sqrt(beta) dw."""

    k = 1
    predicted = 1

    def prior_sample(self, eps):
        return eps

    def perturb(self, x0, eps, lvl):
        # z_t = alpha_t x + sigma_t eps (VDM eq. 1-2)
        return _as(lvl.alpha, x0) * x0 + _as(lvl.sigma, eps) * eps

    def x0_from_eps(self, z, eps, lvl):
        return (z - _as(lvl.sigma, z) * eps) / _as(lvl.alpha, z)

    def eps_from_x0(self, z, x0, lvl):
        return (z - _as(lvl.alpha, z) * x0) / _as(lvl.sigma, z)

    def score_from_eps(self, eps, lvl):
        return -eps / _as(lvl.sigma, eps)

    def sde(self, z, lvl):
        # f = -beta z / 2, g^2 = beta, beta = sigma^2 gamma' (algorithms.md §0)
        beta = _as(lvl.beta, z)
        return -0.5 * beta * z, beta

    def ode_time(self, lvl):
        # tau = sigma / alpha = exp(gamma / 2): in u = z / alpha the PF-ODE is du/dtau = eps_hat (DDIM/EDM form)
        return torch.exp(0.5 * lvl.gamma)

    def ode_coords(self, z, lvl):
        return z / _as(lvl.alpha, z)

    def ode_state(self, u, lvl):
        return u * _as(lvl.alpha, u)

    def ode_slope(self, z, eps_hat, lvl):
        return eps_hat

    def transition(self, z, lvl_s, lvl_t, xi):
        # q(z_t | z_s) = N(a z_s, sigma_t^2 (1 - e^(gamma_s - gamma_t))), a = alpha_t / alpha_s (VDM eq. 20-25)
        a = (lvl_t.alpha / lvl_s.alpha).to(z.dtype)
        var = lvl_t.sigma2 * -torch.expm1(lvl_s.gamma - lvl_t.gamma)
        return a * z + _as(var.clamp_min(0).sqrt(), z) * xi

    def ancestral_step(self, z, eps_hat, lvl_t, lvl_s, xi):
        # VDM ancestral step: z_s = (alpha_s/alpha_t)(z_t - sigma_t c eps_hat) + sqrt(c sigma_s^2) xi,
        # c = -expm1(gamma_s - gamma_t) (algorithms.md §1.7)
        c = -torch.expm1(lvl_s.gamma - lvl_t.gamma)
        mean = (lvl_s.alpha / lvl_t.alpha).to(z.dtype) * (z - _as(lvl_t.sigma * c, z) * eps_hat)
        return mean + _as((c * lvl_s.sigma2).sqrt(), z) * xi

    def ddim_step(self, z, eps_hat, lvl_t, lvl_s, xi, eta=0.0):
        # DDIM: z_s = alpha_s x0_hat + sqrt(sigma_s^2 - s_eta^2) eps_hat + s_eta xi, s_eta^2 = eta^2 c sigma_s^2
        x0 = self.x0_from_eps(z, eps_hat, lvl_t)
        var = (eta ** 2) * -torch.expm1(lvl_s.gamma - lvl_t.gamma) * lvl_s.sigma2
        out = _as(lvl_s.alpha, z) * x0 + _as((lvl_s.sigma2 - var).clamp_min(0).sqrt(), z) * eps_hat
        return out + _as(var.sqrt(), z) * xi if eta > 0 else out

    def gaussian_obs(self, z, lvl):
        # z = alpha x0 + sigma eps: w = alpha^2 / sigma^2 = SNR, y = alpha z / sigma^2
        return lvl.snr.to(z.dtype)[:, 0], (lvl.alpha / lvl.sigma2).to(z.dtype)[:, 0] * z[:, 0]
