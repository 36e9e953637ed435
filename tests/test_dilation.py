"""Sampling unnormalized targets (issue 7): the dilation path's score, its samplers, metrics, recipes and CLI.

The mode-weight tests pin down what the dilation path does and does not do (see udiff/dilation.py): the path
itself carries mode weights from lambda_min to 1 without changing them; from its start at the origin, its
contractions act like a Gaussian factor centred there, so modes equidistant from the origin get their weights
(asserted on a 2-D circle of 9 modes and a 10-D mixture of 4, where plain Langevin does not), while the 3x3
grid's centre mode takes more than its weight (a strict xfail: the issue's criterion on that grid, which
dilation-smc meets by weighting the tilt: tests/test_dilation_smc.py).
"""

import json
import math
import os
import subprocess

import pytest
import torch

from conftest import PYTHON, RECIPES, invoke, write
from udiff import artifacts
from udiff import dilation as D
from udiff import metrics as M
from udiff import recipe as R
from udiff import targets as T
from udiff.errors import RecipeError
from udiff.rng import NoiseSource

N = 10_000  # particles of the mode-weight tests (the issue's number)


def _weights_error(target, x) -> float:
    f = M.mode_fractions(target.assign(x), len(target.mode_names))
    return float((f - target.weights).abs().max())


def _full_cov_gmm():
    means = [[-3.0, 0.5, 0.0], [2.0, -1.0, 1.0]]
    covs = [[[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]], [[0.4, 0.0, 0.0], [0.0, 2.0, -0.5], [0.0, -0.5, 1.0]]]
    return T.gmm(means, weights=[0.3, 0.7], covs=covs)


# ---------------------------------------------------------------------------------------------------
# The path: density, score, and the scaling identity


@pytest.mark.parametrize("lam", [1e-3, 0.2, 1.0])
def test_dilation_score_is_autograd_of_log_mu(lam):
    """log mu_lam = log pi(x/sqrt(lam)) - (d/2) log lam is the exact density of sqrt(lam) X, and its score matches."""
    pi = _full_cov_gmm()
    mu = pi.dilated(lam)  # the law of sqrt(lam) X in closed form: means sqrt(lam) m_k, covariances lam C_k
    x = (torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * 2 * math.sqrt(lam)).double()
    xg = x.clone().requires_grad_(True)
    log_mu = torch.logsumexp(mu.component_log_probs_f64(xg), 1)
    (g_mu,) = torch.autograd.grad(log_mu.sum(), xg)
    lp, score = D.value_and_score(lambda y: torch.logsumexp(pi.component_log_probs_f64(y), 1), x, lam)
    assert torch.allclose(lp, log_mu.detach(), atol=1e-9)
    assert torch.allclose(score, g_mu, atol=1e-9)
    # and the closed form lam^{-1/2} (grad log pi)(x / sqrt(lam))
    y = (x / math.sqrt(lam)).requires_grad_(True)
    (g_pi,) = torch.autograd.grad(torch.logsumexp(pi.component_log_probs_f64(y), 1).sum(), y)
    assert torch.allclose(score, g_pi / math.sqrt(lam), atol=1e-9)


