"""Schedules: endpoints, derivatives against autograd, inverses, and the VDM oracle values."""

import math

import pytest
import torch

from udiff.schedule import Cosine, Schedule, VDMLinear, VPLinear

SCHEDULES = [VDMLinear(), VDMLinear(-10.0, 8.0), VPLinear(), VPLinear(8.0, 8.0), Cosine(), Cosine(-12.0, 9.0)]


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: type(s).__name__)
def test_closed_form_derivative_matches_autograd(s):
    t = torch.linspace(max(s.t_min, 1e-3), 1.0, 50, dtype=torch.float64)
    auto = Schedule.dgamma(s, t)
    assert torch.allclose(s.dgamma(t), auto, rtol=1e-9, atol=1e-9)
    assert (s.dgamma(t) > 0).all()


def _vp_view(lvl):
    """What a level means for the VP process (udiff/process.py), and the phase-space clock B = softplus(gamma)."""
    from types import SimpleNamespace

    from udiff.phase_space import CompleteRecipe
    from udiff.process import VP

    vp = VP()
    g = lvl.gamma
    F, GG = vp.sde(lvl)
    return SimpleNamespace(alpha2=vp.a2(g), sigma2=vp.s2(g), alpha=vp.a2(g).sqrt(), sigma=vp.s2(g).sqrt(),
                           snr=vp.a2(g) / vp.s2(g), beta=GG.flatten() * lvl.dgamma.flatten(),
                           integrated_rate=CompleteRecipe.clock(lvl))


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: type(s).__name__)
def test_inverse(s):
    t = torch.linspace(max(s.t_min, 1e-3), 1.0, 33, dtype=torch.float64)
    assert torch.allclose(s.t_of_gamma(s.gamma(t)), t, atol=1e-9)
    assert torch.allclose(Schedule.t_of_gamma(s, s.gamma(t)), t, atol=1e-9)  # generic bisection


def test_vdm_oracle_values():
    s = VDMLinear()
    lvl = _vp_view(s.level(torch.tensor([0.0, 1.0]), event_ndim=1))
    # algorithms.md §5.1: sigma_0^2 = 1.674e-6, sigma_1^2 = 0.993307, SNR_max = 5.97e5, SNR_min = 6.74e-3
    assert lvl.sigma2[0].item() == pytest.approx(1.674e-6, rel=1e-3)
    assert lvl.sigma2[1].item() == pytest.approx(0.993307, rel=1e-6)
    assert lvl.snr[0].item() == pytest.approx(5.97e5, rel=1e-3)
    assert lvl.snr[1].item() == pytest.approx(6.74e-3, rel=1e-3)
    assert torch.allclose(lvl.alpha2 + lvl.sigma2, torch.ones(2, 1, 1, dtype=torch.float64))


def test_level_shapes_and_rate():
    s = VPLinear()
    raw = s.level(torch.tensor([0.3, 0.7]), event_ndim=3)
    assert raw.gamma.shape == (2, 1, 1, 1, 1)
    lvl = _vp_view(raw)
    # beta = sigma^2 gamma' equals the linear beta(t) of the VP-SDE
    assert torch.allclose(lvl.beta.flatten(), torch.tensor([0.1 + 0.3 * 19.9, 0.1 + 0.7 * 19.9], dtype=torch.float64))
    # integrated rate softplus(gamma) equals int_0^t beta
    assert torch.allclose(lvl.integrated_rate.flatten(), torch.tensor([0.1 * 0.3 + 0.5 * 19.9 * 0.09,
                                                                      0.1 * 0.7 + 0.5 * 19.9 * 0.49],
                                                                     dtype=torch.float64))


def test_cosine_is_cos_and_sin():
    s = Cosine(-15.0, 15.0)
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    lvl = _vp_view(s.level(t, 1))
    theta = s.theta_min + s.theta_span * t
    assert torch.allclose(lvl.alpha.flatten(), torch.cos(theta))
    assert torch.allclose(lvl.sigma.flatten(), torch.sin(theta))
    assert s.gamma_range == pytest.approx((-15.0, 15.0))
    assert math.isclose(float(s.gamma(torch.tensor([0.5], dtype=torch.float64))), 0.0, abs_tol=1e-9)
