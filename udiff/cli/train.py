"""`udiff train RECIPE -o MODEL`: fit a model to the recipe's data and write a model artifact."""

from __future__ import annotations

import click

from ..errors import UdiffError
from .options import (PATH, RECIPE_PATH, check_outputs, device_option, emit, is_main, json_option, override,
                      resolve_device, set_option, stderr_is_terminal)


@click.command("train", short_help="Train a model from a recipe.")
@click.argument("recipe_path", type=RECIPE_PATH, metavar="RECIPE")
@click.option("-o", "--out", required=True, type=PATH, metavar="MODEL",
              help="Model artifact to write (safetensors). A checkpoint MODEL.ckpt.safetensors is kept beside it.")
@click.option("--data", "data_source", metavar="SOURCE", help="Data source; overrides [data] source.")
@click.option("--basis", "basis_path", type=PATH, metavar="BASIS",
              help="Basis artifact from `udiff fit-basis` [default: fit the basis to the training data].")
@set_option
@device_option
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), metavar="INT", help="Seed; overrides [train] seed.")
@click.option("--fresh", is_flag=True, help="Ignore an existing checkpoint and start from step 0.")
@click.option("-n", "--dry-run", is_flag=True, help="Print the resolved recipe (TOML) and write nothing.")
@json_option
def command(recipe_path, out, data_source, basis_path, overrides, device, seed, fresh, dry_run, as_json):
    """Train the model a recipe describes and write MODEL (weights and EMA weights, with the full recipe).

    Rerunning the same command resumes from MODEL.ckpt.safetensors (weights, EMA, optimizer, step; the
    random numbers of every step are a function of the seed and the step), and gives the same weights as
    an uninterrupted run. Raising [train] steps and rerunning continues training. Progress goes to
    stderr when it is a terminal.

    The training history (every [train] log_every steps: mean loss, learning rate, gradient norm, img/s,
    bits/dim for weighting = "vlb" on 8-bit images) is
    kept as JSON lines in the metadata entry udiff.history of the checkpoint and of MODEL, continued across
    resumes; `udiff plot history MODEL -o history.png` draws it.

    \b
    udiff train recipes/digits.toml -o run/model.safetensors
    udiff train recipes/digits.toml -o run/model.safetensors --set train.steps=500 --json

    A recipe with [net] kind = "classifier" trains an image classifier on labelled data instead (cross-entropy,
    no checkpoints) and writes a `classifier` artifact with its accuracy on held-out data, for
    `udiff eval-fid --extractor classifier:PATH`. With [net] kind = "noisy-classifier" it trains a
    noise-conditional classifier of the recipe's process and schedule, for `udiff sample --classifier`.

    \b
    udiff train recipes/classifier-fashion-mnist.toml -o run/classifier.safetensors
    udiff train recipes/psld-fashion-mnist.toml --set net.kind=noisy-classifier -o run/noisy.safetensors
    """
    from .. import data as D
    from .. import recipe as R

    extra = list(overrides)
    if data_source:
        extra.append(override("data", "source", data_source))
    if seed is not None:
        extra.append(override("train", "seed", seed))
    rec = R.load(recipe_path, extra)
    if as_json and out == "-":
        raise click.UsageError("--json and -o - both write to stdout; choose one")
    if not dry_run:
        from ..train import checkpoint_path

        check_outputs(out, checkpoint_path(out) if out != "-" else None)
    ds = D.load(rec.data.source, rec.data.limit)
    if isinstance(rec.net, R.ClassifierSpec):
        if basis_path:
            raise click.UsageError("--basis: a classifier recipe ([net] kind = \"classifier\") has no basis")
        return train_classifier(rec, ds, out, None, device, dry_run, as_json)
    if isinstance(rec.net, R.NoisyClassifierSpec):
        return train_classifier(rec, ds, out, basis_path, device, dry_run, as_json)
    info = ds.info()
    if getattr(rec.net, "classes", 0):
        from ..guidance import check_labels

        check_labels(ds.labels, rec.net.classes, ds.source)

    from ..build import build_model, fit_basis, resolve
    from .fit_basis import load_basis

    rec = resolve(rec, info)
    if dry_run:
        if is_main():
            click.echo(rec.toml())
        return
    dev = resolve_device(device)
    from .. import distributed

    world = distributed.world()

    import torch

    from .. import artifacts
    from ..model import GaussianModel
    from ..train import export_state, fit_gaussian, history_lines, train

    fitted = load_basis(basis_path, rec, ds.shape) if basis_path else fit_basis(rec, ds.unit())
    torch.manual_seed(rec.train.seed)
    model = build_model(rec, info, fitted)
    if isinstance(model, GaussianModel):
        result = fit_gaussian(model, ds, dev)
        how = "fitted mean and covariance (no gradient steps)"
    else:
        from . import options

        bar = stderr_is_terminal()
        quiet = bar or options.QUIET or not world.main
        lines = None if quiet else (lambda line: click.echo(f"udiff train: {line}", err=True))
        result = train(model, ds, rec, device=dev, out_path=out, data_info=info, fresh=fresh, progress=bar,
                       report=lines, world=world)
        on = f"{result.device}" + (f" × {world.size} processes" if world.size > 1 else "")
        if result.start_step == result.steps:  # a finished run rerun: nothing trained, the checkpoint's model written
            how = f"already trained to step {result.steps} (raise [train] steps to continue), loss {result.loss:.4g}"
            result.images_per_second = None
        else:
            how = (f"{result.steps} steps" + (f" (resumed at {result.start_step})" if result.start_step else "")
                   + f", {result.images_per_second:.0f} img/s on {on}, loss {result.loss:.4g}")
    n_params = sum(p.numel() for p in model.parameters())
    if world.main:  # one writer
        artifacts.save(out, export_state(model, result.ema_state), "model", rec.to_json(), meta={
            "udiff.data": info, "udiff.train": {**result.as_dict(), "parameters": n_params},
            "udiff.basis": {"kind": rec.basis.kind, "from": basis_path or "fitted to the training data"},
            **({"udiff.history": history_lines(result.history)} if result.history else {})})
    emit(as_json, {"out": out, "parameters": n_params, **result.as_dict()},
         f"udiff train: wrote {out}: {how}")


