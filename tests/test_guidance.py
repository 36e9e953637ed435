"""Conditional generation against closed forms (docs/guidance.md).

The oracle is the class-conditional exact denoiser: the `gaussian` net with a Gaussian per class. Its class
samples must reproduce each class's mean and covariance; classifier guidance with the exact noisy classifier
log p(y | z_t) at scale 1 turns the unconditional (mixture) model into the class's; classifier-free guidance
moves the guided denoiser's mean by w (I − K_t)(m_y − m̄) at every level, and, where the two branches share
a covariance, the samples' mean by w (m_y − m_u) exactly.
"""

import pytest
import torch

from udiff import conversions as C
from udiff import recipe as R
from udiff.build import build_model, fit_basis
from udiff.guidance import Conditioning, ExactClassifier, Guided, Wrapped, parse_labels
from udiff.nets.gaussian import class_moments
from udiff.samplers import generate

D, N = 3, 20000
MEANS = torch.tensor([[1.5, 0.0, 0.5], [-1.0, 1.0, 0.0], [0.0, -1.2, -0.8]], dtype=torch.float64)


def _class_data(n_per=6000, seed=0):
    g = torch.Generator().manual_seed(seed)
    covs, xs, ys = [], [], []
    for k, s in enumerate((0.5, 0.3, 0.4)):
        a = torch.randn(D, D, generator=g, dtype=torch.float64) * 0.2 + s * torch.eye(D, dtype=torch.float64)
        xs.append(MEANS[k] + torch.randn(n_per, D, generator=g, dtype=torch.float64) @ a.T)
        ys.append(torch.full((n_per,), k))
    x, y = torch.cat(xs).float(), torch.cat(ys)
    _, means, covs = class_moments(x, y, 3)  # the classes' sample moments: what the fitted model holds
    return x, y, means, covs


def _model(process="vp", classes=3, x=None, y=None):
    rec = R.loads(f'[data]\nsource = "digits"\n[process]\nkind = "{process}"\n[schedule]\nkind = "vp-linear"\n'
                  f'[net]\nkind = "gaussian"\nclasses = {classes}\n')
    model = build_model(rec, {"shape": [D]}, fit_basis(rec, x))
    return model.fit(x, y).eval()


@pytest.fixture(scope="module")
def data():
    return _class_data()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


class Unconditional(Wrapped):
    """The class-Gaussian model seen as an unconditional one: its mixture (no labels)."""

    classes = 0

    def eps(self, z, lvl, labels=None):
        return self.model.eps(z, lvl)


@pytest.mark.parametrize("process", ["vp", "psld"])
def test_class_samples_reproduce_each_class_at_the_defaults(process, data):
    x, y, means, covs = data
    model = _model(process, 3, x, y)
    for k in ((0, 1, 2) if process == "vp" else (2,)):
        s, used = generate(model, range(N), batch_size=N, cond=Conditioning(torch.full((N,), k)))
        assert used["class"] == k and used["guidance"] == 1.0
        s = s.double()
        assert _rel(s.mean(0), means[k]) < 0.05
        assert _rel(torch.cov(s.T), covs[k]) < 0.05


@pytest.mark.parametrize("process", ["vp", "psld", "cld"])
def test_classifier_guidance_with_the_exact_classifier_is_the_class(process, data):
    """∇log p(z_t) + ∇log p(y | z_t) = ∇log p(z_t | y): scale 1 on the mixture must give the class-conditional
    model's samples, seed for seed, for k = 1, k = 2 with both slots predicted (PSLD) and with the momentum's
    only (CLD), through ε = −Lᵀ s."""
    x, y, means, covs = data
    model = _model(process, 3, x, y)
    k, n = 1, 2000
    cond = Conditioning(torch.full((n,), k), classifier=ExactClassifier(model), classifier_scale=1.0)
    s, used = generate(Unconditional(model), range(n), batch_size=n, cond=cond)
    assert used["classifier_scale"] == 1.0
    want, _ = generate(model, range(n), batch_size=n, cond=Conditioning(torch.full((n,), k)))
    assert torch.allclose(s, want, atol=1e-4)
    if process == "vp":  # W = 0: the class-conditional model's own unconditional branch, guided by the classifier
        w0, _ = generate(model, range(n), batch_size=n, cond=Conditioning(cond.labels, 0.0, cond.classifier, 1.0))
        assert torch.allclose(w0, want, atol=1e-4)
    plain, _ = generate(Unconditional(model), range(n), batch_size=n)  # without guidance: the mixture
    assert _rel(plain.double().mean(0), means[k]) > 0.5
    half, _ = generate(Unconditional(model), range(n), batch_size=n, cond=Conditioning(cond.labels, 1.0,
                                                                                      cond.classifier, 0.5))
    assert 0.1 < _rel(half.double().mean(0), means[k]) < _rel(plain.double().mean(0), means[k])


