"""Phase-space processes: linear SDEs from "a complete recipe" with constant D and Q (docs/processes.md).

With the Hamiltonian H(x, m) = x²/2 + m²/(2M) (position x, momentum m of mass M; for k = 1 just x²/2),
so that the stationary law is N(0, Σ∞), Σ∞ = diag(1, M), and per unit of the clock B:

    dz = F z dB + G dW,   F = −(D + Q) Σ∞⁻¹,   G Gᵀ = 2D                       (Ma et al. 2015; PSLD §2)

D positive semi-definite, Q skew-symmetric. The process runs on the schedule's clock B = softplus(γ), so
dB/dγ = sigmoid(γ) and a constant β is `vp-linear` with beta_min = beta_max = β; VP is the 1×1 case
D = [[1/2]], Q = [[0]]. Data enter as the position, z₀ = (x₀, m₀) with m₀ ~ N(0, κM) marginalized
(hybrid score matching, Σ₀ = diag(0, κM)). The network predicts ε of both slots, or only the momentum's
when D has no position entry (CLD: the score of x never enters the reverse SDE).

The kernel is closed form: E = e^{F B} by Cayley–Hamilton, and the covariance of a path started at a
point, Σ(B) = ∫₀^B e^{Fs} 2D e^{Fᵀs} ds, by its Taylor series while B‖F‖ <= 1 (every entry accurate to
float64, down to B → 0, where Σ∞ − E Σ∞ Eᵀ would be a difference of near-equal terms) and by that
difference beyond (docs/processes.md has the derivation and the error analysis).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F_

from . import blocks
from .errors import UdiffError
from .process import Process

SERIES_TERMS = 24  # B‖F‖ <= 1: the remainder is below 1/25! relative to the leading term


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
    """A linear SDE on k = 1 or 2 numbers per component with constant D and Q (module docstring)."""

    name = "recipe"

    def __init__(self, D, Q, mass: float = 1.0, kappa: float = 0.0, name: str = "recipe"):
        D = torch.as_tensor(D, dtype=torch.float64)
        Q = torch.as_tensor(Q, dtype=torch.float64)
        self.k = D.shape[0]
        if D.shape != (self.k, self.k) or Q.shape != D.shape or self.k not in (1, 2):
            raise UdiffError(f"D and Q must both be 1×1 or 2×2, got {tuple(D.shape)} and {tuple(Q.shape)}")
        self.name = name
        self.D, self.Q, self.mass, self.kappa = D, Q, float(mass), float(kappa)
        self.sinf = torch.diag(torch.tensor([1.0, self.mass][: self.k], dtype=torch.float64))
        self.s0 = torch.diag(torch.tensor([0.0, self.kappa * self.mass][: self.k], dtype=torch.float64))
        sinf_inv = torch.diag(1.0 / torch.diagonal(self.sinf))
        self.F = -(D + Q) @ sinf_inv  # the recipe's drift −(D + Q)∇H with ∇H = Σ∞⁻¹ z (PSLD §2.1)
        self.A0 = (Q - D) @ sinf_inv  # SSCS's linear part: the recipe with its Hamiltonian part reversed (§2.6)
        self.GG = 2.0 * D
        self.rotation = -Q @ sinf_inv  # F + D Σ∞⁻¹: the probability-flow ODE's drift once stationary
        self.predicted = self.k if self.k == 1 or float(D[0, 0]) > 0 else 1
        self._series = {}

    @property
    def traits(self):
        return frozenset({"splitting", "scalar"} if self.k == 1 else {"splitting"})

    # -- the kernel ------------------------------------------------------------------------------

    @staticmethod
    def clock(lvl) -> torch.Tensor:
        """B = softplus(γ) per item and component (Bt, *e), float64."""
        return F_.softplus(lvl.gamma[:, 0])

    @staticmethod
    def _rate(lvl) -> torch.Tensor:
        """dB/dγ = sigmoid(γ) as (Bt, *e, 1, 1)."""
        return torch.sigmoid(lvl.gamma[:, 0])[..., None, None]

    def _coefficients(self, mat, device):
        """L^n(GG)/(n+1)! for n < SERIES_TERMS, L(X) = mat X + X matᵀ: the series of `relax` (cached)."""
        key = (id(mat), str(device))
        if key not in self._series:
            m = mat.to(device)
            x = self.GG.to(device)
            out = []
            for n in range(SERIES_TERMS):
                out.append(x / float(math.factorial(n + 1)))
                x = m @ x + x @ m.mT
            self._series[key] = torch.stack(out)  # (N, k, k)
        return self._series[key]

    def relax(self, mat: torch.Tensor, db: torch.Tensor):
        """(E, Σ): E = e^{mat ΔB} and Σ = ∫₀^ΔB e^{mat s} 2D e^{matᵀ s} ds, the mean map and covariance after
        ΔB >= 0 of a linear process with drift `mat` (F or SSCS's A0, both with stationary Σ∞) started at a
        point. Σ by its Taylor series for ΔB‖mat‖ <= 1, else as Σ∞ − E Σ∞ Eᵀ."""
        db = db.to(torch.float64)
        E = expm_blocks(mat, db)
        norm = float(torch.linalg.matrix_norm(mat, ord=2))
        sinf = self.sinf.to(E.device)
        far = sinf - E @ sinf @ E.mT
        small = db * norm <= 1.0
        if bool(small.any()):
            coef = self._coefficients(mat, db.device)
            b = torch.where(small, db, torch.zeros_like(db))
            powers = b.unsqueeze(-1) ** torch.arange(1, SERIES_TERMS + 1, dtype=torch.float64, device=db.device)
            near = torch.einsum("...n,nij->...ij", powers, coef)
            far = torch.where(small[..., None, None], near, far)
        return E, blocks.sym(far)

    def sde(self, lvl):
        r = self._rate(lvl)
        return r * self.F.to(r.device), r * self.GG.to(r.device)

    def mean_map(self, lvl):
        return expm_blocks(self.F, self.clock(lvl))

    def cov(self, lvl):
        E, S = self.relax(self.F, self.clock(lvl))
        return S + E @ self.s0.to(E.device) @ E.mT

    def transition(self, lvl_s, lvl_t):
        return self.relax(self.F, self.clock(lvl_t) - self.clock(lvl_s))

    def prior_cov(self, lvl1):
        return self.sinf.clone()

    def ode_frame(self, lvl):
        return expm_blocks(self.rotation, self.clock(lvl))

    def init_cov(self):
        return self.s0.clone()

    # -- SSCS's splitting (PSLD §2.6) --------------------------------------------------------------

    def split_linear(self, z, lvl_from, lvl_to, xi):
        """The linear part dz = A₀ z dB + G dW̄ in reverse time from lvl_from down to lvl_to, solved exactly:
        a draw from standard normal xi (A₀ = (Q − D)Σ∞⁻¹ has the same stationary N(0, Σ∞))."""
        E, S = self.relax(self.A0, self.clock(lvl_from) - self.clock(lvl_to))
        return blocks.apply(E, z) + blocks.apply(blocks.chol(S), xi)

    def split_score(self, z, score, lvl_from, lvl_to):
        """The score part dz = G Gᵀ (s + Σ∞⁻¹ z) dB, one Euler step from lvl_from down to lvl_to."""
        db = (self.clock(lvl_from) - self.clock(lvl_to)).unsqueeze(1).to(z.dtype)
        sinv = blocks.inv(self.sinf)
        return z + db * blocks.apply(self.GG, score + blocks.apply(sinv, z))


def psld(gamma: float = 0.01, nu=None, m_inv: float = 4.0, kappa: float = 0.04) -> CompleteRecipe:
    """PSLD (Pandey & Mandt 2023): D = ½ diag(Γ, Mν), Q = ½ [[0, −1], [1, 0]], M = 1/m_inv, i.e.
    dx = (β/2)(M⁻¹m − Γx) dt + √(Γβ) dw, dm = (β/2)(−x − νm) dt + √(Mνβ) dw. ν defaults to critical
    damping, (Γ − ν)² = 4M⁻¹; Γ = 0 is CLD (Dockhorn et al. 2022)."""
    mass = 1.0 / m_inv
    if nu is None:
        nu = gamma + 2.0 * math.sqrt(m_inv)
    D = [[0.5 * gamma, 0.0], [0.0, 0.5 * mass * nu]]
    Q = [[0.0, -0.5], [0.5, 0.0]]
    return CompleteRecipe(D, Q, mass=mass, kappa=kappa, name="cld" if gamma == 0 else "psld")
