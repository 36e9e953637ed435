"""Every list of names a user can choose from is one registry: the recipe schema, the CLI's choices, the man
pages and shell completion offer exactly its names, and every name has an implementation."""

import dataclasses
import os
import subprocess
import sys

import pytest

from udiff import build
from udiff import recipe as R
from udiff import registry as REG
from udiff.basis import BASES
from udiff.cli.manpages import pages

NAMED = {  # registry → (recipe section, key) that chooses from it
    "SAMPLERS": ("sample", "sampler"),
    "GRIDS": ("sample", "grid"),
    "WEIGHTINGS": ("train", "weighting"),
    "TIMES": ("train", "times"),
}


def _choices(section, key, kind=None):
    cls = R.spec_class(section, kind)
    f = {f.name: f for f in dataclasses.fields(cls)}[key]
    return tuple(f.metadata["choices"])


@pytest.mark.parametrize("name", sorted(NAMED))
def test_recipe_choices_are_the_registry(name):
    reg = getattr(REG, name)
    assert _choices(*NAMED[name]) == reg.names()
    assert reg.implemented() == reg.names()  # every declared name has an implementation


def test_net_options_are_the_registries():
    for kind in ("unet", "mlp"):
        assert _choices("net", "cond", kind) == REG.NET_COND.names()
        assert _choices("net", "precond", kind) == ("auto",) + REG.PRECONDS.names()
    assert REG.PRECONDS.implemented() == REG.PRECONDS.names()


def test_kind_sections_have_one_implementation_per_kind():
    assert sorted(R.kinds("process")) == sorted(build.PROCESSES)
    assert sorted(R.kinds("schedule")) == sorted(build.SCHEDULES)
    assert sorted(R.kinds("basis")) == sorted(BASES)
    # the diffusion networks, the exact Gaussian denoiser (model.GaussianModel), eval-fid's classifier and the
    # noise-conditional classifier of classifier guidance (model.NoisyClassifier)
    assert sorted(R.kinds("net")) == sorted(list(build.NETS) + ["gaussian", "classifier", "noisy-classifier"])
    assert R.spec_class("net", "classifier") is R.ClassifierSpec


def test_inpaint_and_likelihood_names():
    from udiff import inpaint, likelihood

    assert REG.MASKS.implemented() == REG.MASKS.names()
    assert inpaint.METHODS == REG.INPAINT_METHODS.names() and likelihood.METHODS == REG.NLL_METHODS.names()


def test_cli_man_pages_and_completion_offer_the_registry():
    from udiff.cli.sample import command as sample

    opts = {p.name: p for p in sample.params}
    model_samplers = [n for n in opts["sampler"].type.choices if n in REG.SAMPLERS]
    assert tuple(model_samplers) == REG.SAMPLERS.names()
    assert tuple(opts["time_grid"].type.choices) == REG.GRIDS.names()
    page = pages()["udiff-sample.1"]
    for n in REG.SAMPLERS.names() + REG.GRIDS.names():
        assert n.replace("-", "\\-") in page, n  # roff writes a hyphen as \-
    recipe_page = pages()["udiff-recipe.5"]
    for n in REG.WEIGHTINGS.names() + REG.TIMES.names() + REG.PRECONDS.names():
        assert n.replace("-", "\\-") in recipe_page, n
    env = dict(os.environ, _UDIFF_COMPLETE="bash_complete", COMP_WORDS="udiff sample m.safetensors --sampler ",
               COMP_CWORD="4")
    out = subprocess.run([sys.executable, "-m", "udiff"], env=env, capture_output=True, text=True, check=True).stdout
    offered = {line.split(",", 1)[-1] for line in out.splitlines() if line.strip()}
    assert set(REG.SAMPLERS.names()) <= offered


def test_a_sampler_a_process_cannot_take_is_one_line_naming_what_can():
    from udiff.errors import UdiffError
    from udiff.phase_space import psld

    with pytest.raises(UdiffError) as e:
        REG.SAMPLERS.check("ddim", psld().traits, "process 'psld'")
    msg = str(e.value)
    assert "ddim" in msg and "one number per component" in msg and "sscs" in msg and "heun" in msg
    assert "ddim" not in msg.split("use one of:")[1]


def test_target_samplers_and_lambda_grids():
    from udiff import dilation as D

    assert _choices("sample", "sampler", None) == REG.SAMPLERS.names()
    spec = R.TargetSampleSpec
    fields = {f.name: f for f in dataclasses.fields(spec)}
    assert tuple(fields["sampler"].metadata["choices"]) == REG.TARGET_SAMPLERS.names() == D.SAMPLERS
    assert tuple(fields["lambda_grid"].metadata["choices"]) == REG.LAMBDA_GRIDS.names() == D.GRIDS
    assert REG.TARGET_SAMPLERS.implemented() == REG.TARGET_SAMPLERS.names()
    assert REG.LAMBDA_GRIDS.implemented() == REG.LAMBDA_GRIDS.names()
