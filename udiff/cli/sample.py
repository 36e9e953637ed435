"""`udiff sample MODEL -n N -o SAMPLES`: draw samples from a trained model."""

from __future__ import annotations

import click

from ..recipe import GRIDS, SAMPLERS, TARGET_SAMPLERS
from .options import (device_option, emit, json_option, override, resolve_device, set_option,
                      stderr_is_terminal)


@click.command("sample", short_help="Draw samples from a model, or from a target density given in a recipe.")
@click.argument("model_path", metavar="MODEL|RECIPE")
@click.option("-n", "--num", type=click.IntRange(min=1), metavar="N", help="Number of samples (seeds SEED..SEED+N-1).")
@click.option("--seeds", metavar="LIST", help="Seeds, e.g. 0-63 or 0-9,100: sample k uses seed k.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="INT",
              help="First seed when only -n is given.")
@click.option("--sampler", type=click.Choice(SAMPLERS + TARGET_SAMPLERS),
              help=f"Sampler; overrides [sample] sampler (a target recipe takes {', '.join(TARGET_SAMPLERS)}).")
@click.option("--steps", type=click.IntRange(min=1), metavar="K",
              help="Steps; overrides [sample] steps (a target recipe: target-gradient evaluations per sample).")
@click.option("--time-grid", type=click.Choice(GRIDS), help="Time grid; overrides [sample] grid.")
@click.option("-o", "--out", metavar="SAMPLES", help="Samples artifact to write ('-' for stdout).")
@click.option("--grid", "grid_png", metavar="PNG", help="Also write a picture of the samples (image data only).")
@click.option("--grid-scale", type=click.IntRange(1, 16), default=1, show_default=True, metavar="S",
              help="Enlarge each pixel of the picture S times.")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="B",
              help="Samples per batch; overrides [sample] batch_size.")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@click.option("--basis", "basis_path", metavar="BASIS", help="Check that MODEL was trained in this basis.")
@click.option("--compare", is_flag=True, help="Target recipes: also run the other samplers on the same budget and "
              "seeds, and report their metrics (the samples written are the recipe's sampler's).")
