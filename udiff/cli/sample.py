"""`udiff sample MODEL -n N -o SAMPLES`: draw samples from a trained model."""

from __future__ import annotations

import click

from ..recipe import GRIDS, SAMPLERS, TARGET_SAMPLERS
from .options import (PATH, RECIPE_PATH, check_outputs, conditioning_options, device_option, emit, grid_scale_option,
                      json_option, seed_list_of, set_option)


@click.command("sample", short_help="Draw samples from a model, or from a target density given in a recipe.")
@click.argument("model_path", type=RECIPE_PATH, metavar="MODEL|RECIPE")
@click.option("-n", "--num", type=click.IntRange(min=1), metavar="N", help="Number of samples (seeds SEED..SEED+N-1).")
@click.option("--seeds", metavar="LIST", help="Seeds, e.g. 0-63 or 0-9,100: sample k uses seed k.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="INT",
              help="First seed when only -n is given.")
@click.option("--sampler", type=click.Choice(SAMPLERS + TARGET_SAMPLERS),
              help=f"Sampler; overrides [sample] sampler (a target recipe takes {', '.join(TARGET_SAMPLERS)}).")
@click.option("--steps", type=click.IntRange(min=1), metavar="K",
              help="Steps; overrides [sample] steps (a target recipe: target-gradient evaluations per sample).")
@click.option("--time-grid", type=click.Choice(GRIDS), help="Time grid; overrides [sample] grid.")
@click.option("-o", "--out", type=PATH, metavar="SAMPLES", help="Samples artifact to write ('-' for stdout).")
@click.option("--grid", "grid_png", type=PATH, metavar="PNG",
              help="Also write a picture of the samples (image data only).")
@grid_scale_option
@click.option("--batch-size", type=click.IntRange(min=1), metavar="B",
              help="Samples per batch; overrides [sample] batch_size.")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@click.option("--basis", "basis_path", type=PATH, metavar="BASIS", help="Check that MODEL was trained in this basis.")
@click.option("--compare", is_flag=True, help="Target recipes: also run the other samplers on the same budget and "
              "seeds, and report their metrics (the samples written are the recipe's sampler's).")
@conditioning_options
@set_option
@device_option
@json_option
def command(model_path, num, seeds, seed, sampler, steps, time_grid, out, grid_png, grid_scale, batch_size,
            no_ema, basis_path, compare, class_, labels, guidance, classifier_path, classifier_scale, overrides, device,
            as_json):
    """Draw samples from MODEL (a model artifact from `udiff train`, or its checkpoint), one per seed.

    Sample k comes from seed k alone, so it is the same whatever the batch size. Image models write
    uint8 `images` (N×C×H×W); models of float data write float32 `x` in the data's shape.

    \b
    udiff sample run/model.safetensors --seeds 0-63 -o run/samples.safetensors --grid run/samples.png
    udiff sample run/model.safetensors -n 1000 --sampler ddim --steps 50 -o - | ...

    RECIPE instead of MODEL: a TOML recipe whose [target] section gives a density known up to a constant
    (no model, no data). Its samples come from annealed Langevin on the dilation path, or from a baseline
    (--sampler ula, mala, convolution-mc), with `steps` target-gradient evaluations per sample; when the
    target has exact samples, the mode-weight error, MMD and sliced W2 against them are reported and stored.

    \b
    A class-conditional model ([net] classes = K) draws class K with --class K, one class per seed with --labels,
    and with classifier-free guidance --guidance W; an unconditional one is guided by a noise-conditional
    classifier with --classifier CLS --class K --classifier-scale S (docs/guidance.md). The labels go into the
    samples artifact (tensor `labels`), the class, guidance and classifier into its metadata.

    \b
    udiff sample run/cond.safetensors --seeds 0-99 --class 3 --guidance 2 -o run/class3.safetensors
    udiff sample run/psld.safetensors --seeds 0-99 --class 3 --classifier run/noisy.safetensors -o run/c3.safetensors

    \b
    udiff sample recipes/dilation-gmm.toml -n 10000 -o run/gmm.safetensors
    udiff sample recipes/dilation-grid.toml -n 10000 -o run/grid.safetensors --compare --json
    """
    if not out and not grid_png:
        raise click.UsageError("nothing to write: give -o SAMPLES and/or --grid PNG")
    if out == "-" and as_json:
        raise click.UsageError("--json and -o - both write to stdout; choose one")
    check_outputs(out, grid_png)
    seed_list = seed_list_of(num, seeds, seed)
    from .sample_target import looks_like_recipe, sample_target

    if looks_like_recipe(model_path):
        from .. import distributed

        if any(v is not None for v in (class_, labels, guidance, classifier_path)):
            raise click.UsageError(f"{model_path}: a target recipe has no classes; --class, --labels, --guidance and "
                                   "--classifier apply to trained models")

        if distributed.world().size > 1:
            raise click.UsageError(f"{model_path}: a target recipe samples in one process (its particles interact); "
                                   "run it without torchrun")
        return sample_target(model_path, seed_list, sampler=sampler, steps=steps, time_grid=time_grid, out=out,
                             grid_png=grid_png, batch_size=batch_size, no_ema=no_ema, basis_path=basis_path,
                             compare=compare, overrides=overrides, device=device, as_json=as_json)
    if compare:
        raise click.UsageError("--compare applies to target recipes only; MODEL is a trained model")
    if sampler in TARGET_SAMPLERS:
        raise click.UsageError(f"--sampler {sampler}: samples target recipes; a model takes {', '.join(SAMPLERS)}")

    import time

    from ..samplers import generate
    from .models import autocast, conditioning, load_for_sampling, progress, sample_tensors, write_samples

    run = load_for_sampling(model_path, overrides, sampler=sampler, steps=steps, time_grid=time_grid,
                            batch_size=batch_size, no_ema=no_ema, basis_path=basis_path, device=device)
    cond = conditioning(run, len(seed_list), class_, labels, guidance, classifier_path, classifier_scale, model_path)
    if grid_png and len(run.info["shape"]) != 3:
        raise click.UsageError(f"--grid needs image samples; this model makes vectors of shape "
                               f"{tuple(run.info['shape'])}")
    from .. import distributed

    world = distributed.world()
    t0 = time.perf_counter()
    with progress(len(seed_list), "sample") as update:
        x, used = generate(run.model, seed_list, run.plan, batch_size=run.recipe.sample.batch_size,
                           device=run.device, autocast=autocast(run.device), progress=update, world=world, cond=cond)
    seconds = time.perf_counter() - t0
    if not world.main:  # rank 0 writes
        return
    tensors = sample_tensors(x, seed_list, run.image8)
    if cond is not None:
        tensors["labels"] = cond.labels
    meta = {"udiff.samples": {**used, "ema": run.ema, "n": len(seed_list), "world_size": world.size,
                              "model": run.artifact.meta.get("udiff.sha256")}, "udiff.data": run.info}
    write_samples(out, tensors, run.recipe.to_json(), meta, grid_png=grid_png, grid_scale=grid_scale,
                  pictures=None if run.image8 else x)
    wrote = " and ".join(p for p in (out if out != "-" else None, grid_png) if p) or "stdout"
    emit(as_json, {"out": out, "grid": grid_png, "n": len(seed_list), **used, "seconds": round(seconds, 3),
                   "device": str(run.device), "world_size": world.size},
         f"udiff sample: wrote {wrote}: {len(seed_list)} samples, {used['sampler']} {used['steps']} steps "
         f"({used['nfe']} NFE), {seconds:.1f} s on {run.device}")