def test_eps_shift_moves_the_score_by_the_given_amount():
    from udiff.phase_space import psld

    for proc in (None, psld(), psld(0.0)):
        if proc is None:
            from udiff.process import VP
            proc = VP()
        from udiff.schedule import VPLinear
        lvl = VPLinear().level(torch.tensor([0.3], dtype=torch.float64), 1)
        p = proc.predicted
        eps = torch.randn(4, p, D, dtype=torch.float64)
        ds = torch.randn(4, proc.k, D, dtype=torch.float64)
        moved = C.score_from_eps(proc, eps - C.eps_shift(proc, ds, lvl), lvl)
        want = C.score_from_eps(proc, eps, lvl) + ds
        slots = slice(proc.k - p, proc.k)  # CLD: only the momentum's score is defined
        assert torch.allclose(moved[:, slots], want[:, slots], atol=1e-10)


def test_free_guidance_moves_the_denoiser_mean_by_the_closed_form(data):
    """Over z_t of the unconditional law, E[D_u] = m̄ (tower rule) and D_c is linear in z, so
    E[D_w] = m̄ + w (I − K)(m_y − m̄) with K = C_y (I + W C_y)⁻¹ W (docs/guidance.md)."""
    x, y, means, _ = data
    model = _model("vp", 3, x, y)
    g = torch.Generator().manual_seed(1)
    n = 200000
    k_of = torch.multinomial(model.class_prior, n, replacement=True, generator=g)  # x0 from the model's mixture
    chol = torch.linalg.cholesky(model.class_cov)[k_of]
    x0 = (model.class_mean[k_of] + (chol @ torch.randn(n, D, 1, generator=g, dtype=torch.float64))[..., 0])[:, None]
    for t in (0.3, 0.5):
        lvl = model.level(torch.tensor([t], dtype=torch.float64))
        z = C.perturb(model.process, x0, torch.randn(n, 1, D, generator=g, dtype=torch.float64), lvl)
        w_obs = C.precision(model.process, lvl).reshape(-1)[0]
        m_bar = model.mean
        for k, w in ((0, 2.0), (2, 3.0)):
            guided = Guided(model, torch.full((n,), k), guidance=w)
            eps = guided.eps(z, lvl).double()
            mean = C.x0_from_eps(model.process, z, eps, lvl)[:, 0].mean(0)
            cy = model.class_cov[k]
            K = cy @ torch.linalg.inv(torch.eye(D, dtype=torch.float64) + w_obs * cy) * w_obs
            want = m_bar + w * (torch.eye(D, dtype=torch.float64) - K) @ (model.class_mean[k] - m_bar)
            assert float((mean - want).norm()) < 0.02 * float((want - m_bar).norm())


class TwoBranches(torch.nn.Module):
    """Class 0 is one Gaussian model, the null class another with the same covariance (CFG's two branches);
    counts its calls and the items it sees."""

    classes = 1

    def __init__(self, cond, uncond):
        super().__init__()
        self.c, self.u = cond, uncond
        self.process, self.schedule, self.event_shape = cond.process, cond.schedule, cond.event_shape
        self.calls = 0

    def level(self, t, **kw):
        return self.c.level(t, **kw)

    def decode(self, x0):
        return self.c.decode(x0)

    def eps(self, z, lvl, labels=None):
        self.calls += 1
        null = labels == self.classes
        return torch.where(null.reshape((-1,) + (1,) * (z.ndim - 1)), self.u.eps(z, lvl), self.c.eps(z, lvl))


