"""Recipes: defaults, overrides, validation messages (golden), round trips. No torch needed."""

import json

import pytest

from udiff import recipe as R
from udiff.errors import RecipeError

BASE = '[data]\nsource = "digits"\n'


def test_defaults_are_filled_in():
    r = R.loads(BASE)
    assert r.schedule.kind == "vdm-linear" and r.schedule.gamma_min == -13.3 and r.schedule.gamma_max == 5.0
    assert r.process.kind == "vp" and r.basis.kind == "pixel" and r.prior.kind == "standard"
    assert r.net.kind == "unet" and r.train.steps == 10000 and r.net.precond == "auto"
    assert r.sample.sampler is None  # chosen per process and schedule by measurement (samplers.default_sampler)


def test_overrides_are_typed_and_validated():
    r = R.loads(BASE, ["train.steps=7", "train.lr=1e-3", "sample.sampler=ddim", "net.channel_mult=[1, 2]",
                       "schedule.kind=cosine", "schedule.gamma_max=12"])
    assert r.train.steps == 7 and r.train.lr == 1e-3 and r.sample.sampler == "ddim"
    assert r.net.channel_mult == (1, 2) and r.schedule.kind == "cosine" and r.schedule.gamma_max == 12.0


def test_json_round_trip_is_exact():
    r = R.loads(BASE, ["schedule.kind=vp-linear", "train.betas=[0.9, 0.99]", "net.kind=mlp"])
    again = R.from_json(r.to_json(), "artifact")
    assert again == r and again.to_json() == r.to_json()
    assert json.loads(r.to_json())["schedule"] == {"kind": "vp-linear", "beta_min": 0.1, "beta_max": 20.0,
                                                  "t_min": 1e-5}


def test_toml_round_trip():
    r = R.loads(BASE, ["schedule.kind=cosine", "net.kind=mlp", "sample.steps=12"])
    assert R.loads(r.toml()) == r


@pytest.mark.parametrize("text, message", [
    ("[trian]\n", "x.toml: [trian]: unknown section; did you mean 'train'? (allowed: data, basis, prior, "
                  "process, schedule, net, train, sample)"),
    ("[train]\nstepz = 3\n", "x.toml: [train] stepz: not a key of [train]; did you mean 'steps'?"),
    ("[train]\nsteps = \"many\"\n", "x.toml: [train] steps: expected an integer, got 'many'"),
    ("[train]\nsteps = -1\n", "x.toml: [train] steps: must be >= 0, got -1"),
    ("[train]\nlr = 0\n", "x.toml: [train] lr: must be > 0.0, got 0.0"),
    ("[train]\nbetas = [0.9]\n", "x.toml: [train] betas: expected 2 values, got 1"),
    ("[train]\ncompile = 1\n", "x.toml: [train] compile: expected a boolean (true/false), got 1"),
    ("[schedule]\nkind = \"cos\"\n", "x.toml: [schedule] kind: unknown kind 'cos'; did you mean 'cosine'? "
                                     "(allowed: cosine, soft-conditioning, vdm-learned, vdm-linear, vp-linear)"),
    ("[schedule]\ngamma_min = 6\n", "x.toml: [schedule] gamma_max: must exceed gamma_min (6.0), got 5.0"),
    ("[schedule]\nkind = \"cosine\"\nbeta_min = 1\n", "x.toml: [schedule] beta_min: not a key of [schedule] "
                                                      "(kind 'cosine')"),
    ("[sample]\nsampler = \"hen\"\n", "x.toml: [sample] sampler: 'hen' is not allowed; did you mean 'heun'? "
                                      "(allowed: " + ", ".join(R.SAMPLERS) + ")"),
    ("[net]\nkind = \"unet\"\npreset = \"huge\"\n", "x.toml: [net] preset: 'huge' is not allowed"),
    ("[process]\nkind = \"vp\"\nbeta = 3\n", "x.toml: [process] beta: [process] (kind 'vp') takes no keys"),
    ("data = 3\n", "x.toml: [data] must be a table, got 3"),
])
def test_error_messages(text, message):
    with pytest.raises(RecipeError) as e:
        R.loads(text if text.startswith("data") else BASE + text, origin="x.toml")
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_missing_source_and_bad_override():
    with pytest.raises(RecipeError, match=r"\[data\] source: missing; it is required"):
        R.loads("")
    with pytest.raises(RecipeError, match=r"--set trainsteps: expected section.key=value"):
        R.loads(BASE, ["trainsteps"])
    with pytest.raises(RecipeError, match=r"--set foo.bar=1: \[foo\]: unknown section"):
        R.loads(BASE, ["foo.bar=1"])


def test_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        R.load(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        R.load(str(bad))


def test_every_shipped_recipe_loads():
    import glob
    import os

    from conftest import RECIPES

    paths = glob.glob(os.path.join(RECIPES, "*.toml"))
    assert paths
    for p in paths:
        R.load(p, target=None)  # model recipes and target recipes (recipes/dilation-*.toml) alike


def test_reference_lists_every_kind_and_key():
    text = R.reference()
    for section in R.SECTIONS:
        assert f"[{section}]" in text
    for kind in R.kinds("schedule") + R.kinds("net"):
        assert f'kind = "{kind}"' in text
    assert "gamma_min = -13.3" in text and "steps = 10000" in text
