"""The processes' kernels and the conversions over them: VP, VE, sub-VP and the phase-space kernel near B = 0.

Every process is checked against what it must be by definition: its SDE (per unit gamma) integrated by an
independent solver gives its mean map and covariance; the transition composes to the marginal; the ancestral
step is the Gaussian posterior; the ODE coordinates give the probability-flow ODE. The phase-space covariance
is checked against 50-digit arithmetic (mpmath) down to B = 1e-12, where a difference of near-equal terms
would lose every digit.
"""

import math

import pytest
import torch

from udiff import conversions as C
from udiff.phase_space import psld
from udiff.process import VE, VP, SubVP
from udiff.schedule import VDMLinear

SCALAR = {"vp": VP(), "ve": VE(), "sub-vp": SubVP()}


def _level(g: float, dg: float = 1.0, ndim: int = 1):
    from udiff.schedule import NoiseLevel

    shape = (1, 1) + (1,) * ndim
    return NoiseLevel(t=torch.tensor([0.5], dtype=torch.float64), gamma=torch.full(shape, g, dtype=torch.float64),
                      dgamma=torch.full(shape, dg, dtype=torch.float64))


def _levels(ts, ndim=1):
    return [VDMLinear().level(torch.tensor([t]), ndim) for t in ts]


def test_vp_kernel_is_vdms():
    p = VP()
    (lvl,) = _levels([0.4])
    a2, s2 = torch.sigmoid(-lvl.gamma), torch.sigmoid(lvl.gamma)
    x0, eps = torch.randn(5, 1, 3, dtype=torch.float64), torch.randn(5, 1, 3, dtype=torch.float64)
    z = C.perturb(p, x0, eps, lvl)
    assert torch.allclose(z, a2.sqrt() * x0 + s2.sqrt() * eps)
    assert torch.allclose(C.x0_from_eps(p, z, eps, lvl), x0) and torch.allclose(C.eps_from_x0(p, z, x0, lvl), eps)
    assert torch.allclose(C.score_from_eps(p, eps, lvl), -(z - a2.sqrt() * x0) / s2)
    w, y = C.observation(p, z, lvl)
    assert torch.allclose(w, (a2 / s2)[:, 0].expand_as(w)) and torch.allclose(y, (a2.sqrt() / s2)[:, 0] * z[:, 0])


