"""Sequential Monte Carlo along the dilation path (issue 14): exact weights, every mode's weight, and log Z.

The sequence is pi_c(y) ∝ pi(y) exp(-c|y|^2/2) from c0 to 0 (docs/dilation-smc.md). The headline test runs the
sampler at its defaults with 10,000 particles on mixtures with known weights and log Z: narrow equidistant modes in
2-D and 8-D, the 3x3 grid (modes at unequal distances from the origin, where the path starts) and a 10-D mixture,
at 300 target-gradient evaluations per particle (600 for the narrow circle, whose path is the longest: its length
grows like 2 r / sigma, and log Z's variance like length^2 / evaluations). The paper's annealed Langevin
(`dilation`, at its defaults and the same budget) is run beside it on the same seeds. The other tests check the
pieces against closed forms: the first level's estimate of Z_c0, systematic resampling, the bisection, the re-
spacing, the per-seed contract and the budget, and that the reported standard error of log Z is honest over
repeated runs.
"""

import json
import math
import os
import statistics

import pytest
import torch
from conftest import RECIPES, invoke

from udiff import artifacts
from udiff import dilation as D
from udiff import metrics as M
from udiff import recipe as R
from udiff import smc as S
from udiff import targets as T
from udiff.errors import RecipeError
from udiff.rng import NoiseSource

N = 10_000


def _weights_error(target, x) -> float:
    f = M.mode_fractions(target.assign(x), len(target.mode_names))
    return float((f - target.weights).abs().max())


CASES = {
    # six modes of std 0.3 on a circle of radius 6 in 2-D, weights 0.05 ... 0.25 (issue 14's held-out case)
    "circle-2d-narrow": lambda: T.circle(modes=6, radius=6.0, std=0.3, weights=[0.05, 0.1, 0.15, 0.2, 0.25, 0.25]),
    # five modes of std 0.4 at distance 4 from the origin in 8-D (on +-e_1, +-e_2, e_3), weights 1:2:3:4:5
    "equidistant-8d": lambda: T.separated(dim=8, modes=5, distance=4.0, std=0.4),
    # the 3x3 grid, weights 1:...:9: the centre mode sits at the origin, the others at 4 and 5.7
    "grid-2d-3x3": lambda: T.grid(),
    # four modes of std 1 at distance 8 in 10-D, weights 1:2:3:4
    "separated-10d": lambda: T.separated(),
}
# target-gradient evaluations per particle, every sampler alike
BUDGETS = {"circle-2d-narrow": 600, "equidistant-8d": 300, "grid-2d-3x3": 300, "separated-10d": 300}


@pytest.mark.parametrize("name", list(CASES))
def test_smc_recovers_every_mode_weight_and_log_z_where_annealed_langevin_does_not(name):
    target, budget = CASES[name](), BUDGETS[name]
    x, used = D.generate(target.log_prob, target.dim, range(N), "dilation-smc", steps=budget)
    assert used["evals"] == budget and torch.isfinite(x).all()
    assert _weights_error(target, x) < 0.05
    assert abs(used["log_z"] - target.log_z) < 0.1
    assert abs(used["log_z"] - target.log_z) < 4 * used["log_z_stderr"]
    # the paper's sampler at its defaults, the same budget and seeds: no log Z, and the weights come out wrong
    y, plain = D.generate(target.log_prob, target.dim, range(N), "dilation", steps=budget)
    assert plain["evals"] == budget and "log_z" not in plain
    assert _weights_error(target, y) > 0.05


def test_the_reported_standard_error_of_log_z_is_honest_on_repeated_runs():
    """An unnormalized 2-D mixture (log Z = 3): twelve runs on disjoint seeds, each with its own error bar."""
    mix = T.gmm([[-2.0, 0.0], [3.0, 1.0]], weights=[0.3, 0.7], stds=[0.5, 0.8])
    def log_prob(x):
        return mix.log_prob(x) + 3.0

    est, se = [], []
    for r in range(12):
        _, used = D.generate(log_prob, 2, range(2000 * r, 2000 * (r + 1)), "dilation-smc", steps=100)
        est.append(used["log_z"])
        se.append(used["log_z_stderr"])
    z = [(e - 3.0) / s for e, s in zip(est, se)]
    assert max(abs(v) for v in z) < 4, z
    spread, claimed = statistics.stdev(est), statistics.mean(se)
    assert 0.5 < spread / claimed < 2.0, (spread, claimed)
    assert abs(statistics.mean(est) - 3.0) < 3 * spread / math.sqrt(12)


# ---------------------------------------------------------------------------------------------------
# The pieces, against closed forms


