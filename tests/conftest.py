"""Shared fixtures: tiny data sets, recipes and a CLI runner. Everything runs on the CPU in seconds."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECIPES = os.path.join(ROOT, "recipes")

torch.set_num_threads(min(4, torch.get_num_threads()))


def gaussian_params(d: int = 16, seed: int = 0):
    """A mean and a covariance with eigenvalues spread over two decades (1 ... 0.01), float64."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))
    cov = (q * torch.logspace(0, -2, d, dtype=torch.float64)) @ q.T
    mean = torch.randn(d, dtype=torch.float64, generator=g) * 0.5
    return mean, cov


def gaussian_data(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    mean, cov = gaussian_params(d, seed)
    g = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(n, d, dtype=torch.float64, generator=g)
    return (z @ torch.linalg.cholesky(cov).T + mean).float()


@pytest.fixture(scope="session")
def gauss_file(tmp_path_factory):
    """tensors: file with key x: 50,000 draws of a 16-dimensional Gaussian."""
    path = tmp_path_factory.mktemp("data") / "gauss16.safetensors"
    save_file({"x": gaussian_data(50_000)}, str(path))
    return str(path)


@pytest.fixture
def one_thread():
    """Many small tensor operations: one thread is fastest, and far faster on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, args, ok=True):
    """Run the udiff CLI in-process; assert success unless ok=False."""
    from udiff.cli import cli

    result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok and result.exit_code != 0:
        raise AssertionError(f"udiff {' '.join(map(str, args))} failed ({result.exit_code}):\n{result.output}"
                             f"{getattr(result, 'stderr', '')}")
    return result


def vector_recipe(data: str, net: str, sampler: str, extra: str = "") -> str:
    """A recipe for float vectors in a tensors: file (VP, vp-linear, 2 training steps): the tests' small case."""
    return (f'[data]\nsource = "tensors:{data}"\n[schedule]\nkind = "vp-linear"\n[net]\nkind = "{net}"\n'
            f'[train]\nsteps = 2\nbatch_size = 16\ncheckpoint_every = 0\n[sample]\nsampler = "{sampler}"\n{extra}')


def write(path, text: str) -> str:
    with open(path, "w") as fh:
        fh.write(text)
    return str(path)


PYTHON = sys.executable
