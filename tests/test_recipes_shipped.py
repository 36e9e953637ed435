"""Shipped recipes by name (@NAME), `udiff recipes`, the packaging that installs them, and the CLI's contract on
streams and exit statuses (results on stdout, logs on stderr, --quiet, 0/1/2)."""

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from conftest import RECIPES, ROOT, gaussian_data, invoke, write
from udiff import recipe as R
from udiff.recipe import shipped


def test_every_package_is_installed_and_the_recipes_ship_as_package_data():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        cfg = tomllib.load(fh)["tool"]["setuptools"]
    found = sorted(os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "udiff"))
                   if "__init__.py" in files)
    assert sorted(p for p in cfg["packages"] if p != "udiff.recipes") == found  # a new subpackage must be listed
    assert cfg["package-dir"]["udiff.recipes"] == "recipes" and "*.toml" in cfg["package-data"]["udiff.recipes"]


def test_a_built_wheel_holds_every_module_and_shipped_recipe(tmp_path):
    """What a non-editable `pip install .` installs: the wheel built from a copy of the tree (the build leaves
    nothing in the checkout) has every module of udiff/ and every recipe as udiff/recipes/NAME.toml."""
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.join(ROOT, "udiff"), src / "udiff", ignore=skip)
    shutil.copytree(os.path.join(ROOT, "recipes"), src / "recipes", ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)]
    p = subprocess.run(wheel_cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = glob.glob(str(tmp_path / "dist" / "udiff-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {os.path.relpath(f, ROOT).replace(os.sep, "/")
               for f in glob.glob(os.path.join(ROOT, "udiff", "**", "*.py"), recursive=True)}
    assert modules and modules <= names, sorted(modules - names)
    recipes = {f"udiff/recipes/{os.path.basename(f)}" for f in glob.glob(os.path.join(RECIPES, "*.toml"))}
    assert len(recipes) > 20 and recipes <= names, sorted(recipes - names)


def test_names_resolve_to_the_recipes_folder_and_load(runner):
    names = shipped.catalogue()
    assert set(names) == {f[:-5] for f in os.listdir(RECIPES) if f.endswith(".toml")}
    assert os.path.samefile(shipped.resolve("@digits"), os.path.join(RECIPES, "digits.toml"))
    assert R.load("@digits").net.kind == "unet" and R.load("@digits.toml").data.source == "digits"
    listing = invoke(runner, ["recipes"]).stdout.splitlines()
    assert len(listing) == len(names) and any(line.startswith("@digits ") and "8x8 digits" in line for line in listing)
    assert invoke(runner, ["recipes", "digits"]).stdout == open(os.path.join(RECIPES, "digits.toml")).read()
    table = json.loads(invoke(runner, ["recipes", "--json"]).stdout)
    assert table["dilation-gmm"]["description"].startswith("A Gaussian mixture given in full")
    r = invoke(runner, ["train", "digits", "-o", "x.safetensors"], ok=False)
    assert r.exit_code == 2 and "did you mean @digits" in r.stderr


def test_show_recipe_round_trips_a_model_trained_from_a_name(runner, tmp_path, one_thread):
    m = str(tmp_path / "m.safetensors")
    invoke(runner, ["train", "@digits", "-o", m, "--set", "train.steps=2", "--set", "net.channels=8",
                    "--set", "net.num_blocks=1", "--set", "train.batch_size=8", "--quiet"])
    text = invoke(runner, ["show", m, "--recipe"]).stdout
    again = write(tmp_path / "again.toml", text)
    dry = invoke(runner, ["train", again, "-o", str(tmp_path / "n.safetensors"), "--dry-run"]).stdout
    assert R.loads(dry).to_dict() == R.loads(text).to_dict()


def test_streams_quiet_and_exit_statuses(runner, tmp_path, one_thread):
    from safetensors.torch import save_file

    data = str(tmp_path / "g.safetensors")
    save_file({"x": gaussian_data(256, d=4)}, data)
    rec = write(tmp_path / "v.toml", f'[data]\nsource = "tensors:{data}"\n[net]\nkind = "mlp"\n[train]\nsteps = 20\n'
                                     'batch_size = 16\ncheckpoint_every = 0\nlog_every = 5\ngrad_clip = 0.0\n')
    m = str(tmp_path / "m.safetensors")
    r = invoke(runner, ["train", rec, "-o", m])
    assert r.stdout == "" and r.stderr.startswith("udiff train: wrote")  # a log line, on stderr
    r = invoke(runner, ["--quiet", "train", rec, "-o", m, "--fresh"])
    assert r.stdout == "" and r.stderr == ""
    r = invoke(runner, ["sample", m, "-n", "4", "-o", str(tmp_path / "s.safetensors"), "--quiet"])
    assert r.stdout == "" and r.stderr == ""
    r = invoke(runner, ["eval-nll", m, "--data", f"tensors:{data}", "--limit", "16", "--repeats", "1", "--quiet"])
    assert r.stdout.startswith("udiff eval-nll: ") and "nats/dim" in r.stdout and r.stderr == ""  # the result
    r = invoke(runner, ["train", rec, "-o", str(tmp_path / "d.safetensors"), "--set", "train.lr=1e8"], ok=False)
    assert r.exit_code == 1 and "diverged" in r.stderr and r.stderr.count("\n") == 1  # a failure of the work
    assert not os.path.exists(tmp_path / "d.safetensors")
    r = invoke(runner, ["train", rec, "-o", m, "--set", "train.lrr=1"], ok=False)
    assert r.exit_code == 2  # the user's input


def test_every_recipe_file_the_docs_and_help_name_exists():
    import re

    from udiff.cli.manpages import pages

    text = "".join(pages().values()) + open(os.path.join(ROOT, "README.md")).read()
    for folder in ("docs",):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if name.endswith(".md"):
                text += open(os.path.join(ROOT, folder, name)).read()
    named = set(re.findall(r"recipes/([a-z0-9-]+)\.toml", text.replace("\\-", "-")))
    named |= set(re.findall(r"@([a-z0-9][a-z0-9-]+)\b", text.replace("\\-", "-"))) & set(shipped.catalogue()) | {
        n for n in re.findall(r"udiff \w+(?:-\w+)? @([a-z0-9-]+)", text.replace("\\-", "-"))}
    missing = sorted(n for n in named if not os.path.isfile(os.path.join(RECIPES, n + ".toml")))
    assert named and not missing, missing


def test_a_solver_that_gives_up_is_a_failure_of_the_work():
    import pytest
    import torch

    from udiff.errors import SolverFailed
    from udiff.ode import dopri5

    with pytest.raises(SolverFailed, match="no solution after") as e:
        dopri5(lambda t, y: -50.0 * y, torch.ones(3, dtype=torch.float64), 0.0, 1.0, rtol=1e-12, atol=1e-12,
               max_steps=5)
    assert e.value.exit_code == 1