@pytest.mark.parametrize("mala", [False, True])
def test_the_sampler_takes_langevin_steps_h_lam_on_mu_lam(mala):
    """Run in y = x/sqrt(lam), the sampler is exactly Langevin (or MALA) on mu_lam with step h lam in x."""
    pi = T.grid()
    noise = NoiseSource(range(8))
    h, lam_min = 0.05, 1e-3
    lams, per = D.lambda_levels("geometric", 4, lam_min), D.plan_dilation(16, 4, 0, mala)
    x, used = D.sample_dilation(pi.log_prob, 2, noise, steps=16, levels=4, lambda_min=lam_min, step_size=h, mala=mala)
    ref = math.sqrt(h * lam_min) * noise(0, (2,))
    stream, accepted = 1, 0.0
    for lam, n in zip(lams, per):
        s = h * lam
        lp, g = D.value_and_score(pi.log_prob, ref, lam)
        for _ in range(n):
            z = noise(stream, (2,))
            prop = ref + s * g + math.sqrt(2 * s) * z
            lpp, gp = D.value_and_score(pi.log_prob, prop, lam)
            if mala:  # Metropolis-Hastings with the Langevin proposal on log mu_lam, written out in x
                back = ref - prop - s * gp
                log_a = (lpp - lp - (back * back).sum(1) / (4 * s) + (z * z).sum(1) / 2).double()
                ok = torch.log(D.uniforms(noise, stream + 1, "cpu")) < log_a
                accepted += float(torch.exp(log_a.clamp(max=0)).sum())
                prop, lpp, gp = (torch.where(ok[:, None], prop, ref), torch.where(ok, lpp, lp),
                                 torch.where(ok[:, None], gp, g))
            ref, lp, g = prop, lpp, gp
            stream += 2
    assert used["evals"] == 16
    assert torch.allclose(x, ref, atol=1e-5)
    if mala:
        assert used["acceptance"] == pytest.approx(accepted / (8 * sum(per)), abs=1e-6)


def test_the_sampler_is_exact_where_x_would_underflow():
    """At lambda_min = 1e-300, x = sqrt(lam) y is 1e-150 y and the step h lam is 0 in float32: y carries it."""
    pi = T.separated(dim=3, modes=2, distance=3.0)
    noise = NoiseSource(range(6))
    x, _ = D.sample_dilation(pi.log_prob, 3, noise, steps=20, levels=20, lambda_min=1e-300, step_size=0.1,
                             lambda_grid="log-quadratic")
    lams = D.lambda_levels("log-quadratic", 20, 1e-300)
    y = math.sqrt(0.1) * noise(0, (3,))
    for k, lam in enumerate(lams):  # y shrinks by sqrt(lam_{k-1} / lam_k), then one step on pi
        y = y * math.sqrt(lams[k - 1] / lam) if k else y
        _, g = D.value_and_score(pi.log_prob, y)
        y = y + 0.1 * g + math.sqrt(0.2) * noise(1 + 2 * k, (3,))
    assert torch.isfinite(x).all() and torch.allclose(x, y, atol=1e-5)


def test_lambda_grids_and_budget_plans():
    assert D.GRIDS == R.LAMBDA_GRIDS  # the recipe's choices (recipe.py imports no torch) are the sampler's grids
    for kind in R.LAMBDA_GRIDS:
        lams = D.lambda_levels(kind, 7, 1e-4)
        assert lams[0] == pytest.approx(1e-4) and lams[-1] == pytest.approx(1.0, abs=1e-12)
        assert all(a < b for a, b in zip(lams, lams[1:]))
    assert D.lambda_levels("geometric", 1, 1e-4) == [1.0]
    # the pull towards the origin at the start: ln(1/lambda_min) / (h steps) for log-quadratic, half that geometric
    per = D.plan_dilation(1000, 100, 0, False)
    assert D.contraction(D.lambda_levels("log-quadratic", 100, 1e-100), per, 0.1) == pytest.approx(
        math.log(1e100) / 100, rel=0.02)
    assert D.contraction(D.lambda_levels("geometric", 100, 1e-100), per, 0.1) == pytest.approx(
        math.log(1e100) / 200, rel=0.02)
    assert sum(D.plan_dilation(1000, 100, 0, False)) == 1000
    assert sum(D.plan_dilation(1000, 100, 10, True)) + 100 + 10 == 1000
    with pytest.raises(RecipeError, match="raise steps or lower levels"):
        D.plan_dilation(150, 100, 0, True)


@pytest.mark.parametrize("sampler,extra", [("dilation", {}), ("dilation", {"mala": True, "final_steps": 5}),
                                           ("ula", {}), ("mala", {"target_accept": 0.6}), ("convolution-mc", {})])
