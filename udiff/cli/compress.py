"""`udiff compress MODEL INPUT -o OUT.udz` and `udiff compress -d MODEL OUT.udz -o DECODED`: lossless
bits-back compression of 8-bit images with a trained model (udiff/coding.py, docs/compression.md)."""

from __future__ import annotations

import click

from ..coding_settings import Settings
from .options import PATH, check_outputs, device_option, emit, json_option, resolve_device, stderr_is_terminal

STEPS = Settings.steps  # T of the chain when --steps is not given (docs/compression.md)


@click.command("compress", short_help="Lossless compression of 8-bit images with a model (bits-back ANS); -d decodes.")
@click.argument("model_path", type=PATH, metavar="MODEL")
@click.argument("source", type=PATH, metavar="INPUT")
@click.option("-d", "--decompress", "decode", is_flag=True,
              help="Decode INPUT, a .udz file made with MODEL, into a samples artifact (like gzip -d).")
@click.option("-o", "--out", required=True, type=PATH, metavar="OUT",
              help="The .udz file to write; with -d the samples artifact (images, uint8 N×C×H×W). '-' is stdout.")
@click.option("--steps", type=click.IntRange(1, 100_000), metavar="T",
              help=f"Steps of the discrete-time chain that codes the images [default: {STEPS}].")
