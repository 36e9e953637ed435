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
    marginal(x0, lvl)                q(z_t | x0): mean (B, k, *event) and float64 covariance (.., *event, k, k)
    stationary_cov() / init_cov()    Sigma_inf and the covariance of z_0 given x0, (k, k) float64
    diffuse(xi, lvl, dt)             G sqrt(dt) xi, the noise of an Euler-Maruyama step
    x0_plain(z, lvl)                 the state read as data without a denoising evaluation

Phase-space processes (k = 2: PSLD, CLD, any constant (D, Q) of a complete recipe) are `CompleteRecipe`
below; VP is also its 1x1 case, kept as its own class for the VDM/DDIM formulas in log-SNR form.

Level tensors are float64; results take the dtype of the state they act on.
"""

from __future__ import annotations

import math

import torch

from .errors import UdiffError
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

    def marginal(self, x0, lvl: NoiseLevel):
        """q(z_t | x0) = N(mean, cov): mean (B, k, *event) in x0's dtype; cov float64, broadcastable to
        (B, *event, k, k), including the initial covariance `init_cov` (PSLD's HSM momentum)."""
        raise NotImplementedError  # pragma: no cover

    def stationary_cov(self) -> torch.Tensor:
        """Sigma_inf (k, k), float64: the law the forward process converges to (the prior before the basis)."""
        raise NotImplementedError  # pragma: no cover

    def init_cov(self) -> torch.Tensor:
        """(k, k) float64 covariance of z_0 given x0 (0 but for an initial momentum)."""
        raise NotImplementedError  # pragma: no cover

    def diffuse(self, xi, lvl: NoiseLevel, dt: float):
        """G sqrt(dt) xi: the noise an Euler-Maruyama step of length dt > 0 adds (xi standard normal)."""
        _, g2 = self.sde(xi, lvl)
        return (g2 * dt).sqrt() * xi

    def x0_plain(self, z, lvl: NoiseLevel):
        """The state read as data without a denoising evaluation (x0_from_eps with eps = 0)."""
        zero = torch.zeros((z.shape[0], self.predicted) + tuple(z.shape[2:]), dtype=z.dtype, device=z.device)
        return self.x0_from_eps(z, zero, lvl)


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

    def posterior(self, z, eps_hat, lvl_t, lvl_s):
        """q(z_s | z_t, x0 = x0_hat(eps_hat)) = N(mean, var) for s < t: mean (B, 1, *event) in z's dtype and
        var float64 broadcastable to it. VDM eq. 20-25 in its stable form: mean = (alpha_s/alpha_t)(z_t -
        sigma_t c eps_hat), var = c sigma_s^2, c = -expm1(gamma_s - gamma_t) (algorithms.md §1.7)."""
        c = -torch.expm1(lvl_s.gamma - lvl_t.gamma)
        mean = (lvl_s.alpha / lvl_t.alpha).to(z.dtype) * (z - _as(lvl_t.sigma * c, z) * eps_hat)
        return mean, c * lvl_s.sigma2

    def ancestral_step(self, z, eps_hat, lvl_t, lvl_s, xi):
        mean, var = self.posterior(z, eps_hat, lvl_t, lvl_s)
        return mean + _as(var.sqrt(), z) * xi

    def ddim_step(self, z, eps_hat, lvl_t, lvl_s, xi, eta=0.0):
        # DDIM: z_s = alpha_s x0_hat + sqrt(sigma_s^2 - s_eta^2) eps_hat + s_eta xi, s_eta^2 = eta^2 c sigma_s^2
        x0 = self.x0_from_eps(z, eps_hat, lvl_t)
        var = (eta ** 2) * -torch.expm1(lvl_s.gamma - lvl_t.gamma) * lvl_s.sigma2
        out = _as(lvl_s.alpha, z) * x0 + _as((lvl_s.sigma2 - var).clamp_min(0).sqrt(), z) * eps_hat
        return out + _as(var.sqrt(), z) * xi if eta > 0 else out

    def gaussian_obs(self, z, lvl):
        # z = alpha x0 + sigma eps: w = alpha^2 / sigma^2 = SNR, y = alpha z / sigma^2
        return lvl.snr.to(z.dtype)[:, 0], (lvl.alpha / lvl.sigma2).to(z.dtype)[:, 0] * z[:, 0]

    def marginal(self, x0, lvl):
        return _as(lvl.alpha, x0) * x0, lvl.sigma2[:, 0][..., None, None]

    def stationary_cov(self):
        return torch.ones(1, 1, dtype=torch.float64)

    def init_cov(self):
        return torch.zeros(1, 1, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------
# Linear processes from "a complete recipe" (Pandey & Mandt 2023; Ma, Chen & Fox 2015): k = 1 or 2.
#
# Matrices of the 1×1 or 2×2 blocks are float64 tensors (..., k, k) whose leading dimensions broadcast
# against a state's (B, *event): one block per item and component (component-wise schedules give every
# component its own clock B). A state (B, k, *event) is seen as vectors (B, *event, k) to apply them.


def _vec(z):
    """(B, k, *event) → (B, *event, k)."""
    return z.movedim(1, -1)


def _unvec(v):
    return v.movedim(-1, 1)


def _apply(mat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The k×k blocks `mat` applied to the slots of z (B, k, *event), in z's dtype (written out: k <= 2)."""
    m = mat.to(device=z.device, dtype=z.dtype)
    k = m.shape[-1]
    return torch.stack([sum(m[..., i, j] * z[:, j] for j in range(k)) for i in range(k)], 1)


def _chol(s: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factors of symmetric PSD 1×1 or 2×2 blocks, closed form (exact zeros stay zeros)."""
    if s.shape[-1] == 1:
        return s.clamp_min(0).sqrt()
    l11 = s[..., 0, 0].clamp_min(0).sqrt()
    l21 = torch.where(l11 > 0, s[..., 1, 0] / torch.where(l11 > 0, l11, 1.0), 0.0)
    l22 = (s[..., 1, 1] - l21 * l21).clamp_min(0).sqrt()
    zero = torch.zeros_like(l11)
    return torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], -2)


def _tril_solve(low: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """L⁻¹ v for lower-triangular 1×1 or 2×2 blocks `low` (..., k, k) and vectors v (..., k)."""
    if low.shape[-1] == 1:
        return v / low[..., 0]
    u1 = v[..., 0] / low[..., 0, 0]
    u2 = (v[..., 1] - low[..., 1, 0] * u1) / low[..., 1, 1]
    return torch.stack([u1, u2], -1)


def _triu_solve_t(low: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """L⁻ᵀ v for lower-triangular 1×1 or 2×2 blocks (back substitution)."""
    if low.shape[-1] == 1:
        return v / low[..., 0]
    u2 = v[..., 1] / low[..., 1, 1]
    u1 = (v[..., 0] - low[..., 1, 0] * u2) / low[..., 0, 0]
    return torch.stack([u1, u2], -1)


def _inv(s: torch.Tensor) -> torch.Tensor:
    """Inverse of 1×1 or 2×2 blocks, closed form."""
    if s.shape[-1] == 1:
        return 1.0 / s
    a, b, c, d = s[..., 0, 0], s[..., 0, 1], s[..., 1, 0], s[..., 1, 1]
    det = a * d - b * c
    return torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]


def expm_blocks(mat: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """e^{mat·b} for one constant 1×1 or 2×2 matrix and a tensor of times b (...): (..., k, k), float64.

    For 2×2, with λ = tr/2 and N = mat − λI, Cayley–Hamilton gives N² = qI, q = λ² − det, so
    e^{mat b} = e^{λb} (cosh(√q b) I + sinh(√q b)/√q · N) (cos/sin when q < 0; I + bN when q = 0, the
    critically damped case of PSLD §2.3).
    """
    mat = mat.to(torch.float64)
    b = b.to(torch.float64)
    k = mat.shape[-1]
    if k == 1:
        return torch.exp(mat[0, 0] * b)[..., None, None]
    lam = float(mat[0, 0] + mat[1, 1]) / 2
    n = mat - lam * torch.eye(2, dtype=torch.float64)
    q = lam * lam - float(mat[0, 0] * mat[1, 1] - mat[0, 1] * mat[1, 0])
    if abs(q) <= 1e-12 * max(1.0, lam * lam):  # critical damping: a double eigenvalue
        c, s = torch.ones_like(b), b
    elif q > 0:
        r = math.sqrt(q)
        c, s = torch.cosh(r * b), torch.sinh(r * b) / r
    else:
        r = math.sqrt(-q)
        c, s = torch.cos(r * b), torch.sin(r * b) / r
    eye = torch.eye(2, dtype=torch.float64, device=b.device)
    out = c[..., None, None] * eye + s[..., None, None] * n.to(b.device)
    return torch.exp(lam * b)[..., None, None] * out


class CompleteRecipe(Process):
    """A linear SDE on k = 1 or 2 numbers per component, from a complete recipe with constant D and Q.

    With the Hamiltonian H(x, m) = x²/2 + m²/(2M) (position x, momentum m of mass M; for k = 1 just x²/2),
    so that the stationary law is N(0, Σ∞), Σ∞ = diag(1, M), and per unit of the schedule's rate β(t):

        dz = β(t) F z dt + sqrt(β(t)) G dw,   F = −(D + Q) Σ∞⁻¹,   G Gᵀ = 2D

    D is positive semi-definite and Q skew-symmetric (algorithms.md §2.1, U(x) = x²/2; Ma et al. 2015), and the
    process runs on the schedule's clock: B(t) = ∫β = softplus(γ(t)) (`NoiseLevel.integrated_rate`), so a
    constant β is `vp-linear` with beta_min = beta_max = β and any schedule gives a β(t). VP is the 1×1 case
    D = [[1/2]], Q = [[0]] (then B = softplus(γ) makes e^{−B/2} = α exactly).

    Data enter as the position: z₀ = (x₀, m₀) with m₀ ~ N(0, κM) marginalized analytically (hybrid score
    matching): Σ₀ = diag(0, κM). The kernel is closed form (`kernel`), sampled with its lower Cholesky
    factor L, and the network predicts ε of z_t = μ_t + L ε: both slots, or only the momentum's when D has
    no position entry (CLD: the score of x never enters the reverse SDE), `predicted` = 1.
    """

    def __init__(self, D, Q, mass: float = 1.0, kappa: float = 0.0):
        D = torch.as_tensor(D, dtype=torch.float64)
        Q = torch.as_tensor(Q, dtype=torch.float64)
        self.k = D.shape[0]
        if D.shape != (self.k, self.k) or Q.shape != D.shape or self.k not in (1, 2):
            raise UdiffError(f"D and Q must both be 1×1 or 2×2, got {tuple(D.shape)} and {tuple(Q.shape)}")
        self.D, self.Q, self.mass, self.kappa = D, Q, float(mass), float(kappa)
        self.sinf = torch.diag(torch.tensor([1.0, self.mass][: self.k], dtype=torch.float64))
        self.s0 = torch.diag(torch.tensor([0.0, self.kappa * self.mass][: self.k], dtype=torch.float64))
        sinf_inv = torch.diag(1.0 / torch.diagonal(self.sinf))
        # the recipe's drift f = −(D + Q) ∇H with ∇H = Σ∞⁻¹ z, constant D and Q (τ = 0; algorithms.md §2.1)
        self.F = -(D + Q) @ sinf_inv
        # SSCS's linear part: the same recipe with the Hamiltonian part reversed, −F − G Gᵀ Σ∞⁻¹ (§2.6)
        self.A0 = (Q - D) @ sinf_inv
        self.GG = 2.0 * D
        self.G = _chol(self.GG)
        self.predicted = self.k if self.k == 1 or float(D[0, 0]) > 0 else 1

    # -- kernel ----------------------------------------------------------------------------------

    def _clock(self, lvl):
        return lvl.integrated_rate[:, 0]  # (Bt, *e) float64

    def kernel(self, lvl: NoiseLevel):
        """(E, Σ) per item and component: E = e^{F B(t)} and Σ_t = Σ∞ + E (Σ₀ − Σ∞) Eᵀ, float64 (..., k, k)."""
        E, S = self._relax(self.F, self._clock(lvl))
        return E, S + E @ self.s0.to(E.device) @ E.mT

    def _parts(self, lvl):
        """h = E e₁ (z_t's mean per unit x₀, m₀ = 0) (..., k) and the lower Cholesky factor L of Σ_t."""
        E, S = self.kernel(lvl)
        return E[..., :, 0], _chol(S)

    def marginal(self, x0, lvl):
        """q(z_t | x₀): mean (B, k, *event) in x₀'s dtype and covariance float64 (Bt, *event, k, k)."""
        E, S = self.kernel(lvl)
        return _unvec(E[..., :, 0].to(x0.dtype) * _vec(x0)), S

    def stationary_cov(self):
        return self.sinf.clone()

    def init_cov(self):
        return self.s0.clone()

    def prior_sample(self, eps):
        return _apply(_chol(self.sinf.to(eps.device)), eps)

    def perturb(self, x0, eps, lvl):
        h, L = self._parts(lvl)
        return _unvec(h.to(eps.dtype) * _vec(x0).to(eps.dtype)) + _apply(L, eps)

    def eps_from_x0(self, z, x0, lvl):
        h, L = self._parts(lvl)
        r = _vec(z).double() - h * _vec(x0).double()
        return _unvec(_tril_solve(L, r)).to(z.dtype)

    def x0_from_eps(self, z, eps, lvl):
        """E[x₀ | z_t] from the predicted ε: from the position slot, or (ε_m only) from both slots."""
        h, L = self._parts(lvl)
        zz, e = z.double(), eps.double()
        if eps.shape[1] == self.k:  # z_x = h_x x₀ + l11 ε_x
            x0 = (zz[:, 0] - L[..., 0, 0] * e[:, 0]) / h[..., 0]
        else:  # eliminate ε_x from z_x = h_x x₀ + l11 ε_x and z_m = h_m x₀ + l21 ε_x + l22 ε_m
            l11, l21, l22 = L[..., 0, 0], L[..., 1, 0], L[..., 1, 1]
            x0 = (l21 * zz[:, 0] - l11 * (zz[:, 1] - l22 * e[:, 0])) / (l21 * h[..., 0] - l11 * h[..., 1])
        return x0.unsqueeze(1).to(z.dtype)

    def x0_plain(self, z, lvl):
        """The state read as data without a denoising evaluation: the position over its mean coefficient."""
        h, _ = self._parts(lvl)
        return (z[:, :1].double() / h[..., 0].unsqueeze(1)).to(z.dtype)

    def score_from_eps(self, eps, lvl):
        """∇ log q(z_t | x₀) = −L⁻ᵀ ε (PSLD §2.4). With ε of the momentum only (`predicted` = 1) the position
        entry is returned as 0: it is unknown, and G Gᵀ has no position row, so no drift uses it."""
        _, L = self._parts(lvl)
        if eps.shape[1] == self.k:
            return _unvec(-_triu_solve_t(L, _vec(eps).double())).to(eps.dtype)
        s_m = -eps[:, 0].double() / L[..., 1, 1]
        return torch.stack([torch.zeros_like(s_m), s_m], 1).to(eps.dtype)

    # -- SDE -------------------------------------------------------------------------------------

    def sde(self, z, lvl):
        """f = β F z and g² = β diag(G Gᵀ). Only for diagonal D (g² would be a matrix); `reverse_drift` and
        `diffuse` take any D."""
        if self.k == 2 and float(self.GG[0, 1]) != 0.0:
            raise UdiffError("this process has a non-diagonal D: its g² is a matrix; use reverse_drift/diffuse")
        beta = lvl.beta.to(z.dtype)
        g2 = torch.diagonal(self.GG).to(z).reshape((1, self.k) + (1,) * (z.ndim - 2))
        return beta * _apply(self.F, z), beta * g2

    def reverse_drift(self, z, eps_hat, lvl, pf_ode=False):
        """β (F z − c G Gᵀ s), c = 1 for the reverse SDE, 1/2 for the probability-flow ODE (PSLD eq. 11)."""
        s = self.score_from_eps(eps_hat, lvl).to(z.dtype)
        c = 0.5 if pf_ode else 1.0
        return lvl.beta.to(z.dtype) * (_apply(self.F, z) - c * _apply(self.GG, s))

    def diffuse(self, xi, lvl, dt):
        """G sqrt(β dt) ξ: the noise an Euler–Maruyama step of length dt > 0 adds."""
        return (lvl.beta * dt).sqrt().to(xi.dtype) * _apply(self.G, xi)

    # -- steps -----------------------------------------------------------------------------------

    def _relax(self, mat, db):
        """(E, Σ∞ − E Σ∞ Eᵀ) with E = e^{mat ΔB}: mean map and covariance of a linear process with drift matrix
        `mat` and stationary covariance Σ∞ after integrated rate ΔB ≥ 0 from a point (algorithms.md §2.3)."""
        E = expm_blocks(mat, db)
        sinf = self.sinf.to(E.device)
        S = sinf - E @ sinf @ E.mT
        return E, 0.5 * (S + S.mT)

    def _bridge(self, mat, db):
        """`_relax` with the covariance's lower Cholesky factor: an exact step, z ← E z + L ξ."""
        E, S = self._relax(mat, db)
        return E, _chol(S)

    def transition(self, z, lvl_s, lvl_t, xi):
        """A draw of q(z_t | z_s), s < t: the forward process run from B(s) to B(t)."""
        E, L = self._bridge(self.F, self._clock(lvl_t) - self._clock(lvl_s))
        return _apply(E, z) + _apply(L, xi)

    def ancestral_step(self, z, eps_hat, lvl_t, lvl_s, xi):
        """z_s ~ q(z_s | z_t, x₀ = x̂₀): Gaussian conditioning, gain K = Σ_s Eᵀ Σ_t⁻¹ with E = e^{F(B_t − B_s)}."""
        x0 = _vec(self.x0_from_eps(z, eps_hat, lvl_t)).double()
        E_s, S_s = self.kernel(lvl_s)
        E_t, S_t = self.kernel(lvl_t)
        E = expm_blocks(self.F, self._clock(lvl_t) - self._clock(lvl_s))
        K = S_s @ E.mT @ _inv(S_t)
        r = _vec(z).double() - E_t[..., :, 0] * x0
        mean = E_s[..., :, 0] * x0 + (K @ r.unsqueeze(-1)).squeeze(-1)
        P = S_s - K @ E @ S_s
        return (_unvec(mean) + _apply(_chol(0.5 * (P + P.mT)), xi.double())).to(z.dtype)

    def ddim_step(self, z, eps_hat, lvl_t, lvl_s, xi, eta=0.0):
        raise UdiffError("ddim is a sampler of VP processes; for this process use em, sscs, heun, rk45 or ancestral")

    def sscs_linear(self, z, lvl_from, lvl_to, xi):
        """SSCS's linear part, solved exactly (PSLD §2.6): dz = β A₀ z ds + sqrt(β) G dw̄ in reverse time from
        lvl_from down to lvl_to, A₀ = (Q − D) Σ∞⁻¹ (same stationary N(0, Σ∞)), a draw from standard normal xi."""
        E, L = self._bridge(self.A0, self._clock(lvl_from) - self._clock(lvl_to))
        return _apply(E, z) + _apply(L, xi)

    def sscs_score(self, z, eps_hat, lvl, lvl_from, lvl_to):
        """SSCS's score part, one Euler step from lvl_from down to lvl_to with the score at lvl:
        dz = β G Gᵀ (s + Σ∞⁻¹ z) ds."""
        s = self.score_from_eps(eps_hat, lvl).to(z.dtype)
        db = (lvl_from.integrated_rate - lvl_to.integrated_rate).to(z.dtype)
        return z + db * _apply(self.GG, s + _apply(_inv(self.sinf), z))

    def gaussian_obs(self, z, lvl):
        """z_t = h x₀ + L ε: w = hᵀΣ⁻¹h = |L⁻¹h|², y = hᵀΣ⁻¹z = (L⁻¹h)·(L⁻¹z), per component."""
        h, L = self._parts(lvl)
        v = _tril_solve(L, h)
        u = _tril_solve(L, _vec(z).double())
        return (v * v).sum(-1).to(z.dtype), (v * u).sum(-1).to(z.dtype)


def psld(gamma: float = 0.01, nu=None, m_inv: float = 4.0, kappa: float = 0.04) -> CompleteRecipe:
    """PSLD (Pandey & Mandt 2023; algorithms.md §2.2): D = ½ diag(Γ, Mν), Q = ½ [[0, −1], [1, 0]], M = 1/m_inv, i.e.
    dx = (β/2)(M⁻¹m − Γx) dt + sqrt(Γβ) dw, dm = (β/2)(−x − νm) dt + sqrt(Mνβ) dw. ν defaults to critical
    damping, (Γ − ν)² = 4M⁻¹; Γ = 0 is CLD (Dockhorn et al. 2022)."""
    mass = 1.0 / m_inv
    if nu is None:
        nu = gamma + 2.0 * math.sqrt(m_inv)
    D = [[0.5 * gamma, 0.0], [0.0, 0.5 * mass * nu]]
    Q = [[0.0, -0.5], [0.5, 0.0]]
    return CompleteRecipe(D, Q, mass=mass, kappa=kappa)
