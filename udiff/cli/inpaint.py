"""`udiff inpaint MODEL IMAGE --mask MASK -o OUT`: fill in the unknown part of images (or vectors)."""

from __future__ import annotations

import click

from ..registry import GRIDS, INPAINT_METHODS, MASKS, SAMPLERS
from .options import (PATH, check_outputs, conditioning_options, device_option, emit, grid_scale_option, json_option,
                      set_option)


@click.command("inpaint", short_help="Fill in the unknown part of images.")
@click.argument("model_path", type=PATH, metavar="MODEL")
@click.argument("image", type=PATH, metavar="IMAGE")
@click.option("--mask", "mask_spec", required=True, type=PATH, metavar="MASK",
              help=f"Known part: a PNG (white = known), a safetensors file with key `mask`, or a named missing "
                   f"region: {', '.join(MASKS.names())}.")
@click.option("-o", "--out", type=PATH, metavar="OUT",
              help="Result: a .png picture, or a samples artifact (.safetensors).")
@click.option("--grid", "grid_png", type=PATH, metavar="PNG", help="Also write input | mask | result side by side.")
@grid_scale_option
@click.option("--method", type=click.Choice(INPAINT_METHODS.names()), default="replace", show_default=True,
              help="replace: known pixels replaced by the forward process at every step; soft: known "
                   "components held at low noise (GUD).")
@click.option("--resample", type=click.IntRange(min=1), default=1, show_default=True, metavar="R",
              help="RePaint: repeat every step R times with re-noising (replace + ancestral).")
@click.option("-n", "--num", type=click.IntRange(min=1), metavar="N", help="Use the first N items of IMAGE.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="INT",
              help="Item k uses seed SEED + k.")
@click.option("--sampler", type=click.Choice(SAMPLERS.names()), help="Sampler; overrides [sample] sampler.")
@click.option("--steps", type=click.IntRange(min=1), metavar="K", help="Steps; overrides [sample] steps.")
@click.option("--time-grid", type=click.Choice(GRIDS.names()), help="Time grid; overrides [sample] grid.")
@click.option("--basis", "basis_path", type=PATH, metavar="BASIS", help="Check that MODEL was trained in this basis.")
@conditioning_options
@set_option
@device_option
@json_option
def command(model_path, image, mask_spec, out, grid_png, grid_scale, method, resample, num, seed, sampler, steps,
            time_grid, basis_path, class_, labels, guidance, classifier_path, classifier_scale, overrides, device,
            as_json):
    """Inpaint IMAGE with MODEL where MASK says what is known.

    IMAGE is a PNG/JPEG file, a safetensors file (a samples artifact, or key `images`/`x`), or a data
    source such as fashion-mnist:test. With --method replace the mask is in pixels for every basis; with
    --method soft it marks the basis's components (pixels for the pixel basis) and the model should have
    been trained with [net] cond = "gamma-map" (or be the exact `gaussian` net). --class, --labels, --guidance
    and --classifier condition the filled-in part on a class, as in `udiff sample`.

    \b
    udiff inpaint run/model.safetensors fashion-mnist:test -n 16 --mask lower-half -o run/filled.png \\
        --grid run/in-mask-out.png
    udiff inpaint run/model.safetensors photo.png --mask mask.png -o filled.png --resample 5
    """
    import time

    import torch

    from .. import artifacts
    from ..data import to_uint8
    from ..images import IMAGE_EXTS, read_items, read_mask
    from ..inpaint import inpaint
    from .models import autocast, conditioning, load_for_sampling

    if not out and not grid_png:
        raise click.UsageError("nothing to write: give -o OUT and/or --grid PNG")
    check_outputs(out, grid_png)
    run = load_for_sampling(model_path, overrides, sampler=sampler, steps=steps, time_grid=time_grid,
                            basis_path=basis_path, device=device)
    shape, rec, info, dev = tuple(run.info["shape"]), run.recipe, run.info, run.device
    x_known, image8 = read_items(image, shape, run.image8)
    if num:
        x_known = x_known[:num]
    mask = read_mask(mask_spec, shape)
    seeds = list(range(seed, seed + len(x_known)))
    cond = conditioning(run, len(seeds), class_, labels, guidance, classifier_path, classifier_scale, model_path)
    t0 = time.perf_counter()
    x, used = inpaint(run.model, x_known, mask, seeds, run.plan, method=method, resample=resample,
                      batch_size=rec.sample.batch_size, device=dev, autocast=autocast(dev), cond=cond)
    seconds = time.perf_counter() - t0
    result = to_uint8(x) if image8 else x
    with artifacts.Outputs() as outputs:
        if out and out.lower().endswith(IMAGE_EXTS):
            if len(shape) != 3:
                raise click.UsageError("-o .png needs image data; write a .safetensors artifact instead")
            from ..images import grid, save_png

            pics = result if image8 else to_uint8(x.clamp(-1, 1))
            save_png(outputs.stage(out), grid(pics), scale=grid_scale)
        elif out:
            tensors = {"seeds": torch.tensor(seeds), ("images" if image8 else "x"): result,
                       "mask": mask.to(torch.uint8), **({"labels": cond.labels} if cond is not None else {})}
            with open(outputs.stage(out), "wb") as fh:
                fh.write(artifacts.to_bytes(tensors, "samples", rec.to_json(), {
                    "udiff.inpaint": {**used, "mask": mask_spec, "image": image}, "udiff.data": info}))
        if grid_png:
            if len(shape) != 3:
                raise click.UsageError("--grid needs image data")
            from ..images import grid, save_png

            known = to_uint8(x_known) if image8 else to_uint8(x_known.clamp(-1, 1))
            shown = torch.where(mask.expand_as(known), known, torch.full_like(known, 128))
            m = (mask.expand_as(known).to(torch.uint8) * 255)
            got = result if image8 else to_uint8(x.clamp(-1, 1))
            rows = torch.stack([shown, m, got], dim=1).reshape((-1,) + shape)
            save_png(outputs.stage(grid_png), grid(rows, cols=3), scale=grid_scale)
        outputs.commit()
    emit(as_json, {"out": out, "grid": grid_png, "n": len(seeds), **used, "seconds": round(seconds, 3),
                   "device": str(dev)},
         f"udiff inpaint: wrote {' and '.join(p for p in (out, grid_png) if p)}: {len(seeds)} items, {method}, "
         f"{used['sampler']} {used['steps']} steps ({used['nfe']} NFE), {seconds:.1f} s on {dev}")


