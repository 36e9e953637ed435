"""Likelihood: the bound and the PF-ODE NLL against the exact NLL of Gaussian data, the discrete-time bound,
VDM's oracle values (algorithms.md §5.1), the learned schedule, Fourier features and `udiff eval-nll`.

The oracle is the `gaussian` net (the exact denoiser) fitted to 50,000 draws of a 16-dimensional Gaussian with
covariance eigenvalues from 1 to 0.01; held-out draws have an exact NLL under the fitted Gaussian, and every
item's estimate is compared with its own exact value (paired, so only the estimator's noise remains).
"""

import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import gaussian_params, invoke, write
from safetensors.torch import save_file

from udiff import artifacts
from udiff import likelihood as L
from udiff import recipe as R
from udiff.build import build_model, fit_basis
from udiff.phase_space import psld
from udiff.process import VP
from udiff.schedule import Schedule, VarianceGrad, VDMLearned, VDMLinear, VPLinear


def _draws(n, seed):
    mean, cov = gaussian_params(16, 0)
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 16, dtype=torch.float64, generator=g) @ torch.linalg.cholesky(cov).T + mean).float()


TRAIN = _draws(50_000, 1)  # = conftest.gaussian_data(50_000): the gauss_file fixture's data
HELD = _draws(2_000, 99)
PSLD_CLOCK = 'kind = "vp-linear"\nbeta_min = 8.0\nbeta_max = 8.0'  # PSLD's constant beta = 8, t from 1e-5


def gaussian_model(process="vp", basis="pixel", whiten=False, schedule='kind = "vp-linear"'):
    rec = R.loads(f'[data]\nsource = "digits"\n[basis]\nkind = "{basis}"\nwhiten = {str(whiten).lower()}\n'
                  f'[process]\nkind = "{process}"\n[schedule]\n{schedule}\n[net]\nkind = "gaussian"\n')
    model = build_model(rec, {"shape": [16]}, fit_basis(rec, TRAIN))
    return model.fit(TRAIN)


def exact_nll(x):
    """-log N(x; mean, cov) / d under the Gaussian the model was fitted to (nats/dim, per item)."""
    mean, cov = TRAIN.double().mean(0), torch.cov(TRAIN.double().T)
    return -torch.distributions.MultivariateNormal(mean, cov).log_prob(x.double()) / x.shape[1]


def paired_gap(est, x):
    d = est.per_item - exact_nll(x)
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


CASES = {  # name: (process, basis, whiten, schedule)
    "vp": ("vp", "pixel", False, 'kind = "vp-linear"'),
    "vp-whitened": ("vp", "pixel", True, 'kind = "vp-linear"'),  # log|det| of the basis map matters
    "psld": ("psld", "pixel", False, PSLD_CLOCK),
    "psld-pca": ("psld", "pca", False, PSLD_CLOCK),
}


@pytest.mark.parametrize("case", ["vp", "vp-whitened", "psld"])
def test_vlb_equals_the_exact_nll(case, one_thread):
    model = gaussian_model(*CASES[case])
    est = L.evaluate(model, HELD, image8=False, method="vlb", repeats=64, batch_size=1 << 15)
    gap, se = paired_gap(est, HELD)
    assert abs(gap) < 0.01 and se < 0.004, (gap, se)
    assert est.units == "nats/dim" and est.n == len(HELD) and est.steps is None
    assert sum(est.terms.values()) == pytest.approx(est.value, abs=1e-9)
    assert set(est.terms) == {"prior", "recon", "diffusion"}
    if case == "psld":
        assert "momentum integrated out" in est.bounds


