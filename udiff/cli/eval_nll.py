"""`udiff eval-nll MODEL --data SOURCE`: the negative log-likelihood of a data set under a model."""

from __future__ import annotations

import click

from ..registry import NLL_METHODS
from .options import PATH, device_option, emit, json_option, resolve_device

METHODS = NLL_METHODS.names()


@click.command("eval-nll", short_help="Likelihood of data under a model, in bits/dim.")
@click.argument("model_path", type=PATH, metavar="MODEL")
@click.option("--data", "data_source", required=True, metavar="SOURCE",
              help="Data to evaluate, e.g. fashion-mnist:test (same shape and kind as the training data).")
@click.option("--method", type=click.Choice(METHODS), default="vlb", show_default=True,
              help="vlb: the variational bound (prior + reconstruction + diffusion); ode: the probability-flow "
                   "ODE with a Hutchinson trace estimator and adaptive RK45.")
@click.option("--steps", type=click.IntRange(min=1), metavar="T",
              help="vlb: the bound of the discrete-time model with T steps [default: continuous time].")
@click.option("--repeats", type=click.IntRange(min=1), metavar="K",
              help="Estimates per item (times and noise; for ode: probes, dequantization and momentum) "
                   "[default: chosen for --stderr].")
@click.option("--stderr", "stderr_target", type=click.FloatRange(min=0.0, min_open=True), default=0.005,
              show_default=True, metavar="SE",
              help="Without --repeats: double the repeats per item until the standard error of the result is "
                   "at most SE (in its unit), or only the items' own spread is left, or --max-repeats.")
@click.option("--max-repeats", type=click.IntRange(min=1), default=64, show_default=True, metavar="K",
              help="Cap of the repeats per item chosen for --stderr.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, metavar="B",
              help="Network inputs per batch (items × repeats); does not change the result of vlb.")
@click.option("--limit", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Evaluate only the first N items (0 = all).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True, metavar="INT",
              help="Seed of the estimator's random numbers (item k always draws from (seed, k)).")
@click.option("--tol", type=click.FloatRange(min=0.0, min_open=True), default=1e-5, show_default=True,
              metavar="TOL", help="ode: relative and absolute tolerance of the RK45 solver.")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@device_option
@json_option
def command(model_path, data_source, method, steps, repeats, stderr_target, max_repeats, batch_size, limit, seed, tol,
            no_ema, device, as_json):
    """Estimate the negative log-likelihood of the items of SOURCE under MODEL (EMA weights).

    8-bit images are reported in bits/dim as a bound on the probability of the discrete data: the vlb
    method uses VDM's 256-way discretized decoder (no offset), the ode method uniform dequantization. Float
    data are reported in nats/dim of the density in data space (the basis's Jacobian included). For
    phase-space processes (PSLD, CLD) the number bounds -log p(x) with the momentum integrated out. The
    output names what it bounds, each term of the bound, and the standard error over the items.

    \b
    udiff eval-nll run/model.safetensors --data fashion-mnist:test
    udiff eval-nll run/model.safetensors --data fashion-mnist:test --steps 1000 --repeats 4 --json
    udiff eval-nll run/model.safetensors --data digits --method ode --limit 256
    """
    from ..errors import DataError, UdiffError

    if model_path.endswith(".toml"):
        raise UdiffError(f"{model_path}: is a recipe; eval-nll takes a model artifact made by `udiff train`")
    if steps is not None and method != "vlb":
        raise click.UsageError("--steps applies to --method vlb (the ODE solver picks its own steps; see --tol)")

    import time

    from .. import artifacts
    from .. import data as D
    from ..build import model_from_artifact
    from ..likelihood import evaluate
    from .models import progress

    art = artifacts.load(model_path, ("model", "checkpoint"))
    model, _, info = model_from_artifact(art, ema=not no_ema)
    ds = D.load(data_source, limit)
    kind = "image8" if ds.is_image8 else "float"
    if list(ds.shape) != list(info["shape"]) or kind != info.get("kind", kind):
        want = f"{info.get('kind', '')} items of shape {tuple(info['shape'])}"
        raise DataError(f"data source {data_source!r}: {kind} items of shape {tuple(ds.shape)}, but {model_path} "
                        f"was trained on {want}; give data like its training data ({info.get('source')})")
    dev = resolve_device(device)
    from .. import distributed

    world = distributed.world()
    t0 = time.perf_counter()
    with progress(len(ds), "item", "udiff eval-nll") as update:
        est = evaluate(model, ds.tensor, image8=ds.is_image8, method=method, steps=steps or 0, repeats=repeats,
                       stderr=stderr_target, max_repeats=max_repeats, batch_size=batch_size, seed=seed, device=dev,
                       rtol=tol, atol=tol, progress=update, world=world)
    seconds = time.perf_counter() - t0
    rate = est.n / seconds if seconds > 0 else 0.0
    record = {**est.as_dict(), "data": data_source, "model": art.meta.get("udiff.sha256"), "ema": not no_ema,
              "seed": seed, "seconds": round(seconds, 3), "items_per_second": round(rate, 2), "device": str(dev),
              "world_size": world.size}
    if method == "ode":
        record["tol"] = tol
    err = f" ± {est.stderr:.4f}" if est.stderr is not None else ""
    how = (f"VLB, {'continuous time' if not steps else f'T = {steps}'}" if method == "vlb"
           else f"PF-ODE, {est.nfe:.0f} NFE")
    terms = ", ".join(f"{k} {v:.4f}" for k, v in est.terms.items())
    emit(as_json, record,
         f"udiff eval-nll: {est.value:.4f}{err} {est.units} ({how}; {terms}) over {est.n} items of {data_source} "
         f"× {est.repeats} repeats, {rate:.1f} items/s on {dev}; {est.bounds}", result=True)
