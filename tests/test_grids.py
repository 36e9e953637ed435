"""The time grids: EDM's ρ-spacing in each process's own σ/α, its clips at σ_max = 80 and σ_min = 0.002."""

import math

import pytest
import torch

from udiff import conversions as C
from udiff.process import VE, VP, SubVP
from udiff.samplers import EDM_SIGMA_MAX, EDM_SIGMA_MIN, make_grid
from udiff.schedule import Cosine, VDMLinear, VPLinear


def _s(proc, schedule, t):
    """The process's own σ/α (conversions.ode_time) at times t."""
    return C.ode_time(proc, schedule.level(t, 1)).reshape(-1)


def test_edm_grid_is_karras_eq5_where_no_clip_applies():
    sched, proc, n = VDMLinear(-10.0, 5.0), VP(), 18  # s from e^{2.5} = 12.2 down to e^{-5} = 0.0067
    t = make_grid("edm", n, 0.0, sched, process=proc)
    s = _s(proc, sched, t)
    hi, lo = math.exp(2.5) ** (1 / 7), math.exp(-5.0) ** (1 / 7)
    want = (hi + torch.arange(n + 1, dtype=torch.float64) / n * (lo - hi)) ** 7
    assert len(t) == n + 1 and torch.allclose(s, want, rtol=1e-9)


def test_edm_grid_clips_at_sigma_max_and_sigma_min():
    sched, proc, n = Cosine(), VP(), 20  # s(1) = e^{7.5} = 1808, s(0) = e^{-7.5} = 0.00055
    s = _s(proc, sched, make_grid("edm", n, 0.0, sched, process=proc))
    assert len(s) == n + 1
    assert s[0] == pytest.approx(math.exp(7.5)) and s[1] == pytest.approx(EDM_SIGMA_MAX, rel=1e-9)
    assert s[-2] == pytest.approx(EDM_SIGMA_MIN, rel=1e-9) and s[-1] == pytest.approx(math.exp(-7.5))
    r = s[1:-1] ** (1 / 7)  # in between: EDM's spacing from 80 to 0.002
    assert torch.allclose(r[1:] - r[:-1], torch.full_like(r[1:], float(r[1] - r[0])), rtol=1e-7)


def test_edm_grid_is_spaced_in_each_processs_own_sigma_over_alpha():
    """On the VP-SDE schedule sub-VP's own s is about the VP clock's s squared; spaced in its own s, its grid has
    VP's s values (the probability-flow ODE in (z/α, s) is the same for every k = 1 process) but for the ends,
    s(1) and s(t_end), where each process starts and ends."""
    sched, n = VPLinear(), 30
    s = {p.name: _s(p, sched, make_grid("edm", n, sched.t_min, sched, process=p)) for p in (VP(), SubVP(), VE())}
    assert torch.allclose(s["sub-vp"][1:-1], s["vp"][1:-1], rtol=1e-9)
    assert torch.allclose(s["ve"], s["vp"], rtol=1e-12)
    assert float(s["sub-vp"][-1]) < 1e-5 < float(s["vp"][-1])


def test_sub_vp_own_gamma_inverts():
    p = SubVP()
    g = torch.linspace(-30.0, 15.0, 91, dtype=torch.float64)
    assert torch.allclose(p.schedule_gamma(p.own_gamma(g)), g, rtol=0, atol=1e-9)
    lvl = VDMLinear().level(torch.linspace(0.0, 1.0, 11, dtype=torch.float64), 1)
    tau = C.ode_time(p, lvl).reshape(-1)
    assert torch.allclose(tau.square().log(), p.own_gamma(lvl.gamma).reshape(-1), rtol=1e-9)