def test_every_sampler_spends_exactly_its_budget_and_ignores_batches(sampler, extra):
    target = T.separated(dim=3, modes=2, distance=3.0)
    kw = dict(steps=64, levels=8, lambda_min=1e-3, step_size=0.1, mc_samples=8, **extra)
    a, used = D.generate(target.log_prob, 3, range(10, 16), sampler, batch_size=1, **kw)
    b, _ = D.generate(target.log_prob, 3, range(10, 16), sampler, batch_size=4, **kw)
    c, _ = D.generate(target.log_prob, 3, [12], sampler, **kw)
    assert used["evals"] == 64 and torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a[2], c[0], atol=1e-5)
    assert not torch.allclose(a[0], a[1])


# ---------------------------------------------------------------------------------------------------
# Mode weights with 10,000 particles (the issue's number)

# Modes equidistant from the origin, where the path starts: 9 unequal modes on a circle in 2-D, 4 far-apart unequal
# modes in 10-D. The log-quadratic grid's contraction towards the origin fades linearly (our choice).
EQUIDISTANT = {"circle-2d-9": (T.circle, 0.05), "separated-10d-4": (T.separated, 0.1)}
BUDGET = dict(steps=300, levels=30, lambda_min=1e-40, lambda_grid="log-quadratic")


@pytest.mark.parametrize("name", list(EQUIDISTANT))
def test_the_dilation_path_recovers_every_mode_weight_where_plain_langevin_does_not(name):
    make, h = EQUIDISTANT[name]
    target = make()
    x, used = D.generate(target.log_prob, target.dim, range(N), "dilation", step_size=h, **BUDGET)
    assert used["evals"] == 300 and torch.isfinite(x).all()
    assert _weights_error(target, x) < 0.05
    for plain in ("ula", "mala"):  # the same start, the same 300 target-gradient evaluations per particle
        y, used = D.generate(target.log_prob, target.dim, range(N), plain, step_size=h, **BUDGET)
        assert used["evals"] == 300 and _weights_error(target, y) > 0.05, plain


@pytest.mark.parametrize("name", ["grid-2d-9", "separated-10d-4"])
def test_the_path_carries_every_mode_weight_from_lambda_min_to_1(name):
    """Particles distributed as mu_lambda_min reach pi with every mode weight within 0.05."""
    make, h = {"grid-2d-9": (T.grid, 0.05), "separated-10d-4": (T.separated, 0.1)}[name]
    target = make()
    lam0 = 1e-2
    exact = target.sample(N, torch.Generator().manual_seed(1)).float()
    x, used = D.sample_dilation(target.log_prob, target.dim, NoiseSource(range(N)), steps=300, levels=20,
                                lambda_min=lam0, step_size=h, x0=math.sqrt(lam0) * exact)
    assert used["evals"] == 300
    assert _weights_error(target, x) < 0.05


def test_plain_langevin_misses_the_grid_weights_with_the_same_budget():
    target = T.grid()
    x, used = D.generate(target.log_prob, 2, range(N), "ula", steps=300, step_size=0.05, lambda_min=1e-4)
    assert used["evals"] == 300 and _weights_error(target, x) > 0.3  # stuck in the central mode


@pytest.mark.xfail(strict=True, reason="unattainable for the unweighted annealed Langevin on a path that starts "
                   "from a point: in y = x/sqrt(lam) the contractions are a drift -c y, so particles split between "
                   "modes as under pi(y) exp(-c|y|^2/2), which hands the grid's centre mode (at the path's start) "
                   "more than its weight; dilation-smc weights that tilt away (tests/test_dilation_smc.py)")
@pytest.mark.parametrize("grid", ["geometric", "log-quadratic"])
def test_issue7_on_the_3x3_grid_whose_centre_mode_sits_at_the_start(grid):
    target = T.grid()
    x, _ = D.generate(target.log_prob, 2, range(N), "dilation", step_size=0.05, **{**BUDGET, "lambda_grid": grid})
    assert _weights_error(target, x) < 0.05


# ---------------------------------------------------------------------------------------------------
# Targets and metrics


