"""The `udiff` command line: a click group whose subcommands are imported only when run.

Every subcommand module parses its options, calls the library, and writes its outputs; no math here.
Errors the user can fix (bad recipe, flag, path, data, artifact) print one line and exit with status 2;
`udiff --debug ...` shows the traceback instead. Unexpected exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys

import click

from .. import __version__
from ..errors import UdiffError
from ..world import world

COMMANDS = {
    "fit-basis": "udiff.cli.fit_basis",
    "train": "udiff.cli.train",
    "sample": "udiff.cli.sample",
    "eval-nll": "udiff.cli.eval_nll",
    "eval-fid": "udiff.cli.eval_fid",
    "compress": "udiff.cli.compress",
    "inpaint": "udiff.cli.inpaint",
    "show": "udiff.cli.show",
    "recipes": "udiff.cli.recipes",
    "check": "udiff.cli.check",
    "plot": "udiff.cli.plot",
}

# The commands that split their work over the processes of a torchrun launch (udiff/distributed.py); the
# others run in one process and say so when started under torchrun. compress codes its images on one ANS
# stack, each batch on the bits the batches before it left (bits-back): a sequential chain (docs/distributed.md).
DISTRIBUTED = ("train", "sample", "eval-nll", "eval-fid")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR,
                errno.ENOENT, errno.ENAMETOOLONG, errno.EFBIG, errno.EEXIST}
_ERRNO_HINTS = {errno.ENOSPC: "; free space or write the output elsewhere (nothing was written)",
                errno.EDQUOT: "; free space or write the output elsewhere (nothing was written)",
                errno.EACCES: "; check the file's permissions", errno.EROFS: "; write the output elsewhere"}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class UdiffGroup(click.Group):
    """Lazy subcommands, and one-line errors with exit status 2 for everything the user can fix."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name]).command

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        size = world().size
        if size > 1 and name in COMMANDS and name not in DISTRIBUTED and not ctx.resilient_parsing:
            raise UdiffError(f"'udiff {name}' runs in one process; run it without torchrun (WORLD_SIZE is {size}; "
                             f"{', '.join(DISTRIBUTED)} split their work over processes)")
        return name, cmd, rest

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        head = argv[:argv.index("--")] if "--" in argv else argv
        debug = "--debug" in head
        from . import options

        # --quiet anywhere on the line (udiff --quiet train ... or udiff train ... --quiet), like --debug
        options.QUIET = "--quiet" in head
        if options.QUIET:
            argv = ["--quiet"] + [a for a in head if a != "--quiet"] + argv[len(head):]
        try:
            speaks = world().main  # under torchrun rank 0 alone prints the error line
        except UdiffError:
            speaks = True
        try:
            rv = super().main(args=argv, prog_name=prog_name or "udiff", complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("udiff: interrupted", err=True)
            rv = 130
        except _NO_ARGS_IS_HELP as e:  # bare `udiff` or a group without a subcommand: show the help
            click.echo(e.format_message() if not hasattr(e, "ctx") else e.ctx.get_help())
            rv = 0
        except click.ClickException as e:
            if debug:
                raise
            cmd = e.ctx.command_path if getattr(e, "ctx", None) is not None else "udiff"
            hint = f" (see '{cmd} --help')" if isinstance(e, click.UsageError) else ""
            if speaks:
                click.echo(f"{cmd}: error: {_one_line(e.format_message())}{hint}", err=True)
            rv = 2
        except UdiffError as e:
            if debug:
                raise
            if speaks:
                click.echo(f"udiff: error: {_one_line(e)}", err=True)
            rv = getattr(e, "exit_code", 2)
        except KeyboardInterrupt:
            click.echo("udiff: interrupted", err=True)
            rv = 130
        except MemoryError:
            if debug:
                raise
            click.echo("udiff: error: out of memory; lower -n, --batch-size or the data's [data] limit", err=True)
            rv = 1
        except OSError as e:  # the file system's answer (full disk, permissions, a vanished path): the user's to fix
            if debug or e.errno not in _USER_ERRNOS:
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"udiff: error: {where}{e.strerror or e}{_ERRNO_HINTS.get(e.errno, '')}", err=True)
            rv = 2
        finally:
            joined = sys.modules.get("udiff.distributed")  # a command that never loaded it joined no group
            if joined is not None:
                joined.stop()
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group("udiff", cls=UdiffGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="udiff")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error instead of one line.")
@click.option("--quiet", is_flag=True, help="No progress and no log lines on stderr (results on stdout and errors "
                                            "still appear); may also follow the subcommand.")
def cli(debug, quiet):
    """Diffusion models from the shell: VDM, PSLD/CLD, GUD and dilation-path sampling in one toolkit.

    Each stage is a command that reads and writes safetensors artifacts; a TOML recipe describes the
    whole experiment and `--set section.key=value` overrides any of its keys.

    \b
    udiff train   @digits -o run/model.safetensors
    udiff sample  run/model.safetensors --seeds 0-63 -o run/samples.safetensors --grid run/samples.png
    udiff show    run/model.safetensors
    udiff recipes

    A recipe argument is a TOML file, or @NAME for a recipe shipped with udiff (`udiff recipes` lists them).

    Exit status: 0 success; 1 a failure of the work (training diverged, a NaN or Inf result, a solver that gave
    up; nothing is written); 2 a usage or input error (a bad flag, recipe key, path, data or artifact: one line
    on stderr naming the problem and the fix, nothing written); 130 interrupted. Standard output holds only
    results (--json objects, eval-nll and eval-fid figures, -o - artifacts); progress and logs go to stderr.
    """


def main(args=None):
    cli.main(args=args, prog_name="udiff")