@pytest.mark.parametrize("case,n,repeats", [("vp", 2000, 4), ("vp-whitened", 2000, 4), ("psld-pca", 500, 1)])
def test_ode_nll_equals_the_exact_nll(case, n, repeats, one_thread):
    """PSLD in the PCA basis: independent components, so the control variate makes the trace exact and the
    test fast; in the pixel basis the estimate agrees too, with more noise (see the closing note)."""
    model = gaussian_model(*CASES[case])
    x = HELD[:n]
    est = L.evaluate(model, x, image8=False, method="ode", repeats=repeats, batch_size=1 << 15)
    gap, se = paired_gap(est, x)
    assert abs(gap) < 0.01 and se < 0.004, (gap, se)
    assert 10 < est.nfe < 400
    assert sum(est.terms.values()) == pytest.approx(est.value, abs=1e-9)
    if case == "psld-pca":
        assert est.terms["momentum"] > 0  # E[log r(m0)] + ... : the momentum's entropy is subtracted


def test_discrete_bound_decreases_with_T_and_approaches_the_continuous_one(one_thread):
    model = gaussian_model("vp", "pixel", False, 'kind = "vdm-linear"\ngamma_max = 10.0')
    x = HELD[:500]
    vals = {T: L.evaluate(model, x, image8=False, steps=T, repeats=16, batch_size=1 << 14).value
            for T in (10, 100, 1000, 0)}
    cont = vals[0]
    assert vals[10] > vals[100] > vals[1000] > cont - 0.01
    assert vals[1000] - cont < 0.2 * (vals[100] - cont) and vals[1000] - cont < 0.1
    gap, _ = paired_gap(L.evaluate(model, x, image8=False, repeats=16), x)
    assert abs(gap) < 0.02


def test_vdm_prior_and_decoder_oracle_values():
    """algorithms.md §5.1 at VDM's endpoints gamma = 5 (prior) and gamma = -13.3 (decoder)."""
    proc, sched = VP(), VDMLinear(-13.3, 5.0)
    lvl1, lvl0 = sched.level(torch.tensor([1.0]), 1), sched.level(torch.tensor([0.0]), 1)
    x0 = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64).reshape(1, 1, 3)
    kl = L.prior_kl(proc, x0, lvl1)[0]
    assert kl[0].item() == pytest.approx(1.125e-5, rel=2e-3)  # per dim, nats, at x = 0
    assert kl[1].item() == pytest.approx(3.358e-3, rel=1e-3) and kl[2].item() == pytest.approx(3.358e-3, rel=1e-3)
    assert kl[1].item() / math.log(2) == pytest.approx(0.0048, abs=1e-4)
    w = L.decoder_precision(proc, lvl0, x0[:, 0])
    assert w.flatten()[0].item() == pytest.approx(5.97e5, rel=1e-3)  # SNR_max
    std = (1.0 / w.flatten()[0]).sqrt().item()
    assert std == pytest.approx(1.29e-3, abs=5e-6)  # decoder noise std e^(gamma_0/2) vs bin width 2/256
    # the decoder's expected -log p(x | z_0), integrated over z_0 on a grid: the implementation (a window of
    # bins) against a plain numpy softmax over all 256 bins
    centres = (2 * torch.arange(256, dtype=torch.float64) + 1) / 256 - 1
    delta = np.linspace(-12 * std, 12 * std, 20001)
    pdf = np.exp(-0.5 * (delta / std) ** 2) / (std * math.sqrt(2 * math.pi))

    def integral(f):
        return float(np.sum(0.5 * (f[1:] * pdf[1:] + f[:-1] * pdf[:-1]) * np.diff(delta)))

    expected = {}
    for name, value in (("interior", centres[100].item()), ("edge", centres[255].item())):
        logits = -0.5 * ((value + delta[:, None] - centres.numpy()[None]) / std) ** 2
        top = logits.max(1, keepdims=True)
        reference = np.log(np.exp(logits - top).sum(1)) + top[:, 0] + 0.5 * (delta / std) ** 2
        x = torch.full((len(delta),), value, dtype=torch.float64)
        ours = L.discretized_nll(x, x + torch.from_numpy(delta), torch.full_like(x, 1.0 / std ** 2)).numpy()
        expected[name] = integral(ours)
        assert expected[name] == pytest.approx(integral(reference), rel=1e-9)
    # "L_recon is about 0 bits": 0.0105 bits for an interior value (two neighbouring bins), half at the edge
    assert expected["interior"] / math.log(2) == pytest.approx(0.0105, abs=3e-4)
    assert expected["edge"] == pytest.approx(expected["interior"] / 2, rel=0.01)