def test_targets_are_normalized_and_their_exact_samples_match():
    g = torch.Generator().manual_seed(0)
    rings = T.rings()
    grid = torch.linspace(-8, 8, 801)
    xx = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2).double()
    mass = float(rings.log_prob(xx.float()).double().exp().sum()) * (16 / 800) ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)
    draws = rings.sample(40000, g)
    f = M.mode_fractions(rings.assign(draws.float()), 3)
    assert torch.allclose(f, torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=torch.float64), atol=0.01)
    r = draws.norm(dim=1)[rings.assign(draws.float()) == 2]
    assert float(r.mean()) == pytest.approx(6.0 + 0.2 ** 2 / 6.0, abs=0.01)  # E|x| on a ring, to first order
    funnel = T.funnel(dim=3)
    v = funnel.sample(50000, g)[:, 0]
    assert float(v.std()) == pytest.approx(3.0, rel=0.02)
    x = funnel.sample(7, g).float()
    ref = (torch.distributions.Normal(0, 3.0).log_prob(x[:, 0])
           + torch.distributions.Normal(0, torch.exp(0.5 * x[:, :1])).log_prob(x[:, 1:]).sum(1))
    assert torch.allclose(funnel.log_prob(x), ref, atol=1e-4)
    gmm = _full_cov_gmm()
    s = gmm.sample(100000, g)
    assert torch.allclose(s.mean(0), (gmm.weights[:, None] * gmm.means).sum(0), atol=0.02)


def test_metrics_tell_exact_samples_from_wrong_ones():
    target = T.grid()
    g = torch.Generator().manual_seed(3)
    good = M.evaluate(target, target.sample(4000, g).float())
    bad = M.evaluate(target, target.sample(4000, g).float() * 0.7)
    assert good["mode_weight_error"] < 0.03 and good["mmd"] < 0.05 and good["sw2"] < 0.3
    assert bad["mmd"] > 3 * good["mmd"] and bad["sw2"] > 3 * good["sw2"]
    assert sum(good["mode_weights"]) == pytest.approx(1.0, abs=1e-3)
    nan = target.sample(100, g).float()
    nan[:10] = float("nan")
    assert M.evaluate(target, nan)["nonfinite"] == 10


def test_fit_gmm_recovers_a_mixture():
    truth = T.gmm([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], weights=[0.5, 0.3, 0.2], stds=[1.0, 0.5, 0.8])
    x = truth.sample(6000, torch.Generator().manual_seed(0))
    fit = T.fit_gmm(x, 3, iterations=50)
    order = torch.cdist(fit.means, truth.means).argmin(1)
    assert torch.allclose(fit.weights, truth.weights[order], atol=0.02)
    assert torch.allclose(fit.means, truth.means[order], atol=0.1)


# ---------------------------------------------------------------------------------------------------
# Recipes