def test_the_first_level_and_an_exact_reweighting_estimate_the_tilted_normalizer():
    """pi = N(mu, s^2 I): Z_c = (1 + c s^2)^{-d/2} exp(-c |mu|^2 / (2 (1 + c s^2))) for the tilted density."""
    mu, s, d = torch.tensor([1.0, -0.5, 0.5]), 0.7, 3
    pi = T.gmm([mu.tolist()], stds=[s])

    def log_zc(c):
        return -0.5 * d * math.log(1 + c * s * s) - c * float(mu @ mu) / (2 * (1 + c * s * s))

    n = 200_000
    evaluate = D._evaluator(pi.log_prob, 50_000, 1.0, None)
    cloud = D._Cloud(evaluate, NoiseSource(range(n)), 4, d, 4.0, "cpu")
    assert evaluate.evals == 1
    assert torch.allclose(cloud.log_z, torch.full((4,), log_zc(4.0), dtype=torch.float64), atol=0.02)
    cloud.reweight(4.0, 2.0)  # no moves: importance weights from pi_4 to pi_2, still no evaluation
    assert evaluate.evals == 1
    assert torch.allclose(cloud.log_z, torch.full((4,), log_zc(2.0), dtype=torch.float64), atol=0.03)
    lz, se = S.pooled_log_z(cloud.log_z, cloud.pops.sizes)
    assert abs(lz - log_zc(2.0)) < 0.02 and 0 < se < 0.02


