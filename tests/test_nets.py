"""Networks: the exact Gaussian denoiser against closed forms; backbone shapes and presets."""

import pytest
import torch

from udiff import recipe as R
from udiff.build import build_model, resolve
from udiff.errors import RecipeError
from udiff.model import GaussianModel
from udiff.nets.unet import PRESETS, UNet
from udiff.process import VP
from udiff.basis import PixelBasis
from udiff.schedule import VDMLinear


def _gauss(mean, cov, shape):
    m = GaussianModel(PixelBasis(shape), VP(), VDMLinear(), shape)
    m.mean.copy_(mean)
    m.cov.copy_(cov)
    return m


def test_diagonal_gaussian_posterior_is_the_scalar_formula():
    d = 5
    mean = torch.randn(d, dtype=torch.float64)
    var = torch.tensor([1.0, 0.5, 0.1, 0.01, 0.0], dtype=torch.float64)  # includes a constant component
    m = _gauss(mean, torch.diag(var), (d,))
    lvl = m.level(torch.tensor([0.2, 0.7], dtype=torch.float64))
    z = torch.randn(2, 1, d, dtype=torch.float64)
    a, s2 = torch.sigmoid(-lvl.gamma[:, 0]).sqrt(), torch.sigmoid(lvl.gamma[:, 0])
    x0 = mean + var * a / (a * a * var + s2) * (z[:, 0] - a * mean)  # E[x0 | z], one component at a time
    assert torch.allclose(m.posterior_mean(z, lvl)[:, 0], x0, atol=1e-10)
    eps = (z[:, 0] - a * x0) / s2.sqrt()
    assert torch.allclose(m.eps(z, lvl)[:, 0].double(), eps, atol=1e-5)


def test_gaussian_posterior_matches_joint_conditioning_for_full_covariance():
    d = 6
    g = torch.Generator().manual_seed(1)
    a = torch.randn(d, d, dtype=torch.float64, generator=g)
    cov = a @ a.T / d
    mean = torch.randn(d, dtype=torch.float64, generator=g)
    m = _gauss(mean, cov, (d,))
    lvl = m.level(torch.tensor([0.4], dtype=torch.float64))
    al, s2 = float(torch.sigmoid(-lvl.gamma).sqrt()), float(torch.sigmoid(lvl.gamma))
    z = torch.randn(3, 1, d, dtype=torch.float64, generator=g)
    k = al * al * cov + s2 * torch.eye(d, dtype=torch.float64)  # Cov(z)
    x0 = mean + (al * cov @ torch.linalg.solve(k, (z[:, 0] - al * mean).T)).T
    assert torch.allclose(m.posterior_mean(z, lvl)[:, 0], x0, atol=1e-9)


def test_fit_sets_moments():
    x = torch.randn(1000, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([1.0, -1.0, 0.0])
    m = GaussianModel(PixelBasis((3,)), VP(), VDMLinear(), (3,)).fit(x)
    assert torch.allclose(m.mean.float(), x.mean(0), atol=1e-5)
    assert torch.allclose(m.cov.float(), torch.cov(x.T), atol=1e-4)


@pytest.mark.parametrize("preset, size", [("tiny-8", 8), ("small-28", 28)])
def test_unet_presets_map_shapes(preset, size):
    net = UNet(2, 1, size, **PRESETS[preset])
    x = torch.randn(3, 2, size, size)
    y = net(x, torch.randn(3))
    assert y.shape == (3, 1, size, size)
    assert y.abs().max() < 1e-2  # near-zero output at initialisation (zero-ish head)


def test_ddpmpp_preset_has_edms_size():
    net = UNet(3, 3, 32, **PRESETS["ddpmpp"])
    n = sum(p.numel() for p in net.parameters())
    assert 55e6 < n < 57e6  # EDM's DDPM++ CIFAR-10 network has 55.7M parameters


def test_build_checks_image_shapes():
    rec = R.loads('[data]\nsource="x"\n[net]\nkind="unet"\n')
    with pytest.raises(RecipeError, match="needs image data"):
        build_model(resolve(rec, {"shape": [16]}), {"shape": [16]})
    rec = R.loads('[data]\nsource="x"\n[net]\nkind="unet"\nchannel_mult=[1,2,2,2]\n')
    with pytest.raises(RecipeError, match="divisible by 8"):
        build_model(resolve(rec, {"shape": [1, 28, 28]}), {"shape": [1, 28, 28]})
    rec = R.loads('[data]\nsource="x"\n[net]\nkind="unet"\nattn_resolutions=[16]\n')
    with pytest.raises(RecipeError, match=r"16 is not a resolution of this network \(allowed: 28, 14, 7\)"):
        build_model(resolve(rec, {"shape": [1, 28, 28]}), {"shape": [1, 28, 28]})


def test_auto_preset_is_recorded():
    rec = resolve(R.loads('[data]\nsource="x"\n[net]\nchannels=16\n'), {"shape": [1, 8, 8]})
    assert rec.net.preset == "tiny-8" and rec.net.channels == 16 and rec.net.num_blocks == 2


def test_model_state_has_each_tensor_once():
    rec = resolve(R.loads('[data]\nsource="x"\n'), {"shape": [1, 8, 8]})
    model = build_model(rec, {"shape": [1, 8, 8]}).prepare("cpu")
    keys = list(model.state_dict())
    assert keys and all(k.split(".")[0] in ("net", "basis", "schedule") for k in keys)
    assert not any("_forward" in k for k in keys)
    assert len({id(p) for p in model.parameters()}) == len(list(model.parameters()))
