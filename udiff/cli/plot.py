"""`udiff plot KIND INPUT -o FILE`: pictures of a schedule, a training history, a likelihood, samples."""

from __future__ import annotations

import os

import click

from .options import PATH, RECIPE_PATH, log


def _out_option(f):
    return click.option("-o", "--out", required=True, type=PATH, metavar="FILE",
                        help="Picture to write: .png, .svg or .pdf (by the suffix).")(f)


def _write(fig, out: str):
    from .. import artifacts
    from ..errors import UdiffError
    from ..figures import FORMATS, save

    fmt = FORMATS.get(os.path.splitext(out)[1].lower())
    if fmt is None:
        raise UdiffError(f"-o {out}: unknown picture type; end the name with .png, .svg or .pdf")
    with artifacts.Outputs() as outputs:
        save(fig, outputs.stage(out), fmt)
        outputs.commit()
    log(f"udiff plot: wrote {out}")


def _check_out(out):
    from ..errors import UdiffError
    from ..figures import FORMATS
    from .options import check_outputs

    if os.path.splitext(out)[1].lower() not in FORMATS:
        raise UdiffError(f"-o {out}: unknown picture type; end the name with .png, .svg or .pdf")
    check_outputs(out)


@click.group("plot", short_help="Pictures: a schedule, a training history, a likelihood, samples.")
def command():
    """Draw what a schedule, a training run, a likelihood evaluation or a sampler did (matplotlib, no display
    needed). The picture's type follows the suffix of -o: .png, .svg or .pdf.

    \\b
    udiff plot schedule @gud-haar-fashion -o schedule.png
    udiff plot history run/model.safetensors -o history.png
    udiff plot nll run/nll.json -o nll.png
    udiff plot samples run/samples.safetensors -o samples.png
    """


def model_for_schedule(path: str):
    """A recipe (its data fitted for the basis, as `udiff train` would) or a model/checkpoint artifact → model."""
    from .sample_target import looks_like_recipe

    if looks_like_recipe(path):
        from .. import data as D
        from .. import recipe as R
        from ..build import build_model, fit_basis, resolve
        from ..check import gaussian_recipe

        rec = R.load(path)
        if isinstance(rec.net, R.ClassifierSpec):
            raise click.UsageError(f"{path}: a classifier recipe has no schedule")
        ds = D.load(rec.data.source, rec.data.limit)
        info = ds.info()
        grec = gaussian_recipe(resolve(rec, info))  # the schedule does not depend on the network
        return build_model(grec, info, fit_basis(grec, ds.unit())), path
    from .. import artifacts
    from ..build import model_from_artifact

    art = artifacts.load(path, ("model", "checkpoint"))
    model, _, _ = model_from_artifact(art)
    return model, path


@command.command("schedule", short_help="log-SNR per component over t, and the process's kernel.")
@click.argument("source", type=RECIPE_PATH, metavar="RECIPE|MODEL")
@_out_option
def schedule(source, out):
    """log-SNR = -gamma(t) of every component (up to 64, evenly spaced in label order), coloured by the ordering
    label (GUD's soft conditioning: which components are generated first), beside the kernel: alpha and sigma,
    or for phase-space processes the position and momentum variances."""
    from ..figures import schedule_figure

    _check_out(out)
    model, name = model_for_schedule(source)
    _write(schedule_figure(model, title=f"{name}: {model.process.name}, {model.schedule.__class__.__name__}"), out)


@command.command("history", short_help="Loss, learning rate, gradient norm and img/s against the step.")
@click.argument("source", type=PATH, metavar="MODEL|CHECKPOINT")
@_out_option
def history(source, out):
    """The training history `udiff train` keeps (metadata entry udiff.history, one row per [train] log_every
    steps, continued across resumes)."""
    from .. import artifacts
    from ..errors import ArtifactError
    from ..figures import history_figure
    from ..train import read_history

    _check_out(out)
    art = artifacts.load(source, ("model", "checkpoint"))
    rows = read_history(art.meta.get("udiff.history"))
    if not rows:
        raise ArtifactError(f"{source}: holds no training history (a gaussian net, or trained by an older udiff); "
                            "retrain with udiff train")
    _write(history_figure(rows, title=f"{source}: {rows[-1]['step']} steps"), out)


@command.command("nll", short_help="The terms of a likelihood bound (from eval-nll --json).")
@click.argument("source", type=PATH, metavar="NLL.json")
@_out_option
def nll(source, out):
    """The prior, reconstruction and diffusion terms and the total of a bound, from the JSON object that
    `udiff eval-nll --json` prints."""
    import json

    from ..errors import UdiffError
    from ..figures import nll_figure

    _check_out(out)
    try:
        with open(source, encoding="utf-8") as fh:
            record = json.loads(fh.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as e:
        raise UdiffError(f"{source}: not the JSON of `udiff eval-nll --json` ({type(e).__name__}); write it with "
                         "udiff eval-nll MODEL --data SOURCE --json > NLL.json") from None
    value = record.get("bpd", record.get("nll")) if isinstance(record, dict) else None
    if not isinstance(value, (int, float)) or not isinstance(record.get("terms"), dict):
        raise UdiffError(f"{source}: a JSON object without 'bpd' (or 'nll') and 'terms'; expected the output of "
                         "udiff eval-nll --json")
    record = {**record, "value": float(value)}
    _write(nll_figure(record), out)


@command.command("samples", short_help="An image grid, or a scatter of two dimensions of vector samples.")
@click.argument("source", type=PATH, metavar="SAMPLES")
@click.option("--dims", default="0,1", show_default=True, metavar="I,J", help="Vector samples: the two coordinates.")
@click.option("-n", "--num", type=click.IntRange(min=1), default=64, show_default=True, metavar="N",
              help="Images: how many to show.")
@_out_option
def samples(source, dims, num, out):
    """A samples artifact: its first N images on a grid, or for vectors (a target recipe's samples) a scatter of
    coordinates I and J beside as many exact samples of the target, when it has them."""
    import torch

    from .. import artifacts
    from ..errors import UdiffError

    _check_out(out)
    art = artifacts.load(source, "samples")
    if "images" in art.tensors or ("x" in art.tensors and art.tensors["x"].ndim == 4):
        from ..data import to_uint8
        from ..figures import image_grid_figure
        from ..images import grid

        imgs = art.tensors["images"] if "images" in art.tensors else to_uint8(art.tensors["x"].clamp(-1, 1))
        _write(image_grid_figure(grid(imgs[:num])), out)
        return
    (x,) = art.require("x")
    x = x.reshape(x.shape[0], -1).double()
    try:
        i, j = (int(v) for v in dims.split(","))
    except ValueError:
        raise click.UsageError(f"--dims {dims}: expected two coordinates, e.g. 0,1") from None
    if not (0 <= i < x.shape[1] and 0 <= j < x.shape[1]):
        raise UdiffError(f"--dims {dims}: the samples have {x.shape[1]} coordinates (0 .. {x.shape[1] - 1})")
    exact = None
    if "udiff.target" in art.meta and art.recipe_json:
        from .. import recipe as R
        from ..build import build_target

        rec = R.from_json(art.recipe_json, origin=source)
        target = build_target(rec.target)
        if target.has_exact_samples:
            exact = target.sample(len(x), torch.Generator().manual_seed(0)).double()
    from ..figures import scatter_figure

    _write(scatter_figure(x, (i, j), exact, title=source), out)