@pytest.mark.parametrize("name", sorted(SCALAR))
def test_sde_integrates_to_the_kernel(name):
    """d a/dγ = F a and d s²/dγ = 2 F s² + GG, solved by RK4 from γ = −20 (a² → 1, s² → 0) to γ."""
    p = SCALAR[name]

    def rhs(g, y):
        F, GG = (v.reshape(()) for v in p.sde(_level(g)))
        return torch.stack([F * y[0], 2 * F * y[1] + GG])

    g0, g1, n = -20.0, 1.5, 4000
    y = torch.stack([p.mean_map(_level(g0)).reshape(()), p.cov(_level(g0)).reshape(())])
    h = (g1 - g0) / n
    for i in range(n):
        g = g0 + i * h
        k1 = rhs(g, y)
        k2 = rhs(g + h / 2, y + h / 2 * k1)
        k3 = rhs(g + h / 2, y + h / 2 * k2)
        k4 = rhs(g + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    lvl = _level(g1)
    assert float(y[0]) == pytest.approx(float(p.mean_map(lvl)), rel=1e-7)
    assert float(y[1]) == pytest.approx(float(p.cov(lvl)), rel=1e-7)


@pytest.mark.parametrize("name", sorted(SCALAR))
def test_transition_composes_and_ancestral_step_is_the_posterior(name):
    p = SCALAR[name]
    ls, lt = _level(-2.0), _level(0.7)
    phi, Q = (v.reshape(()) for v in p.transition(ls, lt))
    a_s, a_t = float(p.mean_map(ls)), float(p.mean_map(lt))
    S_s, S_t = float(p.cov(ls)), float(p.cov(lt))
    assert float(phi) == pytest.approx(a_t / a_s, rel=1e-12)
    assert float(phi) ** 2 * S_s + float(Q) == pytest.approx(S_t, rel=1e-12)
    # posterior of z_s given z_t and x0, by conditioning the joint Gaussian
    x0 = torch.randn(4, 1, 2, dtype=torch.float64)
    zt = torch.randn(4, 1, 2, dtype=torch.float64)
    eps_hat = C.eps_from_x0(p, zt, x0, lt)
    gain = S_s * float(phi) / S_t
    mean = a_s * x0 + gain * (zt - a_t * x0)
    var = S_s - gain * float(phi) * S_s
    m, P = C.posterior(p, zt, eps_hat, lt, ls)
    assert torch.allclose(m, mean) and float(P.reshape(())) == pytest.approx(var, rel=1e-10)
    zero = torch.zeros_like(zt)
    assert torch.allclose(C.ancestral_step(p, zt, eps_hat, lt, ls, zero), mean)
    assert torch.allclose(C.ddim_step(p, zt, eps_hat, lt, ls, zero, eta=1.0), mean)  # eta = 1 is ancestral


def test_vp_posterior_is_vdms_stable_form():
    p = VP()
    lt, ls = _levels([0.7, 0.5])
    z, eps = torch.randn(4, 1, 2, dtype=torch.float64), torch.randn(4, 1, 2, dtype=torch.float64)
    c = -torch.expm1(ls.gamma - lt.gamma)
    a_s, a_t, s_t = torch.sigmoid(-ls.gamma).sqrt(), torch.sigmoid(-lt.gamma).sqrt(), torch.sigmoid(lt.gamma).sqrt()
    mean, var = C.posterior(p, z, eps, lt, ls)
    assert torch.allclose(mean, a_s / a_t * (z - s_t * c * eps))
    assert torch.allclose(var.reshape(()), (c * torch.sigmoid(ls.gamma)).reshape(()))


@pytest.mark.parametrize("name", sorted(SCALAR) + ["psld", "cld"])
def test_ode_coordinates_give_the_pf_ode(name):
    """A linear step in the ODE's coordinates, mapped back, moves z along the probability-flow drift. Central
    differences (error O(h^2)): the one-sided ones flaked on CLD, whose second derivative is large."""
    p = SCALAR.get(name) or psld(0.01 if name == "psld" else 0.0)
    s = VDMLinear()
    t, h = 0.6, 1e-5
    z = torch.randn(3, p.k, 4, dtype=torch.float64)
    eps_hat = torch.randn(3, p.predicted, 4, dtype=torch.float64)
    lvl, plus, minus = (s.level(torch.tensor([v], dtype=torch.float64), 1) for v in (t, t + h, t - h))
    u, slope = C.ode_coords(p, z, lvl), C.ode_slope(p, z, eps_hat, lvl)
    moved = [C.ode_state(p, u + (C.ode_time(p, lv) - C.ode_time(p, lvl)) * slope, lv) for lv in (plus, minus)]
    dzdt = (moved[0] - moved[1]) / (2 * h)
    assert torch.allclose(dzdt, C.reverse_drift(p, z, eps_hat, lvl, pf_ode=True), rtol=1e-4, atol=1e-5)


def test_ve_and_sub_vp_are_song_et_als():
    """VE: z = x + σ ε with σ² = e^γ, prior N(0, σ(1)²); sub-VP on the VP clock B = softplus(γ): mean e^{-B/2},
    std 1 − e^{−B}, and g² = β (1 − e^{−2B}) per unit t."""
    g = 1.3
    lvl = _level(g, dg=2.0)
    ve, sub = VE(), SubVP()
    assert float(ve.cov(lvl)) == pytest.approx(math.exp(g)) and float(ve.mean_map(lvl)) == 1.0
    assert float(ve.prior_cov(lvl)) == pytest.approx(math.exp(g))
    B = math.log1p(math.exp(g))
    assert float(sub.mean_map(lvl)) == pytest.approx(math.exp(-B / 2))
    assert float(sub.cov(lvl)) == pytest.approx((1 - math.exp(-B)) ** 2)
    beta = 2.0 / (1 + math.exp(-g))  # dB/dt = sigmoid(γ) γ'
    F, GG = sub.sde(lvl)
    assert float(F * 2.0) == pytest.approx(-beta / 2)
    assert float(GG * 2.0) == pytest.approx(beta * (1 - math.exp(-2 * B)))


# ------------------------------------------------------------------------------------------------
# The phase-space kernel near B = 0 (issue: CLD lost positive-definiteness at B < 1e-5)


def _exact_cov(proc, b: float):
    """∫₀^b e^{Fs} 2D e^{Fᵀs} ds in 50-digit arithmetic: the ODE's exact series with mpmath."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    F = mpmath.matrix(proc.F.tolist())
    x = mpmath.matrix((2 * proc.D).tolist())
    total = mpmath.matrix(2, 2)
    term_b = mpmath.mpf(b)
    for n in range(400):
        total += x * (term_b / mpmath.factorial(n + 1))
        x = F * x + x * F.T
        term_b *= b
        if n > 10 and mpmath.mnorm(x, 1) * term_b / mpmath.factorial(n + 2) < mpmath.mpf(10) ** -45:
            break
    return [[float(total[i, j]) for j in range(2)] for i in range(2)]


@pytest.mark.parametrize("gamma", [0.0, 0.01])
@pytest.mark.parametrize("b", [1e-12, 1e-7, 1e-5, 3e-3, 0.2, 1.5, 6.0])
def test_phase_space_covariance_is_accurate_down_to_b_zero(gamma, b):
    proc = psld(gamma, kappa=0.0)
    _, S = proc.relax(proc.F, torch.tensor([b], dtype=torch.float64))
    exact = torch.tensor(_exact_cov(proc, b), dtype=torch.float64)
    assert torch.allclose(S[0], exact, rtol=1e-10, atol=0.0), (S, exact)
    assert float(torch.linalg.det(S[0])) > 0  # positive definite, with the position variance ~ b^3


def test_cld_at_vdms_gamma_min_is_positive_definite_and_samples():
    """CLD with the default schedule (vdm-linear, γ(0) = −13.3, B ≈ 1.7e-6): kernel PD, conversions finite."""
    proc = psld(0.0)
    lvl = VDMLinear().level(torch.tensor([0.0], dtype=torch.float64), 1)
    S = proc.cov(lvl)
    assert float(torch.linalg.det(S.reshape(2, 2))) > 0
    x0 = torch.randn(8, 1, 3, dtype=torch.float64)
    eps = torch.randn(8, 2, 3, dtype=torch.float64)
    z = C.perturb(proc, x0, eps, lvl)
    assert torch.allclose(C.x0_from_eps(proc, z, eps[:, 1:], lvl), x0, atol=1e-6)
    assert torch.isfinite(C.score_from_eps(proc, eps[:, 1:], lvl)).all()
