"""Documentation cannot drift: man pages and completions match the commands; README and CI agree."""

import os
import re
import subprocess
import sys

from conftest import ROOT
from udiff.cli import COMMANDS
from udiff.cli.manpages import completions, pages


def _read(*parts):
    with open(os.path.join(ROOT, *parts)) as fh:
        return fh.read()


def test_man_pages_are_up_to_date():
    for name, text in pages().items():
        assert _read("man", name) == text, f"man/{name} is stale: run python -m udiff.cli.manpages man completions"


def test_completions_are_up_to_date_and_complete_commands():
    for name, text in completions().items():
        assert _read("completions", name) == text, f"completions/{name} is stale"
    env = dict(os.environ, _UDIFF_COMPLETE="bash_complete", COMP_WORDS="udiff sa", COMP_CWORD="1")
    out = subprocess.run([sys.executable, "-m", "udiff"], env=env, capture_output=True, text=True, check=True).stdout
    assert "sample" in out and "train" not in out
    env["_UDIFF_COMPLETE"] = "bash_source"
    script = subprocess.run([sys.executable, "-m", "udiff"], env=env, capture_output=True, text=True).stdout
    assert "_UDIFF_COMPLETE=bash_complete" in script and "complete " in script


def _complete(line: str) -> list[str]:
    """What the bash completion offers for the last word of `line` (click's bash_complete protocol)."""
    words = line.split(" ")
    env = dict(os.environ, _UDIFF_COMPLETE="bash_complete", COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    return subprocess.run([sys.executable, "-m", "udiff"], env=env, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_recipe_arguments_complete_shipped_names_and_files():
    assert _complete("udiff train @dig") == ["plain,@digits"]
    assert _complete("udiff check @dilation-g") == ["plain,@dilation-gmm", "plain,@dilation-grid"]
    assert _complete("udiff sample @psld-d") == ["plain,@psld-digits"]
    assert _complete("udiff train recipes/dig") == ["file,recipes/dig"]  # bash then completes the file name


def test_readme_documents_every_command_and_the_ci_runs_its_test_command():
    readme = _read("README.md")
    for name in COMMANDS:
        assert f"udiff {name}" in readme or f"`{name}`" in readme, name
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    setup = [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.strip()]
    assert len(setup) == 2
    ci = _read(".ci", "run")
    assert setup[1] in ci
    assert "dataset-fashion-mnist" in ci


def test_every_recipe_key_is_in_the_recipe_page():
    from udiff import recipe as R
    from dataclasses import fields

    page = pages()["udiff-recipe.5"]
    for section in R.SECTIONS:
        classes = [R.spec_class(section, k) for k in R.kinds(section)] if section in R.KIND_SECTIONS \
            else [R.spec_class(section)]
        for cls in classes:
            for f in fields(cls):
                assert f"    {f.name} = " in page, (section, f.name)