def test_hsm_extra_term_is_closed_form():
    """The docstring's derivation: for a phase-space process the DSM integrand exceeds the HSM one by
    tr(g g^T (Sigma_D^-1 - Sigma_H^-1)), and d/dt 1/2 log(det Sigma_H / det Sigma_D) = -1/2 of that, so the
    extra terms of the augmented bound telescope into the mutual information at t_min and cancel."""
    hsm, dsm = psld(0.01, kappa=0.04), psld(0.01, kappa=0.0)
    sched = VPLinear(8.0, 8.0)
    t = torch.logspace(-3, 0, 20001, dtype=torch.float64)  # the integrand goes like 1/t
    lvl = sched.level(t, 1)
    s_h, s_d = hsm.cov(lvl), dsm.cov(lvl)
    gg = (torch.sigmoid(lvl.gamma) * lvl.dgamma).flatten()[:, None, None] * hsm.GG  # beta G G^T per unit t
    extra = (gg * (torch.linalg.inv(s_d[:, 0]) - torch.linalg.inv(s_h[:, 0]))).sum((-2, -1))  # tr(A B), B sym.
    info = 0.5 * (torch.logdet(s_h[:, 0]) - torch.logdet(s_d[:, 0]))
    integral = float(torch.trapezoid(0.5 * extra, t))
    assert integral == pytest.approx(float(info[0] - info[-1]), rel=1e-6)


def test_learned_schedule_is_monotone_with_pinned_endpoints():
    torch.manual_seed(0)
    for features in (0, 64):
        s = VDMLearned(-13.3, 5.0, features=features)
        t = torch.linspace(0.0, 1.0, 401, dtype=torch.float64)
        with torch.no_grad():
            g, d = s.gamma(t), s.dgamma(t)
        assert (g[1:] > g[:-1]).all() and (d > 0).all()
        assert g[0].item() == pytest.approx(-13.3, abs=1e-5) and g[-1].item() == pytest.approx(5.0, abs=1e-5)
        assert torch.allclose(d, Schedule.dgamma(s, t), rtol=1e-9, atol=1e-9)
    # any parameter values keep it monotone and the endpoints where gamma_0 and span put them
    with torch.no_grad():
        for p in s.parameters():
            p.copy_(torch.randn_like(p) * 3)
        g = s.gamma(t)
    assert (g[1:] >= g[:-1]).all()
    assert g[0].item() == pytest.approx(s.endpoints[0], abs=1e-5) and g[-1].item() == pytest.approx(s.endpoints[1],
                                                                                                    abs=1e-4)


LEARNED = """
[data]
source = "tensors:{path}"
[schedule]
kind = "vdm-learned"
features = {features}
minimize_variance = {mv}
[net]
kind = "mlp"
hidden = 32
depth = 1
[train]
steps = 30
batch_size = 64
lr = 1e-2
warmup = 0
ema = 0.0
weighting = "vlb"
checkpoint_every = 0
"""


@pytest.mark.parametrize("features,mv", [(0, "false"), (16, "true")])
def test_learned_schedule_trains_on_the_bound(features, mv, runner, tmp_path, gauss_file, one_thread):
    rec = write(tmp_path / "r.toml", LEARNED.format(path=gauss_file, features=features, mv=mv))
    out = str(tmp_path / "m.safetensors")
    invoke(runner, ["train", rec, "-o", out])
    t = artifacts.load(out, "model").tensors
    g0, span = t["ema.schedule.gamma0"].item(), t["ema.schedule.span"].item()
    assert abs(g0 + 13.3) > 1e-3 and abs(abs(span) - 18.3) > 1e-3  # both endpoints moved
    if features:  # the shape moved too (the first random numbers after the run's seed are its initial w2)
        torch.manual_seed(0)
        assert not torch.allclose(t["ema.schedule.w2"], VDMLearned(features=features).w2.detach())
    r = invoke(runner, ["eval-nll", out, "--data", f"tensors:{gauss_file}", "--limit", "64", "--json"])
    assert math.isfinite(json.loads(r.stdout)["nll"])


