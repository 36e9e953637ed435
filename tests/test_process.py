"""The VP process: conversions, SDE coefficients, ancestral/DDIM steps and ODE coordinates."""

import torch

from udiff.process import VP
from udiff.schedule import VDMLinear


def _levels(ts, ndim=1):
    return [VDMLinear().level(torch.tensor([t]), ndim) for t in ts]


def test_eps_x0_round_trip():
    p = VP()
    (lvl,) = _levels([0.4])
    x0, eps = torch.randn(5, 1, 3, dtype=torch.float64), torch.randn(5, 1, 3, dtype=torch.float64)
    z = p.perturb(x0, eps, lvl)
    assert torch.allclose(p.x0_from_eps(z, eps, lvl), x0) and torch.allclose(p.eps_from_x0(z, x0, lvl), eps)
    assert torch.allclose(p.score_from_eps(eps, lvl), -(z - lvl.alpha * x0) / lvl.sigma2)


def test_ancestral_step_is_the_gaussian_posterior():
    # q(z_s | z_t, x0) by conditioning the joint Gaussian of (z_s, z_t) given x0.
    p = VP()
    lt, ls = _levels([0.7, 0.5])
    x0 = torch.randn(4, 1, 2, dtype=torch.float64)
    zt = torch.randn(4, 1, 2, dtype=torch.float64)
    eps_hat = p.eps_from_x0(zt, x0, lt)
    a_ts = lt.alpha / ls.alpha
    var_ts = lt.sigma2 - a_ts ** 2 * ls.sigma2
    gain = ls.sigma2 * a_ts / lt.sigma2
    mean = ls.alpha * x0 + gain * (zt - lt.alpha * x0)
    var = ls.sigma2 - gain * a_ts * ls.sigma2
    zero = torch.zeros_like(zt)
    assert torch.allclose(p.ancestral_step(zt, eps_hat, lt, ls, zero), mean)
    one = torch.ones_like(zt)
    assert torch.allclose(p.ancestral_step(zt, eps_hat, lt, ls, one) - mean, var.sqrt().expand_as(zt))
    assert torch.allclose(var_ts, lt.sigma2 * -torch.expm1(ls.gamma - lt.gamma))
    # DDIM with eta = 1 is the same distribution
    assert torch.allclose(p.ddim_step(zt, eps_hat, lt, ls, zero, eta=1.0), mean)


def test_ode_coordinates_give_the_pf_ode():
    # d(z/alpha)/dtau = eps_hat in the coordinates; in t, dz/dt = f - g^2 s / 2.
    p = VP()
    s = VDMLinear()
    t, h = 0.6, 1e-6
    z = torch.randn(3, 1, 4, dtype=torch.float64)
    eps_hat = torch.randn(3, 1, 4, dtype=torch.float64)
    lvl, lvl2 = (s.level(torch.tensor([v], dtype=torch.float64), 1) for v in (t, t + h))
    u = p.ode_coords(z, lvl)
    dtau = p.ode_time(lvl2) - p.ode_time(lvl)
    z2 = p.ode_state(u + dtau * p.ode_slope(z, eps_hat, lvl), lvl2)
    dzdt = (z2 - z) / h
    assert torch.allclose(dzdt, p.reverse_drift(z, eps_hat, lvl, pf_ode=True), rtol=1e-4, atol=1e-5)


def test_gaussian_observation():
    p = VP()
    (lvl,) = _levels([0.3])
    z = torch.randn(2, 1, 3, dtype=torch.float64)
    w, y = p.gaussian_obs(z, lvl)
    assert torch.allclose(w, (lvl.alpha2 / lvl.sigma2)[:, 0].expand_as(w))
    assert torch.allclose(y, (lvl.alpha / lvl.sigma2)[:, 0] * z[:, 0])
