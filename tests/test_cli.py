"""The command line: help, one-line errors with exit status 2 and no output, pipelines, real processes."""

import json
import os
import subprocess

import pytest
import torch

from conftest import PYTHON, RECIPES, invoke, write
from udiff import artifacts
from udiff.cli import COMMANDS

VEC_RECIPE = """
[data]
source = "tensors:{path}"
[schedule]
kind = "vp-linear"
[net]
kind = "{net}"
[train]
steps = 3
batch_size = 32
checkpoint_every = 0
[sample]
sampler = "ddim"
steps = 8
"""


@pytest.fixture(scope="module")
def vec_models(gauss_file, tmp_path_factory):
    from click.testing import CliRunner

    d = tmp_path_factory.mktemp("vec")
    out = {}
    for net in ("mlp", "gaussian"):
        rec = write(d / f"{net}.toml", VEC_RECIPE.format(path=gauss_file, net=net))
        out[net] = str(d / f"{net}.safetensors")
        invoke(CliRunner(), ["train", rec, "-o", out[net]])
    return out


def test_help_lists_every_command(runner):
    r = invoke(runner, ["--help"])
    for name in COMMANDS:
        assert name in r.output
    for name in COMMANDS:
        r = invoke(runner, [name, "--help"])
        assert "Usage: udiff " + name in r.output


_NO_TORCH = """
import sys
from udiff.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert e.code in (0, None), e.code
assert "torch" not in sys.modules, "imported torch"
"""