def test_variance_minimization_gives_the_shape_the_gradient_of_the_square():
    """VDM App. I.2: endpoints follow grad mean(L), the shape grad mean(L^2), from one backward pass."""
    torch.manual_seed(1)
    plain = VDMLearned(features=8)
    hooked = VDMLearned(features=8, minimize_variance=True)
    hooked.load_state_dict(plain.state_dict())
    t = torch.rand(16, dtype=torch.float64)

    def per_item(s, box=None):  # any per-item loss of gamma(t_i) and gamma'(t_i)
        lvl = s.level(t, 1, variance_grad=box)
        return (torch.sin(lvl.gamma) * lvl.dgamma).flatten() / 10 + 2.0

    box = VarianceGrad()
    loss = per_item(hooked, box)
    box.set(loss)
    loss.mean().backward()
    per_item(plain).square().mean().backward()
    for name in ("w1", "w2", "b2", "w3"):
        assert torch.allclose(getattr(hooked, name).grad, getattr(plain, name).grad, rtol=1e-5, atol=1e-8), name
    plain.zero_grad()
    per_item(plain).mean().backward()
    for name in ("gamma0", "span"):
        assert torch.allclose(getattr(hooked, name).grad, getattr(plain, name).grad, rtol=1e-5), name


def test_learned_schedule_needs_the_bound(runner, tmp_path, gauss_file):
    rec = write(tmp_path / "r.toml", LEARNED.format(path=gauss_file, features=0, mv="false"))
    r = invoke(runner, ["train", rec, "-o", str(tmp_path / "m.safetensors"), "--set", 'train.weighting="uniform"'],
               ok=False)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and 'weighting = "vlb"' in r.stderr
    r = invoke(runner, ["train", rec, "-o", str(tmp_path / "m.safetensors"), "--set",
                        "schedule.minimize_variance=true"], ok=False)
    assert r.exit_code == 2 and "features > 0" in r.stderr


def test_fourier_features():
    from udiff.nets.unet import UNet, fourier_features

    x = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    f = fourier_features(x, (6, 7))
    assert f.shape == (2, 12, 4, 4)
    assert torch.allclose(f[:, 0], torch.sin(2 ** 6 * 2 * math.pi * x[:, 0]), atol=1e-4)
    assert torch.allclose(f[:, 9], torch.cos(2 ** 7 * 2 * math.pi * x[:, 0]), atol=1e-4)
    net = UNet(3, 3, 4, channels=8, channel_mult=(1,), num_blocks=1, attn_resolutions=(), fourier=(6, 7),
               fourier_channels=3)
    assert net.conv_in.in_channels == 15  # VDM's 3 + 2·2·3
    assert net(x, torch.zeros(2)).shape == (2, 3, 4, 4)
    rec = R.loads('[data]\nsource = "digits"\n[net]\nkind = "unet"\nfourier_features = [6, 7]\n')
    assert rec.net.fourier_features == (6, 7) and R.loads(rec.toml()).net.fourier_features == (6, 7)


def test_estimates_do_not_depend_on_the_batch_size(one_thread):
    model = gaussian_model("vp")
    x = HELD[:40]
    a = L.evaluate(model, x, image8=False, repeats=3, batch_size=7)
    b = L.evaluate(model, x, image8=False, repeats=3, batch_size=1000)
    assert torch.allclose(a.per_item, b.per_item, rtol=1e-9, atol=1e-9)
    c = L.evaluate(model, x, image8=False, repeats=3, batch_size=1000, seed=1)
    assert not torch.allclose(a.per_item, c.per_item)


GAUSS = """
[data]
source = "tensors:{path}"
[schedule]
kind = "vp-linear"
[net]
kind = "gaussian"
"""

