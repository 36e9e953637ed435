"""Defaults that hold: every process × every sampler at its DEFAULT steps and grid, on the Gaussian oracle.

The model is the exact Gaussian denoiser for 4-D Gaussian data with covariance eigenvalues spanning two
decades; 20,000 samples must match the data's mean and covariance within 5% (relative Frobenius norm), or the
sampler is refused up front with one line. The schedule is VP-linear, whose prior matches the data's law at
t = 1 to 1e-4, so what is measured is the sampler's discretization (the MC error is about 1.5%). The default
schedule (VDM's, gamma up to 5) and the other schedules are checked with each process's default sampler
below; tests/test_phase_space.py and tests/test_gud.py cover the component-wise schedules and bases.
Nothing here picks good settings: a test that passes only with tuned settings hides a default that fails.
"""

import math

import pytest
import torch

from conftest import gaussian_params
from udiff import recipe as R
from udiff.build import PROCESSES, build_model
from udiff.errors import NonFiniteResult, UdiffError
from udiff.nets.gaussian import encode_moments
from udiff.registry import SAMPLERS
from udiff.samplers import Plan, generate

D, N = 4, 20000
CLD_LIKE = {"kind": "recipe", "D": [[0.0, 0.0], [0.0, 0.5]], "Q": [[0.0, -0.5], [0.5, 0.0]], "mass": 0.25}
PROCS = {name: {"kind": name} for name in sorted(PROCESSES) if name != "recipe"}
PROCS["recipe"] = CLD_LIKE
PROCS["recipe-1x1"] = {"kind": "recipe", "D": [[0.5]], "Q": [[0.0]]}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def exact_model(process: dict, schedule: dict, shape=(D,)):
    raw = {"data": {"source": "digits"}, "process": process, "schedule": schedule, "net": {"kind": "gaussian"}}
    model = build_model(R.from_dict(raw), {"shape": list(shape)})
    mean, cov = gaussian_params(math.prod(shape))
    m, c = encode_moments(model.basis, mean, cov, shape)
    model.mean.copy_(m)
    model.cov.copy_(c)
    return model, mean, cov


def errors(x, mean, cov):
    x = x.reshape(x.shape[0], -1).double()
    return float((x.mean(0) - mean).norm() / mean.norm()), float((torch.cov(x.T) - cov).norm() / cov.norm())


def _cases():
    for proc in sorted(PROCS):
        for sampler in SAMPLERS.names():
            yield proc, sampler


@pytest.mark.parametrize("proc,sampler", list(_cases()))
def test_every_sampler_at_its_defaults_on_every_process(proc, sampler):
    model, mean, cov = exact_model(PROCS[proc], {"kind": "vp-linear"})
    traits = model.process.traits
    if not SAMPLERS.entry(sampler).requires <= traits:
        with pytest.raises(UdiffError) as e:
            generate(model, range(4), Plan(sampler=sampler))
        assert len(str(e.value).splitlines()) == 1 and "use one of" in str(e.value)
        return
    x, used = generate(model, range(N), Plan(sampler=sampler), batch_size=N)
    em, ec = errors(x, mean, cov)
    assert em < 0.05 and ec < 0.05, (proc, sampler, used, em, ec)


@pytest.mark.parametrize("schedule", ["vdm-linear", "vp-linear", "cosine"])
@pytest.mark.parametrize("proc", ["vp", "ve", "sub-vp", "psld", "cld"])
def test_the_default_sampler_of_every_process_and_schedule(proc, schedule):
    """No settings at all: the sampler, its steps and grid are what a user gets (the issue: CLD with the
    default VDM schedule wrote 100% NaN)."""
    model, mean, cov = exact_model(PROCS[proc], {"kind": schedule})
    x, used = generate(model, range(N), batch_size=N)
    em, ec = errors(x, mean, cov)
    assert em < 0.05 and ec < 0.05, (proc, schedule, used, em, ec)


def test_a_nan_in_the_network_output_stops_sampling_and_writes_nothing(runner, tmp_path, gauss_file):
    """The network's output is NaN (its mean buffer is): `udiff sample` and `udiff inpaint` exit 1 with one
    line and leave no file; `udiff eval-nll` likewise."""
    from conftest import invoke, write
    from udiff import artifacts

    recipe = write(tmp_path / "g.toml", f'[data]\nsource = "tensors:{gauss_file}"\n[net]\nkind = "gaussian"\n')
    good = tmp_path / "m.safetensors"
    invoke(runner, ["train", recipe, "-o", good])
    art = artifacts.load(str(good), "model")
    tensors = dict(art.tensors)
    for key in ("weights.mean", "ema.mean"):
        tensors[key] = torch.full_like(tensors[key], float("nan"))
    bad = tmp_path / "nan.safetensors"
    artifacts.save(str(bad), tensors, "model", art.recipe_json, {k: v for k, v in art.meta.items()
                                                               if not k.startswith(("udiff.kind", "udiff.sha"))})
    out = tmp_path / "s.safetensors"
    for args in (["sample", bad, "-n", 8, "-o", out], ["eval-nll", bad, "--data", f"tensors:{gauss_file}",
                                                      "--limit", 16]):
        res = invoke(runner, args, ok=False)
        assert res.exit_code == 1, res.output
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "not finite" in lines[0], res.output
        assert not out.exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary files left either


def test_check_finite_names_the_problem():
    from udiff.samplers import check_finite

    with pytest.raises(NonFiniteResult) as e:
        check_finite(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "udiff sample (heun, 3 steps)")
    assert e.value.exit_code == 1 and "1 of 2" in str(e.value)


def test_dpmpp_2m_at_20_evaluations_beats_heun_at_20():
    model, mean, cov = exact_model(PROCS["vp"], {"kind": "vp-linear"})
    out = {}
    for sampler, steps in (("dpmpp-2m", 20), ("heun", 10)):
        x, used = generate(model, range(N), Plan(sampler=sampler, steps=steps, denoise=False), batch_size=N)
        assert used["nfe"] == 20
        out[sampler] = errors(x, mean, cov)
    assert out["dpmpp-2m"][1] < out["heun"][1] and out["dpmpp-2m"][0] < 0.05, out