@pytest.mark.parametrize("args", [["--help"]] + [[name, "--help"] for name in COMMANDS])
def test_help_does_not_import_torch(args):
    """`--help` answers at once: torch takes seconds to import (6-9 s on a loaded machine, measured)."""
    r = subprocess.run([PYTHON, "-c", _NO_TORCH, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("words,cword,expect", [("udiff tr", 1, "train"), ("udiff train @dig", 2, "@digits"),
                                                ("udiff sample --sampler dpm", 3, "dpmpp-2m-sde"),
                                                ("udiff plot ", 2, "history")])
def test_shell_completion_does_not_import_torch(words, cword, expect):
    """Every Tab press runs udiff: completion must stay fast (it took 6.7 s when it imported torch)."""
    env = dict(os.environ, COMP_WORDS=words, COMP_CWORD=str(cword), _UDIFF_COMPLETE="bash_complete")
    r = subprocess.run([PYTHON, "-c", _NO_TORCH], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"plain,{expect}" in r.stdout.split(), r.stdout  # bash_complete answers "type,value" lines


def test_cpu_runs_keep_freed_memory():
    """glibc's malloc is told to keep freed blocks (mallopt answers 1 for each setting) where there is glibc."""
    import platform

    from udiff.cli.options import keep_freed_memory

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc


def test_bare_udiff_shows_help(runner):
    r = invoke(runner, [])
    assert "Commands:" in r.output


def _fails(runner, args, needle, tmp_path):
    before = set(os.listdir(tmp_path))
    r = invoke(runner, args, ok=False)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1, r.stderr  # exactly one line
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.output
    assert set(os.listdir(tmp_path)) == before  # nothing written
    return r


def test_bad_recipes(runner, tmp_path, gauss_file):
    out = str(tmp_path / "m.safetensors")
    bad = write(tmp_path / "bad.toml", VEC_RECIPE.format(path=gauss_file, net="mlp") + "[train]\n")
    _fails(runner, ["train", bad, "-o", out], "not valid TOML", tmp_path)
    good = write(tmp_path / "good.toml", VEC_RECIPE.format(path=gauss_file, net="mlp"))
    _fails(runner, ["train", good, "-o", out, "--set", "train.stepz=3"], "[train] stepz: not a key", tmp_path)
    _fails(runner, ["train", good, "-o", out, "--set", "train.lr=-1"], "[train] lr: must be > 0.0", tmp_path)
    _fails(runner, ["train", good, "-o", out, "--set", "net.kind=unet"], "'unet' needs image data", tmp_path)
    _fails(runner, ["train", str(tmp_path / "none.toml"), "-o", out], "no such recipe file", tmp_path)
    _fails(runner, ["train", good, "-o", out, "--data", "tensors:/no/such.safetensors"], "not found", tmp_path)
    _fails(runner, ["train", good, "-o", out, "--data", "mnist:train"], "give the directory", tmp_path)
    open(tmp_path / "file", "w").close()
    _fails(runner, ["train", good, "-o", str(tmp_path / "file" / "m.safetensors")], "is a file, not a directory",
           tmp_path)
    os.unlink(tmp_path / "file")
    invoke(runner, ["train", good, "-o", str(tmp_path / "new" / "dir" / "m.safetensors")])  # missing folders: made
    assert sorted(os.listdir(tmp_path / "new" / "dir")) == ["m.ckpt.safetensors", "m.safetensors"]


def test_bad_flags(runner, tmp_path, vec_models):
    m = vec_models["mlp"]
    out = str(tmp_path / "s.safetensors")
    _fails(runner, ["sample", m, "-n", "4", "-o", out, "--bogus"], "--bogus", tmp_path)
    _fails(runner, ["sample", m, "-n", "0", "-o", out], "-n", tmp_path)
    _fails(runner, ["sample", m, "-n", "4", "-o", out, "--sampler", "magic"], "'magic' is not one of", tmp_path)
    _fails(runner, ["sample", m, "-o", out], "give -n N or --seeds LIST", tmp_path)
    _fails(runner, ["sample", m, "-n", "3", "--seeds", "0-3", "-o", out], "disagrees with --seeds", tmp_path)
    _fails(runner, ["sample", m, "--seeds", "3-1", "-o", out], "runs backwards", tmp_path)
    _fails(runner, ["sample", m, "-n", "4"], "nothing to write", tmp_path)
    _fails(runner, ["sample", m, "-n", "4", "--grid", str(tmp_path / "g.png")], "--grid needs image samples",
           tmp_path)
    _fails(runner, ["sample", m, "-n", "4", "-o", out, "--device", "cuda:7"], "--device cuda:7", tmp_path)
    _fails(runner, ["sample", m, "-n", "4", "-o", out, "--set", "sample.steps=0"], "[sample] steps: must be >= 1",
           tmp_path)
    _fails(runner, ["sample", m, "-n", "4", "-o", out, "--set", "schedule.gamma_max=3"],
           "only [sample] keys can be overridden", tmp_path)


def test_bad_artifacts(runner, tmp_path, vec_models):
    out = str(tmp_path / "s.safetensors")
    _fails(runner, ["sample", str(tmp_path / "missing.safetensors"), "-n", "2", "-o", out], "no such file", tmp_path)
    samples = str(tmp_path / "made.safetensors")
    invoke(runner, ["sample", vec_models["mlp"], "-n", "2", "-o", samples])
    _fails(runner, ["sample", samples, "-n", "2", "-o", out], "is a 'samples' artifact; expected a 'model'", tmp_path)
    broken = str(tmp_path / "broken.safetensors")
    with open(vec_models["mlp"], "rb") as fh:
        data = bytearray(fh.read())
    data[-7] ^= 0xFF
    open(broken, "wb").write(bytes(data))
    _fails(runner, ["sample", broken, "-n", "2", "-o", out], "corrupted artifact", tmp_path)
    text = write(tmp_path / "text.safetensors", "hello")
    _fails(runner, ["sample", text, "-n", "2", "-o", out], "not a safetensors artifact", tmp_path)


def test_debug_shows_the_traceback(runner, tmp_path):
    from udiff.cli import cli
    from udiff.errors import RecipeError

    with pytest.raises(RecipeError):
        runner.invoke(cli, ["--debug", "train", str(tmp_path / "none.toml"), "-o", "x"], catch_exceptions=False)


def test_samples_do_not_depend_on_batch_size(runner, tmp_path, vec_models):
    for net, tol in (("mlp", 1e-5), ("gaussian", 1e-5)):
        a, b = str(tmp_path / f"a{net}.safetensors"), str(tmp_path / f"b{net}.safetensors")
        invoke(runner, ["sample", vec_models[net], "--seeds", "10-15", "--batch-size", "1", "-o", a])
        invoke(runner, ["sample", vec_models[net], "--seeds", "10-15", "--batch-size", "4", "-o", b])
        c = str(tmp_path / f"c{net}.safetensors")
        invoke(runner, ["sample", vec_models[net], "--seeds", "12", "-o", c])
        xa, xb, xc = (artifacts.load(p, "samples").tensors["x"] for p in (a, b, c))
        assert torch.allclose(xa, xb, atol=tol) and torch.allclose(xa[2], xc[0], atol=tol)
        assert not torch.allclose(xa[0], xa[1])


def test_json_output_and_show(runner, tmp_path, vec_models):
    out = str(tmp_path / "s.safetensors")
    r = invoke(runner, ["sample", vec_models["gaussian"], "-n", "5", "-o", out, "--json"])
    rec = json.loads(r.stdout)
    assert rec["n"] == 5 and rec["sampler"] == "ddim" and rec["nfe"] == 9 and rec["steps"] == 8
    art = artifacts.load(out, "samples")
    assert art.tensors["x"].shape == (5, 16) and art.tensors["seeds"].tolist() == [0, 1, 2, 3, 4]
    assert art.json("udiff.samples")["model"] == artifacts.load(vec_models["gaussian"]).meta["udiff.sha256"]
    r = invoke(runner, ["show", vec_models["mlp"]])
    assert "udiff model artifact" in r.output and 'kind = "mlp"' in r.output
    r = invoke(runner, ["show", vec_models["mlp"], "--recipe"])
    from udiff import recipe as R
    assert R.loads(r.output).net.kind == "mlp"
    shown = json.loads(invoke(runner, ["show", out, "--json"]).stdout)
    assert shown["kind"] == "samples" and shown["tensors"]["x"] == ["float32", [5, 16]]


def test_dry_run_prints_the_resolved_recipe(runner, tmp_path):
    r = invoke(runner, ["train", os.path.join(RECIPES, "digits.toml"), "-o", str(tmp_path / "m.safetensors"),
                        "--dry-run"])
    from udiff import recipe as R

    rec = R.loads(r.stdout)
    assert rec.net.preset == "tiny-8" and rec.net.channels == 32 and rec.net.channel_mult == (1, 2)
    assert os.listdir(tmp_path) == []


def test_real_processes_train_sample_and_pipe(tmp_path):
    """The installed entry points, as a user runs them: train on digits, sample a grid, pipe an artifact."""
    model = str(tmp_path / "model.safetensors")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run([PYTHON, "-m", "udiff", "train", os.path.join(RECIPES, "digits.toml"), "-o", model,
                    "--set", "train.steps=4", "--set", "train.batch_size=16", "--set", "net.channels=8",
                    "--set", "net.num_blocks=1"], check=True, env=env, capture_output=True)
    grid = str(tmp_path / "grid.png")
    p = subprocess.run([PYTHON, "-m", "udiff", "sample", model, "--seeds", "0-5", "--steps", "3", "-o", "-",
                        "--grid", grid], check=True, env=env, capture_output=True)
    art = artifacts.from_bytes(p.stdout, "stdout", "samples")
    assert art.tensors["images"].dtype == torch.uint8 and art.tensors["images"].shape == (6, 1, 8, 8)
    from PIL import Image

    with Image.open(grid) as im:
        assert im.size == (10 * (3 * 9 + 1), 10 * (2 * 9 + 1))  # enlarged to >= 256 pixels: 28 px × 10
    bad = subprocess.run([PYTHON, "-m", "udiff", "sample", model, "-n", "2"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stdout == ""
    version = subprocess.run([PYTHON, "-m", "udiff", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("udiff, version")