DIGITS = """
[data]
source = "digits"
[schedule]
kind = "vdm-linear"
[net]
kind = "unet"
preset = "tiny-8"
channels = 8
num_blocks = 1
dropout = 0.0
[train]
steps = 3
batch_size = 16
checkpoint_every = 0
weighting = "vlb"
"""


@pytest.fixture(scope="module")
def nll_models(gauss_file, tmp_path_factory):
    from click.testing import CliRunner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("nll")
    held = str(d / "held.safetensors")
    save_file({"x": HELD[:256].contiguous()}, held)
    out = {"held": held}
    for name, text in (("gauss", GAUSS.format(path=gauss_file)), ("digits", DIGITS)):
        out[name] = str(d / f"{name}.safetensors")
        invoke(CliRunner(), ["train", write(d / f"{name}.toml", text), "-o", out[name]])
    torch.set_num_threads(threads)
    return out


def test_eval_nll_json(runner, nll_models, one_thread):
    data = f"tensors:{nll_models['held']}"
    rec = json.loads(invoke(runner, ["eval-nll", nll_models["gauss"], "--data", data, "--repeats", "4",
                                     "--json"]).stdout)
    assert rec["method"] == "vlb" and rec["n"] == 256 and rec["units"] == "nats/dim" and rec["time"] == "continuous"
    assert set(rec["terms"]) == {"prior", "recon", "diffusion"} and rec["stderr"] > 0
    assert rec["nll"] == pytest.approx(sum(rec["terms"].values()), abs=1e-9) and "upper bound" in rec["bounds"]
    exact = float(exact_nll(HELD[:256]).mean())
    assert rec["nll"] == pytest.approx(exact, abs=0.1)
    rec = json.loads(invoke(runner, ["eval-nll", nll_models["gauss"], "--data", data, "--steps", "1000",
                                     "--json"]).stdout)
    assert rec["steps"] == 1000 and rec["time"] == "discrete"
    rec = json.loads(invoke(runner, ["eval-nll", nll_models["gauss"], "--data", data, "--method", "ode",
                                     "--limit", "64", "--json"]).stdout)
    assert rec["method"] == "ode" and rec["n"] == 64 and rec["nfe"] > 0 and rec["dequantization"] is None
    r = invoke(runner, ["eval-nll", nll_models["digits"], "--data", "digits", "--limit", "32", "--json"])
    rec = json.loads(r.stdout)
    assert rec["units"] == "bits/dim" and 0 < rec["bpd"] < 20 and "8-bit" in rec["bounds"]
    r = invoke(runner, ["eval-nll", nll_models["digits"], "--data", "digits", "--limit", "8"])
    assert r.stderr == "" and r.stdout.count("\n") == 1 and "bits/dim" in r.stdout  # the result, on stdout


def _fails(runner, args, needle):
    r = invoke(runner, args, ok=False)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.output


def test_eval_nll_bad_input(runner, nll_models, tmp_path, one_thread):
    g, data = nll_models["gauss"], f"tensors:{nll_models['held']}"
    _fails(runner, ["eval-nll", g, "--data", "digits"], "was trained on float items of shape (16,)")
    _fails(runner, ["eval-nll", nll_models["digits"], "--data", data], "image8 items of shape (1, 8, 8)")
    _fails(runner, ["eval-nll", g], "--data")
    _fails(runner, ["eval-nll", g, "--data", data, "--method", "ode", "--steps", "10"], "--steps applies to")
    _fails(runner, ["eval-nll", g, "--data", data, "--method", "magic"], "'magic' is not one of")
    _fails(runner, ["eval-nll", g, "--data", data, "--repeats", "0"], "--repeats")
    _fails(runner, ["eval-nll", str(tmp_path / "none.safetensors"), "--data", data], "no such file")
    _fails(runner, ["eval-nll", "recipes/digits.toml", "--data", data], "is a recipe")
    _fails(runner, ["eval-nll", g, "--data", "tensors:/no/such.safetensors"], "not found")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("decades", [0.3, 2.0, 4.0], ids=["well-conditioned", "two-decades", "ill-conditioned"])
