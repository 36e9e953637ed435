"""The strongest oracle: with the exact Gaussian denoiser, every sampler must reproduce the data's law.

Gaussian vector data (d = 16, covariance eigenvalues from 1 to 0.01) go through the real CLI: `udiff train`
fits the `gaussian` net (mean and covariance, no gradient steps), `udiff sample` draws 20,000 samples, and
their mean and covariance must be within 5% (relative Frobenius norm) of the data's. The schedule is the
VP-SDE's linear beta, whose prior at t = 1 matches N(0, I) to 1e-4, so the only errors left are the
sampler's discretization and the Monte Carlo error of 20,000 draws (about 2%).
"""

import pytest
import torch
from safetensors.torch import load_file

from conftest import invoke, write
from udiff import artifacts

RECIPE = """
[data]
source = "tensors:{path}"
[schedule]
kind = "vp-linear"
[net]
kind = "gaussian"
"""

STEPS = {"ancestral": 1000, "em": 1000, "ddim": 250, "heun": 64}


@pytest.fixture(scope="module")
def gauss_model(gauss_file, tmp_path_factory):
    from click.testing import CliRunner

    d = tmp_path_factory.mktemp("oracle")
    recipe = write(d / "gauss.toml", RECIPE.format(path=gauss_file))
    model = str(d / "model.safetensors")
    invoke(CliRunner(), ["train", recipe, "-o", model])
    return model


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("sampler", sorted(STEPS))
def test_every_sampler_reproduces_the_gaussian(sampler, gauss_model, gauss_file, runner, tmp_path):
    out = str(tmp_path / "s.safetensors")
    invoke(runner, ["sample", gauss_model, "-n", 20000, "--sampler", sampler, "--steps", STEPS[sampler],
                    "--batch-size", 20000, "-o", out])
    x = artifacts.load(out, "samples").tensors["x"].double()
    ref = load_file(gauss_file)["x"].double()
    assert x.shape == (20000, 16)
    assert _rel(x.mean(0), ref.mean(0)) < 0.05
    assert _rel(torch.cov(x.T), torch.cov(ref.T)) < 0.05


def test_error_shrinks_with_more_steps(gauss_model, runner, tmp_path):
    """A wrong drift or step would plateau; a correct sampler converges to the data's covariance."""
    from udiff.build import model_from_artifact
    from udiff.samplers import Plan, generate

    model, _, _ = model_from_artifact(artifacts.load(gauss_model, "model"))
    cov = model.cov.double()
    errs = []
    for steps in (8, 32):
        x, _ = generate(model, range(20000), Plan(sampler="heun", steps=steps), batch_size=20000)
        errs.append(_rel(torch.cov(x.double().T), cov))
    assert errs[1] < 0.5 * errs[0]