def _classifier_data(rec, ds, dry_run):
    """(train, test, test source) of a classifier recipe's labelled data; None once --dry-run printed the recipe."""
    from .. import classify
    from .. import data as D
    from .. import distributed

    parts = classify.split(ds, rec.net.test, rec.net.holdout, D.load)
    if dry_run:
        click.echo(rec.toml())
        return None
    if distributed.world().size > 1:
        raise UdiffError(f"a classifier recipe ([net] kind = \"{rec.net.kind}\") trains in one process; run it "
                         "without torchrun")
    return parts


def train_classifier(rec, ds, out, basis_path, device, dry_run, as_json):
    """[net] kind = "classifier": fit on labelled images, test on held-out ones, write a `classifier` artifact.
    [net] kind = "noisy-classifier": the same on noisy states of the recipe's process at random times, tested at
    each of classify.NOISY_TIMES, written as a `noisy-classifier` artifact."""
    import torch

    from .. import artifacts
    from .. import classify
    from .. import recipe as R
    from . import options
    from ..build import build_classifier, build_model, fit_basis
    from ..train import export_state
    from .fit_basis import load_basis

    parts = _classifier_data(rec, ds, dry_run)
    if parts is None:
        return
    train, test, test_source = parts
    noisy = isinstance(rec.net, R.NoisyClassifierSpec)
    dev = resolve_device(device)
    classes = classify.num_classes(train, test)
    info = {**train.info(), "classes": classes} if noisy else train.info()
    torch.manual_seed(rec.train.seed)
    if noisy:
        fitted = load_basis(basis_path, rec, train.shape) if basis_path else fit_basis(rec, train.unit())
        net = build_model(rec, info, fitted)
    else:
        net = build_classifier(rec.net, train.shape, classes)
    bar = stderr_is_terminal()
    lines = None if bar or options.QUIET else (lambda line: click.echo(f"udiff train: {line}", err=True))
    result = classify.fit(net, train, test, test_source, rec.train, hflip=rec.data.hflip, device=dev,
                          progress=bar, report=lines)
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    summary = {**result.as_dict(), "classes": classes, "shape": list(train.shape), "parameters": n_params}
    accuracy = f"{100 * result.test_accuracy:.2f}%"
    if noisy:
        levels = classify.noisy_accuracy(net, test, device=dev)
        summary["accuracy_at_t"] = {str(t): a for t, a in levels.items()}
        accuracy = ", ".join(f"{100 * a:.1f}% at t = {t:g}" for t, a in levels.items())
        tensors, kind = export_state(net), "noisy-classifier"
        extra = {"udiff.basis": {"kind": rec.basis.kind, "from": basis_path or "fitted to the training data"}}
    else:
        tensors, kind, extra = {f"weights.{k}": v for k, v in net.state_dict().items()}, "classifier", {}
    artifacts.save(out, tensors, kind, rec.to_json(), meta={"udiff.data": info, "udiff.classifier": summary, **extra})
    emit(as_json, {"out": out, **summary},
         f"udiff train: wrote {out}: {kind}, {result.steps} steps, {result.images_per_second:.0f} img/s on "
         f"{result.device}, loss {result.loss:.4g}; test accuracy {accuracy} on {result.n_test} images of "
         f"{test_source}")