def test_eval_nll_at_its_defaults_is_within_0_01_with_an_honest_stderr(decades, runner, tmp_path, one_thread):
    """`udiff eval-nll MODEL --data ...` with nothing set (the recipe's defaults too: VP, VDM's schedule): the
    repeats are chosen for a standard error of 0.005, and the result is within 0.01 nats/dim of the exact
    NLL of the held-out items, and within three of its own standard errors of it."""
    g = torch.Generator().manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64, generator=g))
    cov = (q * torch.logspace(0, -decades, 16, dtype=torch.float64)) @ q.T
    mean = 0.3 * torch.randn(16, dtype=torch.float64, generator=g)
    law = torch.distributions.MultivariateNormal(mean, cov)
    train, held = law.sample((50_000,)).float(), law.sample((1_000,)).float()
    save_file({"x": train}, str(tmp_path / "train.safetensors"))
    save_file({"x": held}, str(tmp_path / "held.safetensors"))
    recipe = write(tmp_path / "g.toml", f'[data]\nsource = "tensors:{tmp_path / "train.safetensors"}"\n'
                                        '[net]\nkind = "gaussian"\n')
    model = tmp_path / "m.safetensors"
    invoke(runner, ["train", recipe, "-o", model])
    res = invoke(runner, ["eval-nll", model, "--data", f"tensors:{tmp_path / 'held.safetensors'}", "--json"])
    est = json.loads(res.stdout)
    fitted = torch.distributions.MultivariateNormal(train.double().mean(0), torch.cov(train.double().T))
    per_item = -fitted.log_prob(held.double()) / 16
    exact = float(per_item.mean())
    gap = est["nll"] - exact
    assert abs(gap) < 0.01 and abs(gap) < 3 * est["stderr"], (est["nll"], exact, est["stderr"], est["repeats"])
    # the items' own spread is part of the standard error; beyond it the repeats made the estimator's share
    # small, or they reached their cap of 64 (the ill-conditioned case: the diagonal control variate is poor)
    spread = float(per_item.std() / math.sqrt(len(per_item)))
    assert est["stderr_target"] == 0.005 and est["repeats"] > 1
    assert est["stderr"] < 1.2 * max(0.005, spread) or est["repeats"] == 64, (est, spread)


def test_the_diffusion_terms_density_over_t_is_the_closed_form(one_thread):
    """eval-nll's diffusion_density on Gaussian data with the exact denoiser: the term between log-SNRs g_a < g_b
    is 1/2 sum_j log((1 + l_j e^-g_a) / (1 + l_j e^-g_b)) / d, l_j the data's covariance eigenvalues in the model's
    coordinates (the integral of the MMSE over the SNR, docs/likelihood.md); the shares add up to the term.
    In the PCA basis the components are independent, so the control variate leaves only the spread of the
    integrand within each bin."""
    model = gaussian_model("vp", "pca", False, 'kind = "vp-linear"')
    est = L.evaluate(model, HELD, image8=False, method="vlb", repeats=4, batch_size=1 << 15)
    dens = est.diffusion_density
    t, g, share = (torch.tensor(dens[k], dtype=torch.float64) for k in ("t", "gamma", "share"))
    assert len(share) == L.DENSITY_BINS and bool((t[1:] > t[:-1]).all()) and bool((g[1:] > g[:-1]).all())
    assert float(t[0]) == pytest.approx(float(model.schedule.t_min)) and float(t[-1]) == pytest.approx(1.0)
    assert sum(dens["draws"]) == len(HELD) * 4 and min(dens["draws"]) > 0
    assert float(share.sum()) == pytest.approx(est.terms["diffusion"], rel=0.01)
    lam = torch.linalg.eigvalsh(torch.cov(model.encode(TRAIN.double())[:, 0].T))
    exact = 0.5 * torch.log((1 + lam * torch.exp(-g[:-1, None])) / (1 + lam * torch.exp(-g[1:, None]))).sum(1) / 16
    assert torch.allclose(share, exact, rtol=0.03, atol=2e-4), (share, exact)