def test_target_recipes_load_round_trip_and_refuse_model_sections():
    for name in ("gmm", "grid", "circle", "rings", "funnel", "separated", "digits"):
        path = os.path.join(RECIPES, f"dilation-{name}.toml")
        rec = R.load(path, target=True)
        assert isinstance(rec, R.TargetRecipe) and rec.sample.sampler == "dilation-smc"
        assert R.from_json(rec.to_json(), "stored") == rec and R.loads(rec.toml()) == rec
    with pytest.raises(RecipeError, match="is a target recipe"):
        R.load(os.path.join(RECIPES, "dilation-grid.toml"))
    with pytest.raises(RecipeError, match="has no \\[target\\] section"):
        R.load(os.path.join(RECIPES, "digits.toml"), target=True)
    assert isinstance(R.load(os.path.join(RECIPES, "digits.toml")), R.Recipe)
    cases = {
        '[target]\nkind = "grid"\n[train]\nsteps = 1': "[train]: not a section of a target recipe",
        "[target]\n": "[target] kind: missing",
        '[target]\nkind = "gmm"\nmeans = [[0.0, 0.0], [1.0]]': "[target] means: must be K lists",
        '[target]\nkind = "gmm"\nmeans = [[0.0]]\nstds = [1.0]\ncovs = [[[1.0]]]': "give either stds or covs",
        '[target]\nkind = "gmm"\nmeans = [[0.0, 0.0]]\ncovs = [[[1.0, 0.0]]]': "needs 1 matrices of 2x2",
        '[target]\nkind = "grid"\nweights = [1.0, 2.0]': "has 9 modes",
        '[target]\nkind = "separated"\ndim = 2\nmodes = 5': "at most 2 * dim = 4 modes",
        '[target]\nkind = "funnel"\n[sample]\nsampler = "heun"': "[sample] sampler: 'heun' is not allowed",
        '[target]\nkind = "funnel"\n[sample]\ntarget_accept = 1.0': "[sample] target_accept: must be < 1",
        '[target]\nkind = "python"\nfunction = "f"\ndim = 2': 'expected "module:function"',
    }
    for text, needle in cases.items():
        with pytest.raises(RecipeError) as e:
            R.loads(text)
        assert needle in str(e.value), (text, str(e.value))
    rec = R.loads('[target]\nkind = "gmm"\nmeans = [[0.0], [3.0]]', overrides=["sample.steps=50", "target.stds=[1, 2]"])
    assert rec.sample.steps == 50 and rec.target.stds == (1.0, 2.0)


def test_every_target_key_is_in_the_recipe_page():
    from dataclasses import fields

    from udiff.cli.manpages import pages

    page = pages()["udiff-recipe.5"]
    for cls in [R.spec_class("target", k) for k in R.kinds("target")] + [R.TargetSampleSpec]:
        for f in fields(cls):
            assert f"    {f.name} = " in page, (cls.__name__, f.name)