@set_option
@device_option
@json_option
def command(model_path, num, seeds, seed, sampler, steps, time_grid, out, grid_png, grid_scale, batch_size,
            no_ema, basis_path, compare, overrides, device, as_json):
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
    udiff sample recipes/dilation-gmm.toml -n 10000 -o run/gmm.safetensors
    udiff sample recipes/dilation-grid.toml -n 10000 -o run/grid.safetensors --compare --json
    """
    from ..rng import parse_seeds

    if not out and not grid_png:
        raise click.UsageError("nothing to write: give -o SAMPLES and/or --grid PNG")
    if out == "-" and as_json:
        raise click.UsageError("--json and -o - both write to stdout; choose one")
    seed_list = parse_seeds(seeds) if seeds else None
    if seed_list is not None and num is not None and num != len(seed_list):
        raise click.UsageError(f"-n {num} disagrees with --seeds ({len(seed_list)} seeds); give one of them")
    if seed_list is None:
        if num is None:
            raise click.UsageError("give -n N or --seeds LIST")
        seed_list = list(range(seed, seed + num))
    from .sample_target import looks_like_recipe, sample_target

    if looks_like_recipe(model_path):
        return sample_target(model_path, seed_list, sampler=sampler, steps=steps, time_grid=time_grid, out=out,
                             grid_png=grid_png, batch_size=batch_size, no_ema=no_ema, basis_path=basis_path,
                             compare=compare, overrides=overrides, device=device, as_json=as_json)
    if compare:
        raise click.UsageError("--compare applies to target recipes only; MODEL is a trained model")
    if sampler in TARGET_SAMPLERS:
        raise click.UsageError(f"--sampler {sampler}: samples target recipes; a model takes {', '.join(SAMPLERS)}")

    import sys
    import time

    import torch

    from .. import artifacts
    from ..build import model_from_artifact, recipe_of
    from ..data import to_uint8
    from ..samplers import generate

    restrict_to_sample(overrides)
    extra = list(overrides)
    for key, val in (("sampler", sampler), ("steps", steps), ("grid", time_grid), ("batch_size", batch_size)):
        if val is not None:
            extra.append(override("sample", key, val))
    art = artifacts.load(model_path, ("model", "checkpoint"))  # a checkpoint samples mid-training
    use_ema = recipe_of(art, extra).sample.ema and not no_ema
    model, rec, info = model_from_artifact(art, extra, ema=use_ema)
    if basis_path:
        check_basis(model, basis_path, model_path)
    image8 = info.get("kind") == "image8"
    if grid_png and len(info["shape"]) != 3:
        raise click.UsageError(f"--grid needs image samples; this model makes vectors of shape {tuple(info['shape'])}")
    dev = resolve_device(device)
    model.prepare(dev)
    s = rec.sample
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    bar = None
    if stderr_is_terminal():
        from tqdm import tqdm
        bar = tqdm(total=len(seed_list), unit="sample", file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    x, used = generate(model, seed_list, sampler=s.sampler, steps=s.steps, grid=s.grid, rho=s.rho, eta=s.eta,
                      t_end=s.t_end, denoise=s.denoise, batch_size=s.batch_size, device=dev,
                      rtol=s.rtol, atol=s.atol, autocast=autocast, progress=bar.update if bar else None)
    seconds = time.perf_counter() - t0
    if bar:
        bar.close()
    tensors = {"seeds": torch.tensor(seed_list, dtype=torch.int64)}
    if image8:
        tensors["images"] = to_uint8(x)
    else:
        tensors["x"] = x.float()
    meta = {"udiff.samples": {**used, "sampler": s.sampler, "ema": use_ema, "n": len(seed_list),
                              "model": art.meta.get("udiff.sha256")},
            "udiff.data": info}
    with artifacts.Outputs() as outputs:
        if grid_png:
            from ..images import grid, save_png

            pics = tensors["images"] if image8 else to_uint8(x.clamp(-1, 1))
            save_png(outputs.stage(grid_png), grid(pics), scale=grid_scale)
        if out and out != "-":
            with open(outputs.stage(out), "wb") as fh:
                fh.write(artifacts.to_bytes(tensors, "samples", rec.to_json(), meta))
        outputs.commit()
    if out == "-":
        artifacts.save("-", tensors, "samples", rec.to_json(), meta)
    wrote = " and ".join(p for p in (out if out != "-" else None, grid_png) if p) or "stdout"
    emit(as_json, {"out": out, "grid": grid_png, "n": len(seed_list), "sampler": s.sampler, **used,
                   "seconds": round(seconds, 3), "device": str(dev)},
         f"udiff sample: wrote {wrote}: {len(seed_list)} samples, {s.sampler} {used['steps']} steps "
         f"({used['nfe']} NFE), {seconds:.1f} s on {dev}")


def restrict_to_sample(overrides):
    """A trained model's sections other than [sample] are fixed: changing them would change the model."""
    from .. import recipe as R

    for item in overrides:
        section, _, _ = R.parse_override(item)
        if section != "sample":
            raise click.UsageError(f"--set {item}: only [sample] keys can be overridden; [{section}] is part of "
                                   "the trained model (retrain to change it)")


def check_basis(model, basis_path: str, model_path: str):
    """--basis: refuse a model that was not trained in this basis artifact's basis."""
    import torch

    from .. import artifacts
    from ..errors import ArtifactError

    art = artifacts.load(basis_path, "basis")
    (variances,) = art.require("variances")
    kind = art.json("udiff.basis", {}).get("kind")
    same = (kind == model.basis.kind and variances.shape == model.basis.variances.shape
            and torch.allclose(variances.float(), model.basis.variances.float().cpu(), rtol=1e-4, atol=1e-8))
    if not same:
        raise ArtifactError(f"{model_path}: was not trained in the basis of {basis_path} ({kind} basis); "
                            "leave --basis out (the model carries its basis) or give the matching one")
