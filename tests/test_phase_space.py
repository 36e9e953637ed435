"""Phase-space diffusion (PSLD, CLD, any constant complete recipe) and its samplers.

The kernel is checked against an independent numerical solution of the moment ODEs, the conversions
against direct linear algebra, the 1×1 recipe against VP, and the samplers end to end through the CLI
with the exact Gaussian denoiser (the oracle of test_gaussian_oracle.py): 20,000 samples must have the
data's mean and covariance within 5%.
"""

import math

import pytest
import torch
from conftest import invoke, write
from safetensors.torch import load_file

from udiff import artifacts
from udiff import conversions as C
from udiff.errors import UdiffError
from udiff.ode import dopri5
from udiff.phase_space import CompleteRecipe, expm_blocks, psld
from udiff.process import VP
from udiff.schedule import Cosine, VDMLinear, VPLinear

CONST8 = VPLinear(8.0, 8.0)  # PSLD's constant beta = 8: B(t) = 8 t


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _lvl(schedule, t, ndim=1):
    return schedule.level(torch.tensor([t], dtype=torch.float64), ndim)


def _kernel(proc, lvl):
    """(mean map, covariance) of q(z_t | z at the data end)."""
    return proc.mean_map(lvl), proc.cov(lvl)


def _marginal(proc, x0, lvl):
    """q(z_t | x0): mean (B, k, *event) and covariance."""
    h = proc.mean_map(lvl)[..., :, 0]
    return C.unvec(h * C.vec(x0)), proc.cov(lvl)


def _beta(lvl):
    """The VP-SDE rate beta = sigmoid(gamma) gamma': dB/dt of the clock B = softplus(gamma)."""
    return torch.sigmoid(lvl.gamma) * lvl.dgamma


def _processes():
    return {
        "psld": psld(0.01),
        "cld": psld(0.0),
        "psld-underdamped": psld(0.02, nu=1.5, kappa=0.1),
        "psld-overdamped": psld(0.5, nu=9.0),
        "recipe-offdiag": CompleteRecipe([[0.3, 0.1], [0.1, 0.4]], [[0.0, -0.7], [0.7, 0.0]], mass=0.5, kappa=0.2),
    }


# ------------------------------------------------------------------------------------------------
# The kernel


def _moments_rk4(proc, beta, t1, n=4000):
    """Mean map and covariance from dA/dt = beta F A, dS/dt = beta (F S + S F^T + 2D), by classical RK4."""
    F, GG = proc.F, proc.GG

    def rhs(t, a, s):
        b = beta(t)
        return b * F @ a, b * (F @ s + s @ F.T + GG)

    a, s = torch.eye(proc.k, dtype=torch.float64), proc.init_cov()
    h = t1 / n
    for i in range(n):
        t = i * h
        k1 = rhs(t, a, s)
        k2 = rhs(t + h / 2, a + h / 2 * k1[0], s + h / 2 * k1[1])
        k3 = rhs(t + h / 2, a + h / 2 * k2[0], s + h / 2 * k2[1])
        k4 = rhs(t + h, a + h * k3[0], s + h * k3[1])
        a = a + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        s = s + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return a, s


@pytest.mark.parametrize("name", sorted(_processes()))
@pytest.mark.parametrize("schedule", ["const8", "linear"])
def test_kernel_solves_the_moment_odes(name, schedule):
    proc = _processes()[name]
    sched, beta = ((CONST8, lambda t: 8.0) if schedule == "const8"
                   else (VPLinear(0.1, 20.0), lambda t: 0.1 + 19.9 * t))  # beta(t) linear: B = int beta
    for t in (0.01, 0.3, 1.0):
        a, s = _moments_rk4(proc, beta, t, n=int(4000 * t) + 50)
        E, S = _kernel(proc, _lvl(sched, t))
        assert torch.allclose(E.reshape(proc.k, proc.k), a, atol=1e-9), (t, E, a)
        assert torch.allclose(S.reshape(proc.k, proc.k), s, atol=1e-9), (t, S, s)