def test_systematic_resampling_gives_every_particle_its_share():
    pops = S.Populations(11, 2)                                       # blocks of 5 and 6
    assert pops.sizes.tolist() == [5, 6] and pops.pop.tolist() == [0] * 5 + [1] * 6
    w = torch.tensor([0.5, 0.1, 0.1, 0.2, 0.1, 0.05, 0.05, 0.3, 0.3, 0.2, 0.1], dtype=torch.float64)
    logw = pops.normalize(torch.log(w))
    assert torch.allclose(pops.logsumexp(logw), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    expected = torch.exp(logw) * pops.sizes[pops.pop]                  # M W_i offspring on average
    mean = torch.zeros(11, dtype=torch.float64)
    for u in torch.linspace(0.005, 0.995, 100, dtype=torch.float64):
        anc = pops.systematic(logw, torch.stack([u, 1 - u]), torch.tensor([True, True]))
        assert (pops.pop[anc] == pops.pop).all()                        # ancestors stay in their block
        count = torch.bincount(anc, minlength=11).double()
        assert ((count - expected.floor() >= 0) & (count - expected.ceil() <= 0)).all()
        mean += count / 100
    assert torch.allclose(mean, expected, atol=0.011)
    keep = pops.systematic(logw, torch.tensor([0.3, 0.3], dtype=torch.float64), torch.tensor([False, True]))
    assert keep[:5].tolist() == list(range(5))                          # a block not asked keeps its particles


def test_the_next_level_costs_exactly_the_bound_and_the_respaced_path_keeps_its_ends():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(5000, 3, dtype=torch.float64, generator=g) * 0.3 + 1.0
    logw = torch.full((5000,), -math.log(5000), dtype=torch.float64)
    s = 0.5 * (y * y).sum(1)
    nxt = S.bisect_next(lambda b: S.conditional_ess(logw, (10.0 - b) * s), 10.0, 0.9)
    assert 0 < nxt < 10 and S.conditional_ess(logw, (10.0 - nxt) * s) == pytest.approx(0.9, abs=1e-9)
    assert S.bisect_next(lambda b: S.conditional_ess(logw, (1e-4 - b) * s), 1e-4, 0.9) == 0.0
    path = [(64.0, 0.01, 0.9), (16.0, 0.03, 0.9), (4.0, 0.1, 0.9), (1.0, 0.2, 0.95)]
    plan = D.respace(path, 0.3, 20)
    cs = [c for c, _ in plan]
    assert len(plan) == 21 and cs[0] == 64.0 and plan[-1] == (0.0, 0.3)
    assert all(a > b for a, b in zip(cs, cs[1:]))
    same = D.respace(path[:3] + [(1.0, 0.2, 0.9)], 0.3, 4)             # equal pilot steps: the pilot's own levels
    assert [round(c, 9) for c, _ in same] == [64.0, 16.0, 4.0, 1.0, 0.0]


def test_the_start_is_the_smallest_rung_with_enough_first_level_ess():
    """Narrow modes far from the origin need a large c0; the 2-D grid starts broad (N(0, 16 I) covers it)."""
    for target, expect in ((T.grid(), 1 / 16), (T.circle(modes=6, radius=6.0, std=0.3), None)):
        evaluate = D._evaluator(target.log_prob, 100_000, 1.0, None)
        xi = NoiseSource(range(2000))(0, (2,)).double()
        c0, lp, _ = D.start_contraction(evaluate, xi)
        w = torch.softmax(lp, 0)
        assert 1 / float((w * w).sum()) / 2000 >= D.SMC_START_ESS
        if expect:
            assert c0 == expect
        else:
            assert c0 >= 1024                                           # (r / s^2)^2 = 400: merged modes
        lp4, _ = evaluate(xi / math.sqrt(c0 / 4))                      # one rung broader is not enough
        w4 = torch.softmax(lp4, 0)
        assert 1 / float((w4 * w4).sum()) / 2000 < D.SMC_START_ESS


# ---------------------------------------------------------------------------------------------------
# Seeds, budget, registry


def test_a_block_depends_on_its_own_seeds_and_the_pilot_not_on_batches_or_other_blocks():
    target = T.separated(dim=3, modes=2, distance=3.0)
    kw = {"steps": 40, "populations": 4}
    seeds = list(range(100, 1300))                                     # the pilot, then 3 blocks of 233 or 234
    a, used = D.generate(target.log_prob, 3, seeds, "dilation-smc", **kw)
    b, _ = D.generate(target.log_prob, 3, seeds, "dilation-smc", batch_size=7, **kw)
    assert used["evals"] == 40 and used["populations"] == 4 and torch.equal(a, b)
    other = seeds[:966] + list(range(5000, 5234))                      # new seeds in the last block only
    c, _ = D.generate(target.log_prob, 3, other, "dilation-smc", **kw)
    assert torch.equal(a[:966], c[:966]) and not torch.equal(a[966:], c[966:])
    few, used = D.generate(target.log_prob, 3, range(160), "dilation-smc", **kw)
    assert used["populations"] == 2 and few.shape == (160, 3)          # a pilot of 80, one block of 80
    _, used = D.generate(target.log_prob, 3, range(70), "dilation-smc", **kw)
    assert used["populations"] == 1 and math.isnan(used["log_z_stderr"]) and math.isfinite(used["log_z"])


def test_the_budget_is_spent_exactly_and_one_too_small_for_the_path_is_refused():
    target = CASES["circle-2d-narrow"]()
    ticks = []
    x, used = D.generate(target.log_prob, 2, range(1000), "dilation-smc", steps=120, progress=ticks.append)
    assert used["evals"] == 120 and sum(ticks) == pytest.approx(120) and torch.isfinite(x).all()
    assert used["levels"] == (120 - 1 - 12) // 2 > used["pilot_levels"]   # one evaluation at c0, 2 moves a level,
                                                                           # a tenth of the budget at c = 0
    with pytest.raises(RecipeError, match="do not pay for dilation-smc's path on this target.*raise steps"):
        D.generate(target.log_prob, 2, range(1000), "dilation-smc", steps=40)
    assert D.iterations("dilation-smc", steps=40) == 40


def test_the_recipe_offers_every_sampler_of_the_registry_and_defaults_to_smc():
    assert D.SAMPLERS == R.TARGET_SAMPLERS
    assert R.TargetSampleSpec().sampler == "dilation-smc"
    for text, needle in {"[sample]\ncess = 1.0": "[sample] cess: must be < 1",
                         "[sample]\nmoves = 0": "[sample] moves: must be >= 1",
                         "[sample]\nc0 = 0.0": "[sample] c0: must be > 0.0"}.items():
        with pytest.raises(RecipeError, match=needle.replace("[", "\\[").replace("]", "\\]")):
            R.loads('[target]\nkind = "grid"\n' + text)


def test_cli_reports_log_z_with_its_error_and_the_exact_value(runner, tmp_path):
    out = str(tmp_path / "s.safetensors")
    r = invoke(runner, ["sample", os.path.join(RECIPES, "dilation-grid.toml"), "-n", "400", "-o", out, "--json",
                        "--steps", "60"])
    rec = json.loads(r.stdout)
    assert rec["sampler"] == "dilation-smc" and rec["evals"] == 60 and rec["log_z_exact"] == 0.0
    assert abs(rec["log_z_error"]) < 5 * rec["log_z_stderr"] and rec["resamples"] > 0
    assert rec["levels"] == (60 - 1 - 6) // 2                          # one evaluation at c0, 2 moves a level
    meta = artifacts.load(out, "samples").json("udiff.samples")
    assert meta["log_z"] == rec["log_z"] and artifacts.load(out).json("udiff.target")["log_z"] == 0.0
    r = invoke(runner, ["sample", os.path.join(RECIPES, "dilation-grid.toml"), "-n", "40", "-o", out, "--steps", "60"])
    assert "log Z" in r.stderr and "(exact 0)" in r.stderr and "populations" in r.stderr
