"""Generate man pages and shell completion scripts from the click commands themselves.

    python -m udiff.cli.manpages man/ completions/

writes man/udiff.1, man/udiff-<command>.1 for every command, man/udiff-recipe.5 (every recipe section,
kind and key, from recipe.reference()), and completions/udiff.{bash,zsh,fish}. A test regenerates them and
compares, so the checked-in pages never drift from `--help`.
"""

from __future__ import annotations

import os
import sys

import click

from .. import __version__
from .. import recipe as R
from . import COMMANDS, cli


EXIT_STATUS = ("0 success; 1 a failure of the work (training diverged, a NaN or Inf result, a solver that gave up; "
               "nothing is written); 2 a usage or input error (one line on stderr naming the problem and the fix; "
               "nothing is written); 130 interrupted. Standard output holds only results; logs go to stderr.")


def _esc(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def _paragraphs(help_text: str) -> list[str]:
    """Click help text → roff paragraphs; `\\b` blocks stay verbatim (.nf)."""
    out = []
    for block in help_text.strip().split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            out.append(".PP\n.nf\n" + _esc("\n".join(line.strip() for line in lines[1:])) + "\n.fi")
        else:
            out.append(".PP\n" + _esc(" ".join(line.strip() for line in lines)))
    return out


def page(name: str, command: click.Command, parent: click.Context | None) -> str:
    ctx = click.Context(command, info_name=name, parent=parent, **command.context_settings)
    full = ctx.command_path
    title = full.replace(" ", "-").upper()
    lines = [f'.TH {title} 1 "" "udiff {__version__}" "udiff manual"', ".SH NAME",
             f"{_esc(full.replace(' ', '-'))} \\- {_esc(command.get_short_help_str(200))}", ".SH SYNOPSIS",
             f".B {_esc(full)}", _esc(" ".join(command.collect_usage_pieces(ctx))), ".SH DESCRIPTION"]
    lines += _paragraphs(command.help or "")
    # options only: click 8.4 began to give arguments help records too, and the pages must not depend on click
    records = [p.get_help_record(ctx) for p in command.get_params(ctx) if isinstance(p, click.Option)]
    records = [r for r in records if r]
    if records:
        lines.append(".SH OPTIONS")
        for opt, text in records:
            lines += [".TP", f"\\fB{_esc(opt)}\\fR", _esc(text)]
    lines += [".SH EXIT STATUS", _esc(EXIT_STATUS)]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        subs = command.list_commands(ctx)
        for sub in subs:
            cmd = command.get_command(ctx, sub)
            lines += [".TP", f"\\fB{_esc(sub)}\\fR", _esc(cmd.get_short_help_str(200))]
        prefix = full.replace(" ", "-")
        lines += [".SH SEE ALSO", ", ".join(f"\\fB{_esc(prefix)}\\-{_esc(s)}\\fR(1)" for s in subs)
                  + ", \\fBudiff\\-recipe\\fR(5)"]
    return "\n".join(lines) + "\n"


def recipe_page() -> str:
    lines = [f'.TH UDIFF-RECIPE 5 "" "udiff {__version__}" "udiff manual"', ".SH NAME",
             "udiff\\-recipe \\- the TOML recipes udiff commands read", ".SH DESCRIPTION"]
    lines += _paragraphs(R.__doc__.split("\n\n", 1)[1])
    lines += [".SH SECTIONS, KINDS AND KEYS", ".nf", _esc(R.reference()), ".fi"]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    root = click.Context(cli, info_name="udiff", **cli.context_settings)
    out = {"udiff.1": page("udiff", cli, None), "udiff-recipe.5": recipe_page()}
    for name in COMMANDS:
        cmd = cli.get_command(root, name)
        out[f"udiff-{name}.1"] = page(name, cmd, root)
        if isinstance(cmd, click.Group):  # udiff plot schedule ...: a page per subcommand too
            ctx = click.Context(cmd, info_name=name, parent=root)
            for sub in cmd.list_commands(ctx):
                out[f"udiff-{name}-{sub}.1"] = page(sub, cmd.get_command(ctx, sub), ctx)
    return out


COMPLETION_HOOKS = {
    # bash splits words at '@' (COMP_WORDBREAKS, for user@host): without that, @NAME completes as one word, as
    # npm's completion does for its @scope names
    "bash": 'eval "$(_UDIFF_COMPLETE=bash_source udiff)"\nCOMP_WORDBREAKS=${COMP_WORDBREAKS//@/}',
    "zsh": 'eval "$(_UDIFF_COMPLETE=zsh_source udiff)"',
    "fish": "_UDIFF_COMPLETE=fish_source udiff | source",
}


def completions() -> dict[str, str]:
    """Per shell, the line that asks the installed udiff for click's completion script when it is sourced (bash: and
    one that keeps @NAME one word).

    Click's scripts and the protocol they speak change between click releases (8.4 changed fish's), so a script
    frozen into the repository breaks with another click; asking the installed one costs ~0.1 s per shell start.
    """
    return {f"udiff.{shell}": f"# udiff completion for {shell}: source this file. It asks the installed udiff for "
                              f"click's script,\n# so it always matches the installed click.\n{hook}\n"
            for shell, hook in COMPLETION_HOOKS.items()}


def write_all(man_dir: str, completion_dir: str) -> list[str]:
    written = []
    for directory, files in ((man_dir, pages()), (completion_dir, completions())):
        os.makedirs(directory, exist_ok=True)
        for name, text in files.items():
            path = os.path.join(directory, name)
            with open(path, "w") as fh:
                fh.write(text)
            written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m udiff.cli.manpages MAN_DIR COMPLETIONS_DIR")
    for p in write_all(sys.argv[1], sys.argv[2]):
        print(p)