@click.option("--limit", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Compress only the first N images (0 = all).")
@click.option("--cells", type=click.IntRange(1, 255), default=Settings.cells, show_default=True, metavar="C",
              help="Latent grid: at least C cells per standard deviation of the finer of the two Gaussians that "
                   "code a latent (the grid is a power of two).")
@click.option("--batch-size", type=click.IntRange(1, 65535), default=Settings.batch, show_default=True, metavar="B",
              help="Images per call of the coder and the network (the first batches are smaller: they grow with "
                   "what has been coded). Changes the file, not its size on average.")
@click.option("--vlb-repeats", type=click.IntRange(min=0), default=8, show_default=True, metavar="K",
              help="Estimates per image of the discrete-T bound reported beside the file's size (as eval-nll "
                   "--steps T --repeats K: K network evaluations per image, against T for the coding); 0 "
                   "skips it.")
@click.option("--verify", is_flag=True, help="Decode the file again before writing it and check that it is exact.")
@device_option
@json_option
def command(model_path, source, decode, out, steps, limit, cells, batch_size, vlb_repeats, verify, device, as_json):
    """Compress the 8-bit images of INPUT (a data source: digits, fashion-mnist:test, tensors:FILE,
    folder:DIR, cifar10:...; '-' reads a samples artifact from stdin) losslessly with MODEL, by bits-back
    coding with its discrete-time chain; the file is about the model's discrete-T bound in size. With -d,
    decode a .udz file made with MODEL back into its images, bit-exact and in order.

    The decoder must rebuild the encoder's network outputs bit for bit: decode with the same model on the
    same device class (the file records the model's hash, the device, and the torch and constriction
    versions). A wrong model or a corrupted, truncated or foreign file is refused with one line.

    \b
    udiff compress run/vdm.safetensors fashion-mnist:test -o test.udz --json
    udiff compress -d run/vdm.safetensors test.udz -o test.safetensors
    udiff compress run/vdm.safetensors fashion-mnist:test --limit 16 -o - | udiff compress -d run/vdm.safetensors - -o x
    """
    if out == "-" and as_json:
        raise click.UsageError("--json and -o - both write to stdout; choose one")
    check_outputs(out)
    if decode:
        given = [f for f, v in (("--steps", steps), ("--limit", limit), ("--verify", verify)) if v]
        if given:
            raise click.UsageError(f"{given[0]} applies to compressing; the .udz file says how it was coded")
        return _decompress(model_path, source, out, device, as_json)
    return _compress(model_path, source, out, steps or STEPS, limit, cells, batch_size, vlb_repeats, verify, device,
                     as_json)


def _model(model_path):
    from .. import artifacts
    from ..build import model_from_artifact
    from ..errors import UdiffError

    if model_path.endswith(".toml"):
        raise UdiffError(f"{model_path}: is a recipe; compress takes a model artifact made by `udiff train`")
    art = artifacts.load(model_path, ("model", "checkpoint"))
    model, rec, info = model_from_artifact(art)
    if info.get("kind") != "image8":
        raise UdiffError(f"{model_path}: was trained on float data; compress codes 8-bit images with a model "
                         "trained on them")
    from ..coding import check_model

    check_model(model)
    return art, model, rec, info


def _bar(n):
    if not stderr_is_terminal():
        return None
    import sys

    from tqdm import tqdm
    return tqdm(total=n, unit="img", file=sys.stderr, dynamic_ncols=True)


def _images(source, limit):
    from .. import artifacts
    from .. import data as D
    from ..errors import DataError

    if source == "-":
        art = artifacts.load("-")
        if "images" not in art.tensors:
            raise DataError("-: the artifact on stdin has no 'images' (uint8 N×C×H×W); pipe a samples artifact")
        images = art.tensors["images"]
        return images[:limit] if limit else images
    ds = D.load(source, limit)
    if not ds.is_image8:
        raise DataError(f"data source {source!r}: holds float data; compress codes 8-bit images")
    return ds.images


def _compress(model_path, source, out, steps, limit, cells, batch_size, vlb_repeats, verify, device, as_json):
    import sys

    import torch

    from .. import artifacts
    from ..coding import compress, decompress
    from ..errors import ArtifactError
    from ..likelihood import evaluate

    art, model, _, _ = _model(model_path)
    images = _images(source, limit)
    dev = resolve_device(device)
    sha = art.meta.get("udiff.sha256", "")
    settings = Settings(steps=steps, cells=cells, batch=batch_size)
    bar = _bar(len(images))
    coded = compress(model, images, sha, settings, device=dev, progress=bar.update if bar else None)
    if bar:
        bar.close()
    decode_rate = None
    if verify:
        decoded, _, seconds = decompress(model, coded.blob, sha, device=dev, name="(the new file)")
        if not torch.equal(decoded, images.cpu()):  # pragma: no cover - decompress checks SHA-256 already
            raise ArtifactError("the new file does not decode to the images; nothing was written")
        decode_rate = len(images) / seconds
    vlb = stderr = None
    if vlb_repeats:
        est = evaluate(model, images, image8=True, steps=steps, repeats=vlb_repeats, device=dev)
        vlb, stderr = est.value, est.stderr
    if out == "-":
        sys.stdout.buffer.write(coded.blob)
        sys.stdout.buffer.flush()
    else:
        with artifacts.atomic_path(out) as tmp, open(tmp, "wb") as fh:
            fh.write(coded.blob)
    n, dims, bpd = coded.n, coded.dims, coded.bits_per_dim
    record = {"out": out, "bytes": len(coded.blob), "n": n, "bits_per_dim": bpd, "vlb_bits_per_dim": vlb,
              "vlb_stderr": stderr, "vlb_repeats": vlb_repeats,
              "overhead_bits_per_dim": None if vlb is None else bpd - vlb,
              "net_bits_per_dim": coded.net_bits / (n * dims),
              "first_item_extra_bits": coded.first_item_bits - coded.first_item_net_bits,
              "amortized_bits_per_dim": coded.amortized_bits_per_dim, "header_bytes": coded.header_bytes,
              "encode_items_per_second": n / coded.seconds, "decode_items_per_second": decode_rate,
              "steps": steps, "cells": cells, "batch_size": batch_size, "model": sha, "data": source,
              "device": str(dev)}
    err = f" ± {stderr:.4f}" if stderr else ""
    bound = "" if vlb is None else f" (discrete-T bound {vlb:.4f}{err}, {bpd - vlb:+.4f})"
    check = f", verified at {decode_rate:.2f} images/s" if decode_rate else ""
    later = "" if n < 2 else f", later ones cost {coded.amortized_bits_per_dim:.4f} bits/dim"
    emit(as_json, record,
         f"udiff compress: wrote {'stdout' if out == '-' else out}: {n} images in {len(coded.blob)} bytes, "
         f"{bpd:.4f} bits/dim{bound} at T = {steps}; the first image borrowed "
         f"{record['first_item_extra_bits']} bits{later}; "
         f"{record['encode_items_per_second']:.2f} images/s on {dev}{check}")


def _decompress(model_path, source, out, device, as_json):
    from .. import artifacts
    from ..coding import decompress

    art, model, rec, info = _model(model_path)
    blob = artifacts.read_bytes(source, "a .udz file")
    dev = resolve_device(device)
    sha = art.meta.get("udiff.sha256", "")
    bar = _bar(None)
    images, header, seconds = decompress(model, blob, sha, device=dev, name=source,
                                         progress=bar.update if bar else None)
    if bar:
        bar.close()
    n = images.shape[0]
    meta = {"udiff.data": info, "udiff.compress": {"source": source, "model": sha, "bytes": len(blob),
                                                   "steps": header.settings.steps}}
    artifacts.save(out, {"images": images}, "samples", rec.to_json(), meta)
    bpd = 8.0 * len(blob) / (n * images[0].numel())
    emit(as_json, {"out": out, "n": n, "bytes": len(blob), "bits_per_dim": bpd, "decode_items_per_second": n / seconds,
                   "steps": header.settings.steps, "model": sha, "device": str(dev)},
         f"udiff compress -d: wrote {'stdout' if out == '-' else out}: {n} images ({len(blob)} bytes, {bpd:.4f} "
         f"bits/dim) decoded bit-exactly, {n / seconds:.2f} images/s on {dev}")