def test_targets_refuse_bad_values_with_one_line():
    with pytest.raises(RecipeError, match="covariance 1 is not positive definite"):
        T.gmm([[0.0, 0.0], [1.0, 1.0]], covs=[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(RecipeError, match="must be symmetric"):
        T.gmm([[0.0, 0.0]], covs=[[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(RecipeError, match="must return one log-density per row"):
        T.python(lambda x: x, 2, "m:f")
    with pytest.raises(RecipeError, match="failed on a"):
        T.python(lambda x: x @ torch.ones(3), 2, "m:f")


# ---------------------------------------------------------------------------------------------------
# The command line

SMALL = ["--set", "sample.levels=10", "--steps", "60"]


def _fails(runner, args, needle, tmp_path):
    before = set(os.listdir(tmp_path))
    r = invoke(runner, args, ok=False)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert set(os.listdir(tmp_path)) == before
    return r


def test_sample_a_target_recipe_writes_x_seeds_recipe_and_metrics(runner, tmp_path):
    out = str(tmp_path / "s.safetensors")
    r = invoke(runner, ["sample", os.path.join(RECIPES, "dilation-grid.toml"), "--seeds", "5-204", "-o", out,
                        "--json", *SMALL, "--sampler", "dilation"])
    rec = json.loads(r.stdout)
    assert rec["sampler"] == "dilation" and rec["evals"] == 60 and rec["n"] == 200 and rec["target"] == "grid"
    assert {"mode_weight_error", "mmd", "sw2", "mode_weights"} <= set(rec)
    art = artifacts.load(out, "samples")
    assert art.tensors["x"].shape == (200, 2) and art.tensors["x"].dtype == torch.float32
    assert art.tensors["seeds"].tolist() == list(range(5, 205))
    stored = R.from_json(art.recipe_json, out)
    assert isinstance(stored, R.TargetRecipe) and stored.sample.steps == 60 and stored.sample.levels == 10
    meta = art.json("udiff.samples")
    assert meta["evals"] == 60 and meta["mode_weight_error"] == rec["mode_weight_error"] and meta["compare"] == []
    assert art.json("udiff.target")["modes"] == 9
    shown = invoke(runner, ["show", out, "--recipe"]).output
    assert R.loads(shown) == stored
    # the same seed gives the same sample whatever the batch (dilation's particles do not interact)
    one = str(tmp_path / "one.safetensors")
    invoke(runner, ["sample", os.path.join(RECIPES, "dilation-grid.toml"), "--seeds", "7", "-o", one, *SMALL,
                    "--batch-size", "1", "--sampler", "dilation"])
    assert torch.allclose(artifacts.load(one).tensors["x"][0], art.tensors["x"][2], atol=1e-5)


def test_compare_runs_every_sampler_on_the_same_budget(runner, tmp_path):
    out = str(tmp_path / "s.safetensors")
    r = invoke(runner, ["sample", os.path.join(RECIPES, "dilation-separated.toml"), "-n", "100", "-o", out, "--json",
                        "--compare", *SMALL, "--set", "sample.mc_samples=6"])
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["sampler"] for x in recs] == list(R.TARGET_SAMPLERS)
    assert [x["evals"] for x in recs] == [60] * 5 and recs[0]["out"] == out
    assert all("mode_weight_error" in x for x in recs) and "acceptance" in recs[3] and "log_z" in recs[0]
    assert len(artifacts.load(out).json("udiff.samples")["compare"]) == 4
    r = invoke(runner, ["sample", os.path.join(RECIPES, "dilation-funnel.toml"), "-n", "50", "-o", out, *SMALL,
                        "--sampler", "ula"])
    assert "ula" in r.stderr and "MMD" in r.stderr and "mode-weight" not in r.stderr


def test_python_and_fitted_targets(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "udiff_test_banana.py",
          "import torch\n"
          "def logp(x):\n    return -0.5 * (x[:, 0] ** 2 / 4 + (x[:, 1] - 0.25 * x[:, 0] ** 2) ** 2)\n"
          "def draws(n, generator=None):\n    a = 2 * torch.randn(n, generator=generator, dtype=torch.float64)\n"
          "    return torch.stack([a, torch.randn(n, generator=generator, dtype=torch.float64) + 0.25 * a ** 2], 1)\n")
    rec = write(tmp_path / "banana.toml", '[target]\nkind = "python"\nfunction = "udiff_test_banana:logp"\n'
                                          'exact = "udiff_test_banana:draws"\ndim = 2\n')
    r = invoke(runner, ["sample", rec, "-n", "300", "-o", "b.safetensors", "--json", *SMALL])
    assert json.loads(r.stdout)["mmd"] < 1.0
    bad = write(tmp_path / "bad.toml", '[target]\nkind = "python"\nfunction = "udiff_no_such_module:f"\ndim = 2\n')
    _fails(runner, ["sample", bad, "-n", "3", "-o", "x.safetensors"], "cannot import module 'udiff_no_such_module'",
           tmp_path)
    nofn = write(tmp_path / "nofn.toml", '[target]\nkind = "python"\nfunction = "udiff_test_banana:nope"\ndim = 2\n')
    _fails(runner, ["sample", nofn, "-n", "3", "-o", "x.safetensors"], "has no function 'nope'", tmp_path)
    # a mixture fitted to the digits on 3 principal components, then in a PCA basis from fit-basis
    fit = write(tmp_path / "fit.toml", '[target]\nkind = "fitted"\ndata = "digits"\ncomponents = 4\ndims = 3\n'
                                       "iterations = 20\n[sample]\nstep_size = 0.02\n")
    r = invoke(runner, ["sample", fit, "-n", "200", "-o", "f.safetensors", "--json", *SMALL])
    rec = json.loads(r.stdout)
    assert rec["dim"] == 3 and len(rec["mode_weights"]) == 4
    assert artifacts.load("f.safetensors").json("udiff.target")["data"] == "digits"
    brec = write(tmp_path / "pca.toml", '[data]\nsource = "digits"\n[basis]\nkind = "pca"\n')
    invoke(runner, ["fit-basis", brec, "-o", "pca.safetensors"])
    r = invoke(runner, ["sample", fit, "-n", "50", "-o", "g.safetensors", "--json", *SMALL,
                        "--set", 'target.basis="pca.safetensors"'])
    assert artifacts.load("g.safetensors").json("udiff.target")["basis"] == "pca"
    _fails(runner, ["sample", fit, "-n", "5", "-o", "h.safetensors", "--set", "target.dims=65"],
           "[target] dims: 65 is more than the 64 components", tmp_path)


def test_bad_target_recipes_and_flags_exit_2_with_one_line_and_no_file(runner, tmp_path):
    grid = os.path.join(RECIPES, "dilation-grid.toml")
    out = str(tmp_path / "s.safetensors")
    _fails(runner, ["sample", grid, "-n", "3", "-o", out, "--set", "target.sise=3"],
           "[target] sise: not a key of [target] (kind 'grid'); did you mean 'size'?", tmp_path)
    _fails(runner, ["sample", grid, "-n", "3", "-o", out, "--set", "target.std=-1"], "[target] std: must be > 0.0",
           tmp_path)
    _fails(runner, ["sample", grid, "-n", "3", "-o", out, "--set", "target.kind=gauss"], "unknown kind 'gauss'",
           tmp_path)
    _fails(runner, ["sample", grid, "-n", "3", "-o", out, "--set", "net.depth=3"], "[net]: not a section of a target",
           tmp_path)
    _fails(runner, ["sample", grid, "-n", "3", "-o", out, "--steps", "5"], "raise steps", tmp_path)
    _fails(runner, ["sample", grid, "-n", "3", "-o", out, "--sampler", "ddim"], "a target recipe takes dilation-smc",
           tmp_path)
    _fails(runner, ["sample", grid, "-n", "3", "--grid", str(tmp_path / "g.png")], "--grid applies to model",
           tmp_path)
    open(tmp_path / "afile", "w").close()
    _fails(runner, ["sample", grid, "-n", "3", "-o", str(tmp_path / "afile" / "s.safetensors")],
           "is a file, not a directory", tmp_path)
    os.unlink(tmp_path / "afile")
    notpd = write(tmp_path / "notpd.toml", '[target]\nkind = "gmm"\nmeans = [[0.0, 0.0]]\n'
                                           "covs = [[[1.0, 2.0], [2.0, 1.0]]]\n")
    _fails(runner, ["sample", notpd, "-n", "3", "-o", out], "notpd.toml: [target] covs: covariance 0 is not positive",
           tmp_path)
    _fails(runner, ["sample", os.path.join(RECIPES, "digits.toml"), "-n", "3", "-o", out], "has no [target] section",
           tmp_path)
    _fails(runner, ["train", grid, "-o", out], "is a target recipe", tmp_path)
    # a target recipe can run code ([target] kind = "python"): only *.toml files are read as recipes
    plain = write(tmp_path / "gridrecipe", '[target]\nkind = "grid"\n[sample]\nsteps = 20\nlevels = 2\n')
    _fails(runner, ["sample", plain, "-n", "4", "-o", out], "must be named *.toml", tmp_path)
    os.rename(plain, plain + ".toml")
    invoke(runner, ["sample", plain + ".toml", "-n", "4", "-o", out])
    assert artifacts.load(out, "samples").tensors["x"].shape == (4, 2)


def test_real_process_samples_a_target_recipe_to_stdout(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.run([PYTHON, "-m", "udiff", "sample", os.path.join(RECIPES, "dilation-rings.toml"), "-n", "64",
                        "-o", "-", *SMALL], check=True, env=env, capture_output=True)
    art = artifacts.from_bytes(p.stdout, "stdout", "samples")
    assert art.tensors["x"].shape == (64, 2) and "dilation" in p.stderr.decode()
    bad = subprocess.run([PYTHON, "-m", "udiff", "sample", os.path.join(RECIPES, "dilation-rings.toml"), "-n", "2",
                          "-o", str(tmp_path / "x.safetensors"), "--set", "sample.lambda_min=0"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "lambda_min: must be > 0.0" in bad.stderr
    assert os.listdir(tmp_path) == []
