"""`udiff check`: its figures are what the real exact-Gaussian model gives when trained and sampled, its floor is
the Monte-Carlo error, and it tells a coarse sampler from a fine one."""

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import gaussian_data, invoke, vector_recipe, write
from udiff import artifacts
from udiff.check import data_moments, gaussian_nll, moment_errors

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    data = str(d / "g.safetensors")
    save_file({"x": gaussian_data(4000, d=4)}, data)
    return d, data


def test_check_equals_the_trained_gaussian_model_sampled(setup, runner, one_thread):
    d, data = setup
    rec = write(d / "mlp.toml", vector_recipe(data, "mlp", "heun"))  # check ignores the recipe's own network
    r = json.loads(invoke(runner, ["check", rec, "-n", "3000", "--nll-items", "200", "--json"]).stdout)
    model = str(d / "gauss.safetensors")
    invoke(runner, ["train", write(d / "gauss.toml", vector_recipe(data, "gaussian", "heun")), "-o", model])
    samples = str(d / "s.safetensors")
    invoke(runner, ["sample", model, "--seeds", "0-2999", "-o", samples])
    x = artifacts.load(samples, "samples").tensors["x"]
    from udiff import data as D

    mean, cov = data_moments(D.load(f"tensors:{data}"))
    real = moment_errors(x, mean, cov)
    for key in ("mean_error", "cov_error"):
        assert r["errors"][key] == pytest.approx(real[key], rel=1e-3, abs=1e-4)  # the same model, seeds, sampler
    # heun at its default steps on VP-linear: at the Monte-Carlo floor (within twice its size)
    assert r["errors"]["cov_error"] < 2 * r["floor"]["cov_error"] + 0.01
    # float data: the bound of the exact model is the Gaussian's exact NLL up to the ends and the estimator
    assert r["reference_nll"] == pytest.approx(gaussian_nll(D.load(f"tensors:{data}").unit()[:200], mean, cov))
    assert abs(r["endpoint_cost"]) < 4 * r["bound"]["stderr"] + 0.01


def test_check_sees_a_coarse_sampler(setup, runner, one_thread):
    d, data = setup
    rec = write(d / "coarse.toml", vector_recipe(data, "mlp", "heun"))
    fine = json.loads(invoke(runner, ["check", rec, "-n", "2000", "--nll-items", "50", "--json"]).stdout)
    coarse = json.loads(invoke(runner, ["check", rec, "-n", "2000", "--nll-items", "50", "--sampler", "ddim",
                                        "--steps", "4", "--json"]).stdout)
    assert coarse["sampler"]["steps"] == 4 and coarse["sampler"]["sampler"] == "ddim"
    assert coarse["errors"]["cov_error"] > 3 * max(fine["errors"]["cov_error"], fine["floor"]["cov_error"])


def test_check_on_8bit_images_reports_the_ends(runner, one_thread):
    r = json.loads(invoke(runner, ["check", "@digits", "-n", "500", "--nll-items", "64", "--steps", "32",
                                   "--json"]).stdout)
    b = r["bound"]
    assert r["units"] == "bits/dim" and r["dims"] == 64 and r["sampler"]["steps"] == 32
    own = json.loads(invoke(runner, ["check", "@digits", "-n", "20", "--nll-items", "4", "--sampler", "heun",
                                     "--json"]).stdout)
    assert own["sampler"]["steps"] == 32 and own["sampler"]["grid"] == "edm"  # heun's defaults, not the recipe's 256
    assert r["endpoint_cost"] == pytest.approx(b["prior"] + b["recon"])
    assert b["value"] == pytest.approx(b["prior"] + b["recon"] + b["diffusion"], rel=1e-6)
    low = json.loads(invoke(runner, ["check", "@digits", "-n", "500", "--nll-items", "64", "--steps", "32",
                                     "--set", "schedule.gamma_max=2", "--json"]).stdout)
    assert low["bound"]["prior"] > 10 * b["prior"]  # a schedule that stops short of noise pays at t = 1


def test_check_refuses_too_many_dimensions(runner, tmp_path):
    r = invoke(runner, ["check", "@digits", "--max-dims", "32"], ok=False)
    assert r.exit_code == 2 and "more than --max-dims 32" in r.stderr and r.stderr.count("\n") == 1


def test_moment_errors_of_exact_draws_shrink_like_one_over_root_n():
    from udiff.check import exact_draws

    mean, cov = torch.zeros(3, dtype=torch.float64), torch.diag(torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))
    def rms(n):
        return sum(moment_errors(exact_draws(mean, cov, n, s), mean, cov)["cov_error"] ** 2 for s in range(16)) ** 0.5

    assert 5 < rms(500) / rms(32000) < 12  # sqrt(64) = 8
