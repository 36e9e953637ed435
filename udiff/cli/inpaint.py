"""`udiff inpaint MODEL IMAGE --mask MASK -o OUT`: fill in the unknown part of images (or vectors)."""

from __future__ import annotations

import os

import click

from ..inpaint import MASKS, METHODS
from ..recipe import GRIDS, SAMPLERS
from .options import device_option, emit, json_option, override, resolve_device, set_option

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@click.command("inpaint", short_help="Fill in the unknown part of images.")
@click.argument("model_path", metavar="MODEL")
@click.argument("image", metavar="IMAGE")
@click.option("--mask", "mask_spec", required=True, metavar="MASK",
              help=f"Known part: a PNG (white = known), a safetensors file with key `mask`, or a named missing "
                   f"region: {', '.join(MASKS)}.")
@click.option("-o", "--out", metavar="OUT", help="Result: a .png picture, or a samples artifact (.safetensors).")
@click.option("--grid", "grid_png", metavar="PNG", help="Also write input | mask | result side by side.")
@click.option("--grid-scale", type=click.IntRange(1, 16), default=1, show_default=True, metavar="S",
              help="Enlarge each pixel of the picture S times.")
@click.option("--method", type=click.Choice(METHODS), default="replace", show_default=True,
              help="replace: known pixels replaced by the forward process at every step; soft: known "
                   "components held at low noise (GUD).")
@click.option("--resample", type=click.IntRange(min=1), default=1, show_default=True, metavar="R",
              help="RePaint: repeat every step R times with re-noising (replace + ancestral).")
@click.option("-n", "--num", type=click.IntRange(min=1), metavar="N", help="Use the first N items of IMAGE.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="INT",
              help="Item k uses seed SEED + k.")
@click.option("--sampler", type=click.Choice(SAMPLERS), help="Sampler; overrides [sample] sampler.")
@click.option("--steps", type=click.IntRange(min=1), metavar="K", help="Steps; overrides [sample] steps.")
@click.option("--time-grid", type=click.Choice(GRIDS), help="Time grid; overrides [sample] grid.")
@click.option("--basis", "basis_path", metavar="BASIS", help="Check that MODEL was trained in this basis.")
@set_option
@device_option
@json_option
def command(model_path, image, mask_spec, out, grid_png, grid_scale, method, resample, num, seed, sampler, steps,
            time_grid, basis_path, overrides, device, as_json):
    """Inpaint IMAGE with MODEL where MASK says what is known.

    IMAGE is a PNG/JPEG file, a safetensors file (a samples artifact, or key `images`/`x`), or a data
    source such as fashion-mnist:test. With --method replace the mask is in pixels for every basis; with
    --method soft it marks the basis's components (pixels for the pixel basis) and the model should have
    been trained with [net] cond = "gamma-map" (or be the exact `gaussian` net).

    \b
    udiff inpaint run/model.safetensors fashion-mnist:test -n 16 --mask lower-half -o run/filled.png \\
        --grid run/in-mask-out.png
    udiff inpaint run/model.safetensors photo.png --mask mask.png -o filled.png --resample 5
    """
    import time

    import torch

    from .. import artifacts
    from ..build import model_from_artifact, recipe_of
    from ..data import to_uint8
    from ..errors import UdiffError
    from ..inpaint import inpaint
    from .sample import check_basis, restrict_to_sample

    if not out and not grid_png:
        raise click.UsageError("nothing to write: give -o OUT and/or --grid PNG")
    restrict_to_sample(overrides)
    extra = list(overrides)
    for key, val in (("sampler", sampler), ("steps", steps), ("grid", time_grid)):
        if val is not None:
            extra.append(override("sample", key, val))
    art = artifacts.load(model_path, ("model", "checkpoint"))
    use_ema = recipe_of(art, extra).sample.ema
    model, rec, info = model_from_artifact(art, extra, ema=use_ema)
    if basis_path:
        check_basis(model, basis_path, model_path)
    shape = tuple(info["shape"])
    x_known, image8 = _read_items(image, shape, info.get("kind") == "image8")
    if num:
        x_known = x_known[:num]
    mask = _read_mask(mask_spec, shape)
    dev = resolve_device(device)
    model.prepare(dev)
    s = rec.sample
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    seeds = list(range(seed, seed + len(x_known)))
    t0 = time.perf_counter()
    try:
        x, used = inpaint(model, x_known, mask, seeds, method=method, sampler=s.sampler, steps=s.steps, grid=s.grid,
                          rho=s.rho, eta=s.eta, t_end=s.t_end, resample=resample, batch_size=s.batch_size,
                          device=dev, autocast=autocast)
    except NotImplementedError as e:
        raise UdiffError(f"inpaint: {e}; choose another --sampler or --method") from None
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
                       "mask": mask.to(torch.uint8)}
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


def _read_items(image: str, shape, image8: bool):
    """IMAGE → float items in model units, (N, *shape); the model's kind of data decides the encoding."""
    import torch

    from .. import data as D
    from ..errors import DataError

    if image.lower().endswith(IMAGE_EXTS):
        from PIL import Image

        if not os.path.isfile(image):
            raise DataError(f"{image}: no such image file")
        if len(shape) != 3:
            raise DataError(f"{image}: the model makes vectors of shape {tuple(shape)}, not images")
        c, h, w = shape
        with Image.open(image) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                raise DataError(f"{image}: is {im.size[0]}×{im.size[1]}, the model makes {w}×{h} images; resize it")
            import numpy as np

            arr = np.asarray(im)
        t = torch.from_numpy(arr.copy()).reshape(1, h, w, c).permute(0, 3, 1, 2).contiguous()
        return D.to_unit(t), True
    source = f"tensors:{image}" if image.endswith(".safetensors") else image
    ds = D.load(source)
    if tuple(ds.shape) != tuple(shape):
        raise DataError(f"{image}: items have shape {tuple(ds.shape)}, the model's are {tuple(shape)}")
    if ds.is_image8 != image8:
        raise DataError(f"{image}: {'8-bit images' if ds.is_image8 else 'float data'}, but the model was trained "
                        f"on {'8-bit images' if image8 else 'float data'}")
    return ds.unit(), ds.is_image8


def _read_mask(spec: str, shape):
    """MASK → bool tensor of the item shape, True where known."""
    import torch
    from safetensors.torch import load_file

    from ..errors import DataError
    from ..inpaint import named_mask

    if spec in MASKS:
        return named_mask(spec, shape)
    if not os.path.isfile(spec):
        raise DataError(f"--mask {spec}: no such file and not a named mask ({', '.join(MASKS)})")
    if spec.lower().endswith(IMAGE_EXTS):
        import numpy as np
        from PIL import Image

        with Image.open(spec) as im:
            arr = np.asarray(im.convert("L")) > 127
        m = torch.from_numpy(arr.copy())
    else:
        try:
            m = load_file(spec).get("mask")
        except Exception as e:
            raise DataError(f"--mask {spec}: cannot read safetensors ({str(e).splitlines()[0]})") from None
        if m is None:
            raise DataError(f"--mask {spec}: no key 'mask' (bool or uint8, the shape of one item)")
        m = m != 0
    if len(shape) == 3 and m.shape == shape[1:]:
        m = m.unsqueeze(0).expand(shape).clone()
    if tuple(m.shape) != tuple(shape):
        raise DataError(f"--mask {spec}: shape {tuple(m.shape)} does not match the items' {tuple(shape)}")
    if bool(m.all()):
        raise DataError(f"--mask {spec}: everything is known; nothing to inpaint (white = known)")
    return m
