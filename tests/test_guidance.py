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
from udiff.nets.gaussian import class_moments
from udiff.guidance import Conditioning, ExactClassifier, Guided, Wrapped, drop_labels, parse_labels
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
    assert used["labels"] == labels.tolist() and used["class"] is None
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


def test_label_dropout_drops_at_its_rate():
    torch.manual_seed(0)
    labels = torch.zeros(100000, dtype=torch.long)
    out = drop_labels(labels, 0.1, 10)
    assert set(out.unique().tolist()) == {0, 10}
    assert abs(float((out == 10).double().mean()) - 0.1) < 0.005
    assert drop_labels(labels, 0.0, 10) is labels


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
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and float(m.weight.abs().max()) < 1e-3:
            torch.nn.init.normal_(m.weight, std=0.05)
    label = torch.full((3,), 100.0)
    a = net(x, label, torch.tensor([0, 1, 2]))
    b = net(x, label, torch.tensor([4, 4, 4]))
    assert not torch.allclose(a, b)
    assert torch.allclose(net(x, label, None), b, atol=1e-5)  # no labels = the null class K
    assert torch.allclose(net(x, label, torch.tensor([0, 0, 0]))[0], a[0], atol=1e-5)
    assert not any("label_embed" in k for k in plain.state_dict())  # unconditional: the artifacts of before
