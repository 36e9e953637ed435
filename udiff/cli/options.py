"""Option bundles shared by the subcommands, and small helpers the commands share."""

from __future__ import annotations

import json
import sys

import click

from ..errors import UdiffError


# Path arguments and options: shells complete file names for them (click's completion says "file"); nothing is
# checked here, the commands give their own one-line errors ("-" is stdin or stdout where a command allows it).
PATH = click.Path(allow_dash=True)


class RecipePath(click.Path):
    """A recipe argument: a file, or @NAME for a shipped recipe. The shell completes @NAME from the shipped
    recipes (udiff/recipe/shipped.py) and anything else as a file name."""

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from ..recipe import shipped

        if incomplete.startswith(shipped.PREFIX):
            return [CompletionItem(shipped.PREFIX + name) for name in shipped.catalogue()
                    if (shipped.PREFIX + name).startswith(incomplete)]
        return super().shell_complete(ctx, param, incomplete)


RECIPE_PATH = RecipePath(allow_dash=True)


def set_option(f):
    return click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                        help="Override a recipe key (repeatable), e.g. --set train.steps=2000. Values are "
                             "read as TOML; bare words are strings.")(f)


def grid_scale_option(f):
    return click.option("--grid-scale", type=click.IntRange(1, 16), metavar="S",
                        help="Enlarge each pixel of the picture S times [default: the least S that makes the picture "
                             "at least 256 pixels on its longer side].")(f)


def conditioning_options(f):
    """--class, --labels, --guidance, --classifier, --classifier-scale (sample and inpaint; cli.models.conditioning)."""
    opts = [
        click.option("--class", "class_", type=click.IntRange(min=0), metavar="K",
                     help="Draw every item of class K (a class-conditional model, or --classifier)."),
        click.option("--labels", metavar="FILE|LIST",
                     help="One class label per seed, in order: a list such as 0,1,2 or 0*8,1*8, or a text file with "
                          "one label per line."),
        click.option("--guidance", type=click.FloatRange(min=0.0), metavar="W",
                     help="Classifier-free guidance weight: eps_u + W (eps_c - eps_u); 1 = the conditional model "
                          "alone, 0 = its unconditional branch (e.g. with --classifier) [default: 1]."),
        click.option("--classifier", "classifier_path", type=PATH, metavar="CLS",
                     help="Classifier guidance: a noisy-classifier artifact (udiff train, [net] kind = "
                          "\"noisy-classifier\") of MODEL's process and schedule; adds S grad log p(y | z_t) to the "
                          "score."),
        click.option("--classifier-scale", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
                     metavar="S", help="Scale S of the classifier's gradient."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def check_outputs(*paths):
    """Refuse unwritable outputs (a directory, a path under a file, -o - on a terminal) before any work is done."""
    from ..artifacts import check_output

    for p in paths:
        if p:
            check_output(p)


def device_option(f):
    return click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N",
                        help="Where to run: CUDA when present for auto.")(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as one JSON object on stdout.")(f)


def override(section: str, key: str, value) -> str:
    """A `--set` item for a value given by its own flag (strings quoted as TOML)."""
    return f"{section}.{key}={json.dumps(value)}"


def resolve_device(name: str):
    """'auto' → cuda if available else cpu; a named CUDA device must exist. Under torchrun each process takes
    the CUDA device of its LOCAL_RANK, and joins the run's process group (udiff/distributed.py)."""
    import torch

    from .. import distributed

    world = distributed.world()
    name = (name or "auto").strip().lower()
    if name == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise UdiffError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UdiffError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
        if world.size > 1:
            if dev.index is not None:
                raise UdiffError(f"--device {name}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                                 "give --device cuda or auto (choose GPUs with CUDA_VISIBLE_DEVICES)")
            dev = torch.device("cuda", world.local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UdiffError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present"
                             + (f" for LOCAL_RANK {world.local_rank}" if world.size > 1 else ""))
    elif dev.type != "cpu":
        raise UdiffError(f"--device {name}: unsupported device type; use auto, cpu, cuda or cuda:N")
    else:
        keep_freed_memory()
    distributed.start(dev)
    return dev


_MALLOC_TRIM_THRESHOLD, _MALLOC_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """On the CPU, let glibc's malloc keep freed memory for the next allocation: by default every block over
    128 KiB to 32 MiB is mapped fresh from the system and unmapped when freed, so each step of a sampler or
    a training loop pays page faults on its large temporaries. Measured (bench/README.md): a quarter of the
    CPU time of sampling a 28x28 U-Net. True where the setting took (glibc), False elsewhere (a no-op)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_MALLOC_MMAP_MAX, 0) and mallopt(_MALLOC_TRIM_THRESHOLD, 2**31 - 1))


def is_main() -> bool:
    """This process writes outputs and prints: the only process, or rank 0 under torchrun."""
    from .. import distributed

    return distributed.world().main


def seed_list_of(num, seeds, first: int) -> list[int]:
    """The seeds of -n N (first .. first + N - 1) or --seeds LIST; one of them, consistent."""
    from ..rng import parse_seeds

    seed_list = parse_seeds(seeds) if seeds else None
    if seed_list is not None and num is not None and num != len(seed_list):
        raise click.UsageError(f"-n {num} disagrees with --seeds ({len(seed_list)} seeds); give one of them")
    if seed_list is None:
        if num is None:
            raise click.UsageError("give -n N or --seeds LIST")
        seed_list = list(range(first, first + num))
    return seed_list


QUIET = False  # --quiet: no progress, no log lines; results (stdout) and errors still appear


def stderr_is_terminal() -> bool:
    """Whether to draw progress bars: stderr is a terminal, --quiet was not given, and this is rank 0 under torchrun."""
    return sys.stderr.isatty() and not QUIET and is_main()


def log(text: str):
    """A line for the user on stderr (not a result), unless --quiet; from rank 0 alone under torchrun."""
    if not QUIET and is_main():
        click.echo(text, err=True)


def finite_json(value):
    """NaN and Inf → None (JSON has no NaN), in nested dicts and lists."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def emit(as_json: bool, record: dict, human: str, *, result: bool = False):
    """The outcome of a command: a JSON object on stdout with --json; else one human line, on stdout when it is the
    result itself (`result`: a number the command computes and writes nowhere else), on stderr when it reports
    the files written (a log, silenced by --quiet). From rank 0 alone under torchrun."""
    if not is_main():
        return
    if as_json:
        click.echo(json.dumps(finite_json(record), sort_keys=True, allow_nan=False))
    elif result:
        click.echo(human)
    else:
        log(human)