@pytest.mark.parametrize("process", ["vp", "psld"])
def test_free_guidance_with_a_shared_covariance_moves_the_samples_mean_by_w(process):
    """Branches N(m_c, C) and N(m_u, C): the guided score is that of N(m_u + w (m_c − m_u), C) at every level,
    for every process; the samples must follow it (W = 1: the conditional model alone, one branch per call)."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(D, D, generator=g) * 0.3 + 0.4 * torch.eye(D)
    m_c, m_u = torch.tensor([0.6, -0.3, 0.2]), torch.tensor([0.2, 0.1, -0.2])
    noise = torch.randn(20000, D, generator=g) @ a.T
    cond, uncond = _model(process, 0, noise + m_c, None), _model(process, 0, noise + m_u, None)
    two = TwoBranches(cond, uncond)
    cov = torch.cov(noise.double().T)
    for w in (1.0, 2.5):
        two.calls = 0
        s, used = generate(two, range(N), batch_size=N, cond=Conditioning(torch.zeros(N, dtype=torch.long), w))
        assert two.calls == used["nfe"]  # both branches in one network call per evaluation
        s = s.double()
        want = (m_u + w * (m_c - m_u)).double()
        assert _rel(s.mean(0), want) < 0.05
        assert _rel(torch.cov(s.T), cov) < 0.05


def test_labels_travel_with_the_seeds(data):
    x, y, means, _ = data
    model = _model("vp", 3, x, y)
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    seeds = [5, 9, 11, 3, 8, 1, 4]
    s, used = generate(model, seeds, batch_size=3, cond=Conditioning(labels, 2.0))
    assert used["class"] == "per seed (tensor labels)"
    for i in (1, 4):
        one, _ = generate(model, [seeds[i]], batch_size=1, cond=Conditioning(labels[i:i + 1], 2.0))
        assert torch.allclose(one[0], s[i], atol=1e-5)


def test_conditioning_refuses_what_cannot_work(data):
    from udiff.errors import UdiffError

    x, y, means, _ = data
    model = _model("vp", 3, x, y)
    with pytest.raises(UdiffError, match="not a class of this model"):
        Conditioning(torch.tensor([3])).check(model)
    with pytest.raises(UdiffError, match="unconditional"):
        Conditioning(torch.tensor([0])).check(Unconditional(model))
    with pytest.raises(UdiffError, match="classifier-free guidance needs"):
        Conditioning(torch.tensor([0]), 2.0, ExactClassifier(model)).check(Unconditional(model))
    assert parse_labels("0*3, 2,1") == [0, 0, 0, 2, 1]
    with pytest.raises(UdiffError, match="not a label"):
        parse_labels("0,x")


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_class_conditional_networks_see_the_label(kind):
    from udiff.nets.mlp import MLP
    from udiff.nets.unet import UNet

    torch.manual_seed(0)
    if kind == "unet":
        net, x = UNet(2, 2, 8, channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), classes=4), \
            torch.randn(3, 2, 8, 8)
        plain = UNet(2, 2, 8, channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=())
    else:
        net, x, plain = MLP(6, 6, hidden=32, depth=2, classes=4), torch.randn(3, 6), MLP(6, 6, hidden=32, depth=2)
    net.eval()
    for m in net.modules():  # the layers that start near zero (gain 1e-5): give them weight so that labels show
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and float(m.weight.detach().abs().max()) < 1e-3:
            torch.nn.init.normal_(m.weight, std=0.05)
    label = torch.full((3,), 100.0)
    a = net(x, label, torch.tensor([0, 1, 2]))
    b = net(x, label, torch.tensor([4, 4, 4]))
    assert not torch.allclose(a, b)
    assert torch.allclose(net(x, label, None), b, atol=1e-5)  # no labels = the null class K
    assert torch.allclose(net(x, label, torch.tensor([0, 0, 0]))[0], a[0], atol=1e-5)
    assert not any("label_embed" in k for k in plain.state_dict())  # unconditional: the artifacts of before


# ------------------------------------------------------------------------------------------------
# Through the CLI: udiff train (class labels, label dropout, the noisy classifier), udiff sample and inpaint.

DIGITS = """
[data]
source = "digits"
[process]
kind = "{process}"
[schedule]
kind = "vp-linear"
[net]
kind = "gaussian"
classes = {classes}
[sample]
sampler = "ddim"
steps = 20
"""


def _nearest_class(images, means):
    from udiff.data import to_unit

    x = to_unit(images).reshape(len(images), -1).double()
    return torch.cdist(x, means.reshape(len(means), -1)).argmin(1)


def test_cli_samples_of_a_class_carry_their_labels(runner, tmp_path, one_thread):
    from conftest import invoke, write
    from udiff import artifacts
    from udiff import data as Dd

    m = str(tmp_path / "g.safetensors")
    invoke(runner, ["train", write(tmp_path / "g.toml", DIGITS.format(process="vp", classes=10)), "-o", m])
    ds = Dd.load("digits")
    _, means, _ = class_moments(ds.unit(), ds.labels, 10)
    out = str(tmp_path / "s.safetensors")
    invoke(runner, ["sample", m, "--seeds", "0-199", "--class", "3", "--guidance", "1.5", "-o", out])
    art = artifacts.load(out, "samples")
    assert art.json("udiff.samples")["class"] == 3 and art.json("udiff.samples")["guidance"] == 1.5
    assert art.tensors["labels"].tolist() == [3] * 200
    assert float((_nearest_class(art.tensors["images"], means) == 3).double().mean()) > 0.9
    labels = write(tmp_path / "labels.txt", "\n".join(str(k % 10) for k in range(40)) + "\n")
    invoke(runner, ["sample", m, "--seeds", "0-39", "--labels", labels, "-o", out])
    art = artifacts.load(out, "samples")
    assert art.tensors["labels"].tolist() == [k % 10 for k in range(40)]
    assert float((_nearest_class(art.tensors["images"], means) == art.tensors["labels"]).double().mean()) > 0.7
    filled = str(tmp_path / "f.safetensors")
    invoke(runner, ["inpaint", m, "digits", "-n", "4", "--mask", "lower-half", "--class", "7", "-o", filled])
    art = artifacts.load(filled, "samples")
    assert art.json("udiff.inpaint")["class"] == 7 and art.tensors["labels"].tolist() == [7] * 4


def test_cli_label_dropout_trains_one_network_for_both(runner, tmp_path, one_thread):
    """Two far-apart classes in 2-D: the trained MLP's class samples sit at their class, its unconditional ones
    (the null class) at both."""
    from safetensors.torch import save_file

    from conftest import invoke, write
    from udiff import artifacts

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4000) % 2
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    x = centres[labels] + 0.3 * torch.randn(4000, 2, generator=g)
    data = str(tmp_path / "two.safetensors")
    save_file({"x": x, "labels": labels}, data)
    rec = write(tmp_path / "c.toml", f'[data]\nsource = "tensors:{data}"\n[schedule]\nkind = "vp-linear"\n[net]\n'
                                     'kind = "mlp"\nhidden = 64\ndepth = 2\nclasses = 2\n[train]\nsteps = 300\n'
                                     'batch_size = 128\nlr = 2e-3\nwarmup = 50\nema = 0.99\ncheckpoint_every = 0\n'
                                     'label_dropout = 0.2\n[sample]\nsampler = "ddim"\nsteps = 40\n')
    m = str(tmp_path / "m.safetensors")
    invoke(runner, ["train", rec, "-o", m])
    out = str(tmp_path / "s.safetensors")
    for k in (0, 1):
        invoke(runner, ["sample", m, "-n", "200", "--class", str(k), "--guidance", "2", "-o", out])
        s = artifacts.load(out, "samples").tensors["x"]
        assert float(((s - centres[k]).norm(dim=1) < 1.0).double().mean()) > 0.9
    invoke(runner, ["sample", m, "-n", "200", "-o", out])
    s = artifacts.load(out, "samples").tensors["x"]
    assert 0.25 < float((s[:, 0] > 0).double().mean()) < 0.75


def test_cli_noisy_classifier_trains_and_guides(runner, tmp_path, one_thread):
    from conftest import invoke, write
    from udiff import artifacts

    rec = DIGITS.format(process="vp", classes=0).replace('kind = "gaussian"\nclasses = 0', 'kind = "noisy-classifier"'
                                                                                           '\nchannels = 8')
    rec = write(tmp_path / "n.toml", rec + "[train]\nsteps = 100\nbatch_size = 64\nlr = 3e-3\nwarmup = 10\n")
    cls = str(tmp_path / "n.safetensors")
    r = invoke(runner, ["train", rec, "-o", cls, "--json"])
    art = artifacts.load(cls, "noisy-classifier")
    acc = art.json("udiff.classifier")["accuracy_at_t"]
    assert acc["0.0"] > 0.6 and acc["0.0"] > acc["1.0"]  # it learned; at t = 1 the state says nothing
    assert "test_accuracy" in r.stdout
    m = str(tmp_path / "g.safetensors")
    invoke(runner, ["train", write(tmp_path / "g.toml", DIGITS.format(process="vp", classes=0)), "-o", m])
    out = str(tmp_path / "s.safetensors")
    invoke(runner, ["sample", m, "--seeds", "0-99", "--class", "0", "--classifier", cls, "--classifier-scale", "4",
                    "-o", out])
    meta = artifacts.load(out, "samples").json("udiff.samples")
    assert meta["class"] == 0 and meta["classifier"].startswith(cls) and meta["classifier_scale"] == 4.0
    other = str(tmp_path / "p.safetensors")
    invoke(runner, ["train", write(tmp_path / "p.toml", DIGITS.format(process="psld", classes=0)), "-o", other])
    r = invoke(runner, ["sample", other, "-n", "2", "--class", "0", "--classifier", cls, "--sampler", "heun",
                        "-o", out], ok=False)
    assert r.exit_code == 2 and "trained on other states" in r.stderr