def test_prior_is_reached_at_t1():
    """Sigma(1) = diag(1, M) to ~1e-5 for the default PSLD and CLD (algorithms.md §5.1 gives the numbers)."""
    lvl = _lvl(CONST8, 1.0)
    for gamma, (sxx, sxm, smm), mean in ((0.01, (0.9999852, 6.5e-6, 0.2499971), 2.90e-3),
                                        (0.0, (0.9999840, 7.1e-6, 0.2499969), None)):
        proc = psld(gamma)
        E, S = _kernel(proc, lvl)
        S = S.reshape(2, 2)
        assert torch.allclose(S, torch.diag(torch.tensor([1.0, 0.25], dtype=torch.float64)), atol=3e-5)
        assert torch.allclose(S, torch.tensor([[sxx, sxm], [sxm, smm]], dtype=torch.float64), atol=1e-7)
        assert torch.equal(proc.prior_cov(lvl), torch.diag(torch.tensor([1.0, 0.25], dtype=torch.float64)))
        assert torch.equal(proc.init_cov(), torch.diag(torch.tensor([0.0, 0.04 * 0.25], dtype=torch.float64)))
        if mean is not None:
            assert abs(float(E.reshape(2, 2)[0, 0]) - mean) < 1e-5


def test_closed_form_exponential_matches_matrix_exp():
    b = torch.tensor([0.0, 1e-4, 0.5, 3.0, 8.0], dtype=torch.float64)
    for proc in _processes().values():
        for mat in (proc.F, proc.A0):
            ref = torch.linalg.matrix_exp(mat * b[:, None, None])
            assert torch.allclose(expm_blocks(mat, b), ref, atol=1e-13, rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Conversions, against direct linear algebra


@pytest.mark.parametrize("name", sorted(_processes()))
def test_conversions(name):
    proc = _processes()[name]
    g = torch.Generator().manual_seed(0)
    for t in (1e-5, 0.05, 0.7):
        lvl = _lvl(CONST8, t)
        x0 = torch.randn(5, 1, 3, dtype=torch.float64, generator=g)
        eps = torch.randn(5, 2, 3, dtype=torch.float64, generator=g)
        z = C.perturb(proc, x0, eps, lvl)
        mean, cov = _marginal(proc, x0, lvl)
        S = cov.reshape(2, 2)
        L = torch.linalg.cholesky(S)
        assert torch.allclose(z, mean + torch.einsum("ij,bje->bie", L, eps), atol=1e-12)
        assert torch.allclose(C.eps_from_x0(proc, z, x0, lvl), eps, atol=1e-6)
        p = proc.predicted
        assert torch.allclose(C.x0_from_eps(proc, z, eps[:, 2 - p:], lvl), x0, atol=1e-8)
        assert torch.allclose(C.x0_from_eps(proc, z, eps, lvl), x0, atol=1e-8)
        score = -torch.einsum("ij,bje->bie", torch.linalg.inv(S), z - mean)  # grad log q(z_t | x0)
        assert torch.allclose(C.score_from_eps(proc, eps, lvl), score, rtol=1e-6,
                              atol=1e-6 * float(score.abs().max()))
        # z = h x0 + noise(Sigma): w = h^T Sigma^-1 h, y = h^T Sigma^-1 z
        h = mean[0, :, 0] / x0[0, 0, 0]
        w, y = C.observation(proc, z, lvl)
        si = torch.linalg.inv(S)
        assert torch.allclose(w.reshape(-1)[0], h @ si @ h, rtol=1e-8)
        assert torch.allclose(y, torch.einsum("i,ij,bje->be", h, si, z), rtol=1e-7, atol=1e-9 * float(y.abs().max()))


def test_cld_predicts_only_the_momentum():
    assert psld(0.0).predicted == 1 and psld(0.01).predicted == 2
    proc = psld(0.0)
    lvl = _lvl(CONST8, 0.2)
    eps_m = torch.randn(4, 1, 3, dtype=torch.float64)
    s = C.score_from_eps(proc, eps_m, lvl)
    assert s.shape == (4, 2, 3) and torch.all(s[:, 0] == 0)  # unknown, and multiplied by G G^T = diag(0, .)
    _, GG = proc.sde(lvl)
    assert torch.all(GG[..., 0, :] == 0) and torch.all(GG[..., :, 0] == 0)


def test_reverse_drift_and_noise():
    """f - c G G^T s with the full matrix, and G sqrt(dt) xi with G G^T = 2 beta D (off-diagonal D too)."""
    proc = _processes()["recipe-offdiag"]
    lvl = _lvl(VPLinear(0.1, 20.0), 0.4)
    beta = float(_beta(lvl).reshape(()))
    z, eps = torch.randn(3, 2, 5, dtype=torch.float64), torch.randn(3, 2, 5, dtype=torch.float64)
    s = C.score_from_eps(proc, eps, lvl)
    for pf, c in ((False, 1.0), (True, 0.5)):
        ref = beta * (torch.einsum("ij,bje->bie", proc.F, z) - c * torch.einsum("ij,bje->bie", 2 * proc.D, s))
        assert torch.allclose(C.reverse_drift(proc, z, eps, lvl, pf_ode=pf), ref)
    xi = torch.randn(200000, 2, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    noise = C.diffuse(proc, xi, lvl, 0.01)[:, :, 0]
    assert torch.allclose(torch.cov(noise.T), 2 * proc.D * beta * 0.01, rtol=0.02, atol=1e-4)


def test_transition_and_ancestral_step():
    """q(z_t | z_s) composes to the marginal; the ancestral step is the Gaussian posterior q(z_s | z_t, x0)."""
    for proc in _processes().values():
        ls, lt = _lvl(CONST8, 0.1), _lvl(CONST8, 0.3)
        x0 = torch.randn(3, 1, 2, dtype=torch.float64)
        Es, Ss = (m.reshape(2, 2) for m in _kernel(proc, ls))
        Et, St = (m.reshape(2, 2) for m in _kernel(proc, lt))
        E = torch.linalg.matrix_exp(proc.F * 1.6)  # B(0.3) - B(0.1)
        zero = torch.zeros(3, 2, 2, dtype=torch.float64)
        assert torch.allclose(C.forward_step(proc, zero + 1.0, ls, lt, zero), E.sum(1)[None, :, None].expand(3, 2, 2))
        # covariance of the transition: S_t = E S_s E^T + S_ts
        xi = torch.eye(2, dtype=torch.float64)[:, :, None]
        Lts = C.forward_step(proc, torch.zeros(2, 2, 1, dtype=torch.float64), ls, lt, xi)[:, :, 0].T
        assert torch.allclose(E @ Ss @ E.T + Lts @ Lts.T, St, atol=1e-12)
        # posterior of z_s given z_t and x0, by conditioning the joint Gaussian
        zt = C.perturb(proc, x0, torch.randn(3, 2, 2, dtype=torch.float64), lt)
        eps_hat = C.eps_from_x0(proc, zt, x0, lt)[:, 2 - proc.predicted:]
        cross = Ss @ E.T
        gain = cross @ torch.linalg.inv(St)
        mean = Es[:, :1] * x0 + torch.einsum("ij,bje->bie", gain, zt - Et[:, :1] * x0)
        post = Ss - gain @ cross.T
        assert torch.allclose(C.ancestral_step(proc, zt, eps_hat, lt, ls, zero), mean, atol=1e-8)
        got = C.ancestral_step(proc, torch.zeros(2, 2, 1, dtype=torch.float64), torch.zeros(2, proc.predicted, 1,
                               dtype=torch.float64), lt, ls, xi)
        got = got - C.ancestral_step(proc, torch.zeros(1, 2, 1, dtype=torch.float64), torch.zeros(
            1, proc.predicted, 1, dtype=torch.float64), lt, ls, torch.zeros(1, 2, 1, dtype=torch.float64))
        chol = got[:, :, 0].T
        assert torch.allclose(chol @ chol.T, post, atol=1e-10)


def test_sscs_linear_part_is_exact_and_keeps_the_prior():
    """The A half-step solves dz = beta A0 z ds + G dw exactly and leaves N(0, Sigma_inf) invariant."""
    for proc in _processes().values():
        la, lb = _lvl(CONST8, 0.5), _lvl(CONST8, 0.45)
        E = torch.linalg.matrix_exp(proc.A0 * 0.4)
        xi = torch.eye(2, dtype=torch.float64)[:, :, None]
        zero = torch.zeros(2, 2, 1, dtype=torch.float64)
        L = proc.split_linear(zero, la, lb, xi)[:, :, 0].T
        sinf = proc.prior_cov(la)
        assert torch.allclose(E @ sinf @ E.T + L @ L.T, sinf, atol=1e-12)
        one = torch.ones(1, 2, 1, dtype=torch.float64)
        assert torch.allclose(proc.split_linear(one, la, lb, one * 0)[0, :, 0], E.sum(1))
        # A0 + F = -2 D Sigma_inf^-1: the split adds back the prior's score
        assert torch.allclose(proc.A0 + proc.F, -2 * proc.D @ torch.linalg.inv(sinf))


# ------------------------------------------------------------------------------------------------
# VP is the 1×1 recipe


@pytest.mark.parametrize("sched", [VDMLinear(), VPLinear(0.1, 20.0), Cosine()], ids=["vdm", "vp-linear", "cosine"])
def test_vp_is_the_1x1_complete_recipe(sched):
    rec, vp = CompleteRecipe([[0.5]], [[0.0]]), VP()
    assert rec.k == 1 and rec.predicted == 1
    g = torch.Generator().manual_seed(3)
    for t in (0.05, 0.5, 0.95):
        lvl = _lvl(sched, t, 2)
        x0, eps = (torch.randn(4, 1, 2, 3, dtype=torch.float64, generator=g) for _ in range(2))
        z = C.perturb(vp, x0, eps, lvl)
        assert torch.allclose(C.perturb(rec, x0, eps, lvl), z, atol=1e-12)
        for fn, args in (("x0_from_eps", (z, eps, lvl)), ("score_from_eps", (eps, lvl)),
                         ("eps_from_x0", (z, x0, lvl))):
            a, b = getattr(C, fn)(rec, *args), getattr(C, fn)(vp, *args)
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-10), fn
        for pf in (False, True):
            assert torch.allclose(C.reverse_drift(rec, z, eps, lvl, pf), C.reverse_drift(vp, z, eps, lvl, pf),
                                  rtol=1e-9)
        assert all(torch.allclose(a, b, rtol=1e-9) for a, b in zip(rec.sde(lvl), vp.sde(lvl)))
        assert all(torch.allclose(a, b, rtol=1e-9) for a, b in zip(C.observation(rec, z, lvl),
                                                                    C.observation(vp, z, lvl)))
        assert all(torch.allclose(a, b, rtol=1e-9) for a, b in zip(_marginal(rec, x0, lvl), _marginal(vp, x0, lvl)))
        ls = _lvl(sched, t * 0.8, 2)
        assert torch.allclose(C.ancestral_step(rec, z, eps, lvl, ls, eps), C.ancestral_step(vp, z, eps, lvl, ls, eps),
                              rtol=1e-8, atol=1e-10)
        assert torch.allclose(C.forward_step(rec, z, ls, lvl, eps), C.forward_step(vp, z, ls, lvl, eps), rtol=1e-9)
    assert torch.equal(rec.prior_cov(lvl), vp.prior_cov(lvl)) and torch.equal(rec.init_cov(), vp.init_cov())


# ------------------------------------------------------------------------------------------------
# The ODE solver


def test_dopri5_accuracy_direction_and_items():
    y0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)  # two items, a rotation each

    def rot(t, y):
        return torch.stack([y[:, 1], -y[:, 0]], 1)

    exact = torch.stack([y0[:, 0] * math.cos(5) + y0[:, 1] * math.sin(5),
                         -y0[:, 0] * math.sin(5) + y0[:, 1] * math.cos(5)], 1)
    errs, nfes = [], []
    for tol in (1e-3, 1e-6, 1e-9):
        y, nfe = dopri5(rot, y0, 0.0, 5.0, rtol=tol, atol=tol)
        errs.append(float((y - exact).abs().max()))
        nfes.append(nfe)
    assert errs[0] < 1e-2 and errs[1] < 1e-5 and errs[2] < 1e-8
    assert nfes[0] < nfes[1] < nfes[2] and nfes[0] % 6 == 2  # 6 per step (first same as last) + 2 to start
    back, _ = dopri5(rot, exact, 5.0, 0.0, rtol=1e-9, atol=1e-9)  # backwards in time
    assert torch.allclose(back, y0, atol=1e-7)
    # time-dependent, a scalar and an augmented state; f sees the float time
    y, _ = dopri5(lambda t, y: math.cos(t) * y, torch.ones(3, 4), 0.0, 2.0)
    assert torch.allclose(y, torch.full((3, 4), math.exp(math.sin(2.0))), rtol=1e-4)
    assert dopri5(rot, y0, 1.0, 1.0) == (y0, 0)
    with pytest.raises(UdiffError):
        dopri5(lambda t, y: y * float("nan"), y0, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Recipes and errors through the CLI


BAD = [
    ("process.D=[[0.1,0.2],[0.2,0.1]]", "[process] D", "positive semi-definite"),
    ("process.D=[[0.1,0.0],[0.05,0.5]]", "[process] D", "symmetric"),
    ("process.Q=[[0.0,-0.5],[0.4,0.0]]", "[process] Q", "skew"),
    ("process.Q=[[0.1,-0.5],[0.5,0.0]]", "[process] Q", "skew"),
    ("process.Q=[[0.0]]", "[process] Q", "2x2"),
    ("process.D=[[0.1,0.0,0.0]]", "[process] D", "1x1 or 2x2"),
    ("process.D=[[0.0,0.0],[0.0,0.0]]", "[process] D", "never reaches"),
    ("process.D=0.5", "[process] D", "list of rows"),
]


@pytest.mark.parametrize("setting,key,words", BAD)
def test_bad_recipe_matrices_are_one_line_errors(setting, key, words, runner, tmp_path, gauss_file):
    recipe = write(tmp_path / "r.toml", RECIPE.format(path=gauss_file, process='kind = "recipe"'))
    res = invoke(runner, ["train", recipe, "-o", tmp_path / "m.safetensors", "--dry-run", "--set", setting], ok=False)
    assert res.exit_code == 2
    msg = res.output.strip()
    assert len(msg.splitlines()) == 1 and key in msg and words in msg, msg
    assert not (tmp_path / "m.safetensors").exists()


def test_recipe_kinds_resolve(runner, tmp_path, gauss_file):
    from udiff import recipe as R

    for proc in ('kind = "psld"', 'kind = "cld"\nnu = 4.0', 'kind = "recipe"\nD = [[0.5]]\nQ = [[0]]'):
        text = RECIPE.format(path=gauss_file, process=proc)
        rec = R.loads(text)
        assert R.loads(rec.toml()) == rec and R.from_json(rec.to_json(), "x") == rec
    out = invoke(runner, ["train", write(tmp_path / "r.toml", RECIPE.format(path=gauss_file, process='kind = "psld"')),
                          "-o", tmp_path / "m.safetensors", "--dry-run"]).output
    assert 'kind = "psld"' in out and "gamma = 0.01" in out


@pytest.mark.parametrize("name", ["psld-cifar10", "cld-cifar10", "psld-fashion-mnist", "cld-fashion-mnist",
                                  "psld-digits", "cld-digits"])
def test_shipped_recipes(name):
    """The papers' settings load; the network sees x and m and predicts both slots (PSLD) or m only (CLD)."""
    import os

    from conftest import RECIPES

    from udiff import recipe as R
    from udiff.build import build_model, resolve

    rec = R.load(os.path.join(RECIPES, name + ".toml"))
    assert rec.schedule.kind == "vp-linear" and rec.schedule.beta_min == rec.schedule.beta_max == 8.0
    assert rec.process.kappa == 0.04 and rec.process.m_inv == 4.0
    if name.endswith("cifar10"):
        t = rec.train
        assert (t.batch_size, t.lr, t.warmup, t.grad_clip, t.ema) == (128, 2e-4, 5000, 1.0, 0.9999)
        assert rec.net.preset == "ddpmpp" and rec.sample.t_end == 1e-3
        return
    shape = (1, 8, 8) if name.endswith("digits") else (1, 28, 28)
    rec = resolve(rec, {"shape": shape})
    model = build_model(rec, {"shape": shape})
    p = 2 if name.startswith("psld") else 1
    assert model.process.predicted == p
    lvl = model.level(torch.tensor([0.3, 0.6], dtype=torch.float64))
    with torch.no_grad():
        assert model.eps(torch.randn((2, 2) + shape), lvl).shape == (2, p) + shape


# ------------------------------------------------------------------------------------------------
# The oracle: exact Gaussian denoiser, 20,000 samples, mean and covariance within 5%

RECIPE = """
[data]
source = "tensors:{path}"
[process]
{process}
[schedule]
kind = "vp-linear"
beta_min = 8.0
beta_max = 8.0
[net]
kind = "gaussian"
"""

# sampler → CLI flags. EM is first order (200 steps); SSCS at 100 quadratic steps; Heun at 64 EDM steps;
# rk45 at its default tolerance 1e-5 (about 260 evaluations).
SAMPLERS = {
    "em": ["--steps", 200, "--time-grid", "uniform"],
    "sscs": ["--steps", 100],
    "heun": ["--steps", 64],
    "rk45": [],
}


@pytest.fixture(scope="module")
def phase_models(gauss_file, tmp_path_factory):
    from click.testing import CliRunner

    d = tmp_path_factory.mktemp("phase")
    out = {}
    for kind in ("psld", "cld"):
        recipe = write(d / f"{kind}.toml", RECIPE.format(path=gauss_file, process=f'kind = "{kind}"'))
        out[kind] = str(d / f"{kind}.safetensors")
        invoke(CliRunner(), ["train", recipe, "-o", out[kind]])
    return out


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _check_samples(path, gauss_file):
    x = artifacts.load(path, "samples").tensors["x"].double()
    ref = load_file(gauss_file)["x"].double()
    assert x.shape == (20000, 16)
    errs = _rel(x.mean(0), ref.mean(0)), _rel(torch.cov(x.T), torch.cov(ref.T))
    assert errs[0] < 0.05 and errs[1] < 0.05, errs
    return errs


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("kind", ["psld", "cld"])
def test_phase_space_samplers_reproduce_the_gaussian(kind, sampler, phase_models, gauss_file, runner, tmp_path):
    out = str(tmp_path / "s.safetensors")
    res = invoke(runner, ["sample", phase_models[kind], "-n", 20000, "--sampler", sampler, *SAMPLERS[sampler],
                          "--batch-size", 20000, "-o", out, "--json"])
    errs = _check_samples(out, gauss_file)
    import json

    info = json.loads(res.output)
    print(f"{kind} {sampler}: mean {errs[0]:.4f} cov {errs[1]:.4f} nfe {info['nfe']}")
    if sampler == "rk45":
        assert 50 < info["nfe"] < 1000


def test_rk45_on_vp_and_sscs_needs_a_phase_space_process(gauss_file, runner, tmp_path):
    recipe = write(tmp_path / "vp.toml", RECIPE.format(path=gauss_file, process='kind = "vp"')
                   .replace("beta_min = 8.0\nbeta_max = 8.0", "beta_min = 0.1\nbeta_max = 20.0"))
    model = str(tmp_path / "vp.safetensors")
    invoke(runner, ["train", recipe, "-o", model])
    out = str(tmp_path / "s.safetensors")
    invoke(runner, ["sample", model, "-n", 20000, "--sampler", "rk45", "--batch-size", 20000, "-o", out])
    _check_samples(out, gauss_file)
    res = invoke(runner, ["sample", model, "-n", 4, "--sampler", "sscs", "-o", out + "2"], ok=False)
    assert res.exit_code == 2 and "phase-space process" in res.output and len(res.output.strip().splitlines()) == 1


def test_the_1x1_recipe_samples_like_vp(gauss_file, runner, tmp_path):
    """VP written as a complete recipe (D = 1/2, Q = 0) goes through training and SSCS sampling."""
    recipe = write(tmp_path / "r.toml", RECIPE.format(path=gauss_file, process='kind = "recipe"\nD = [[0.5]]\n'
                                                      'Q = [[0.0]]').replace("8.0", "10.0"))
    model = str(tmp_path / "r.safetensors")
    invoke(runner, ["train", recipe, "-o", model])
    out = str(tmp_path / "s.safetensors")
    invoke(runner, ["sample", model, "-n", 20000, "--sampler", "sscs", "--batch-size", 20000, "-o", out])
    _check_samples(out, gauss_file)
