"""`udiff eval-fid SAMPLES --ref REF`: FID (and KID, precision/recall) of images against reference statistics, and
the class accuracy of labelled samples."""

from __future__ import annotations

import click

from ..recipe import GRIDS, SAMPLERS
from .options import PATH, check_outputs, device_option, emit, json_option, resolve_device, set_option


@click.command("eval-fid", short_help="FID, KID, precision/recall and class accuracy of samples.")
@click.argument("samples_path", type=PATH, metavar="SAMPLES")
@click.option("--ref", "ref", type=PATH, metavar="REF",
              help="Reference: a data source (e.g. fashion-mnist:test) or a stats artifact written by --save-ref "
                   "(needed by fid, kid and prc).")
@click.option("--metrics", default="fid", show_default=True, metavar="LIST",
              help="Comma-separated metrics: fid, kid, prc (precision and recall), accuracy (the share of labelled "
                   "samples that a classifier extractor assigns to their label, overall and per class).")
@click.option("--extractor", default="inception", show_default=True, metavar="NAME",
              help="Feature extractor: inception (torch-fidelity's inception-v3-compat; needs --weights) or "
                   "classifier:PATH (a classifier artifact from udiff train).")
@click.option("--weights", type=PATH, metavar="PATH",
              help="Inception weights file, torch-fidelity's weights-inception-2015-12-05-6726825d.pth [default: "
                   "that file in torch's hub cache, if there]. Never downloaded.")
@click.option("--save-ref", type=PATH, metavar="STATS", help="Also write the reference statistics as a stats artifact.")
@click.option("-n", "--num", type=click.IntRange(min=1), metavar="N",
              help="Number of samples: drawn from a MODEL (seeds SEED..SEED+N-1), else the first N images.")
@click.option("--seeds", metavar="LIST", help="MODEL: seeds, e.g. 0-1999: sample k uses seed k.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="INT",
              help="MODEL: first seed when only -n is given.")
@click.option("--sampler", type=click.Choice(SAMPLERS), help="MODEL: sampler; overrides [sample] sampler.")
@click.option("--steps", type=click.IntRange(min=1), metavar="K", help="MODEL: steps; overrides [sample] steps.")
@click.option("--time-grid", type=click.Choice(GRIDS), help="MODEL: time grid; overrides [sample] grid.")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="B",
              help="MODEL: samples per batch; overrides [sample] batch_size.")
@click.option("--no-ema", is_flag=True, help="MODEL: use the raw weights instead of the EMA weights.")
@set_option
@device_option
@json_option
def command(samples_path, ref, metrics, extractor, weights, save_ref, num, seeds, seed, sampler, steps, time_grid,
            batch_size, no_ema, overrides, device, as_json):
    """Compare the images of SAMPLES with those of REF in the feature space of an extractor: the Fréchet
    distance (FID), and on request KID and precision/recall, computed by torch-fidelity's own code.

    SAMPLES is a samples artifact (udiff sample), a data source, or a model artifact with -n N: its samples
    are then drawn batch by batch as `udiff sample` would draw them (same seeds, same images) and no
    picture is written. REF is a data source or a stats artifact saved earlier with --save-ref: the same
    numbers, without reading the reference images again.

    The output records what was measured: the extractor and the SHA-256 of its weights, the feature layer,
    how images were fed to it, the SHA-256 of the reference statistics and of the sample images, the numbers
    of images and torch-fidelity's version. For 28x28 grey images, where Inception features say little, use
    the penultimate features of a classifier trained on the data (recipes/classifier-fashion-mnist.toml).

    --metrics accuracy judges class-conditional samples: the samples artifact of `udiff sample --class K` or
    `--labels LIST` holds each sample's label, and a classifier extractor (one that took no part in the
    sampling) says which class each image shows; no REF is needed for it alone.

    \b
    udiff eval-fid run/samples.safetensors --ref cifar10:cifar-10-python.tar.gz:train --weights inception.pth
    udiff eval-fid run/model.safetensors -n 10000 --ref fashion-mnist:test \\
        --extractor classifier:run/classifier.safetensors --save-ref run/fm-test.safetensors --json
    udiff eval-fid run/model.safetensors -n 10000 --ref run/fm-test.safetensors \\
        --extractor classifier:run/classifier.safetensors --metrics fid,kid,prc
    udiff sample run/model.safetensors -n 1000 -o - | udiff eval-fid - --ref run/fm-test.safetensors ...
    udiff eval-fid run/class7.safetensors --extractor classifier:run/classifier.safetensors --metrics accuracy
    """
    from .. import artifacts
    from .. import data as D
    from .. import fid
    from .models import progress

    if save_ref == "-" and as_json:
        raise click.UsageError("--json and --save-ref - both write to stdout; choose one")
    check_outputs(save_ref)
    wanted = [m.strip() for m in metrics.split(",") if m.strip()]
    bad = [m for m in wanted if m not in fid.METRICS]
    if bad or not wanted:
        raise click.UsageError(f"--metrics {metrics}: {'unknown metric ' + repr(bad[0]) if bad else 'empty'} "
                               f"(allowed: {', '.join(fid.METRICS)})")
    if ref is None and set(wanted) & set(fid.REF_METRICS):
        raise click.UsageError(f"--metrics {metrics}: fid, kid and prc compare with a reference; give --ref REF (a "
                               "data source or a stats artifact)")
    if save_ref and (ref is None or not set(wanted) & set(fid.REF_METRICS)):
        raise click.UsageError("--save-ref: saves the reference statistics that fid, kid and prc use; give --ref REF "
                               "and one of those metrics")
    art = None if D.is_source(samples_path) else artifacts.load(samples_path, ("samples", "model", "checkpoint"))
    is_model = art is not None and art.kind in ("model", "checkpoint")
    sampling = {"--seeds": seeds, "--sampler": sampler, "--steps": steps, "--time-grid": time_grid,
                "--batch-size": batch_size, "--no-ema": no_ema or None, "--set": overrides or None}
    given = [k for k, v in sampling.items() if v is not None]
    if given and not is_model:
        raise click.UsageError(f"{given[0]}: applies when SAMPLES is a model artifact; {samples_path} is not one")
    ext = fid.extractor(extractor, weights)
    dev = resolve_device(device)
    from .. import distributed

    world = distributed.world()  # under torchrun the ranks share the batches; rank 0 gathers and writes
    if not is_model:
        held = art.tensors if art is not None else vars(D.load(samples_path))
        images = fid.image_set(samples_path, held.get("images"), num, labels=held.get("labels"))
        result = fid.evaluate(images, ref, ext, wanted, dev, world)
    else:
        seed_list = _seeds(samples_path, num, seeds, seed)
        with progress(len(seed_list), "sample") as update:
            samples = _model_samples(samples_path, seed_list, sampler, steps, time_grid, batch_size, no_ema,
                                     overrides, device, update and (lambda k: update(k * world.size)))
            result = fid.evaluate(samples, ref, ext, wanted, dev, world)
    if result is None:  # a rank other than 0
        return
    if save_ref:  # features too when they will be needed: KID or precision/recall asked (or already in REF)
        keep = bool({"kid", "prc"} & set(wanted)) if D.is_source(ref) else result.ref.feats is not None
        fid.save_stats(save_ref, result.ref, result.ref_desc, with_features=keep, result=result.record)
    emit(as_json, result.record, _human(result.record), result=True)


def _seeds(path, num, seeds, seed) -> list[int]:
    from ..rng import parse_seeds

    seed_list = parse_seeds(seeds) if seeds else None
    if seed_list is not None and num is not None and num != len(seed_list):
        raise click.UsageError(f"-n {num} disagrees with --seeds ({len(seed_list)} seeds); give one of them")
    if seed_list is None:
        if num is None:
            raise click.UsageError(f"{path} is a model: give -n N (how many samples to draw) or --seeds LIST")
        seed_list = list(range(seed, seed + num))
    return seed_list


def _model_samples(path, seed_list, sampler, steps, time_grid, batch_size, no_ema, overrides, device, update):
    """SAMPLES is a model: its draws as `udiff sample` makes them, at its recipe's [sample] and these flags."""
    from .. import fid
    from ..errors import DataError
    from ..samplers import generate
    from .models import autocast, load_for_sampling

    run = load_for_sampling(path, overrides, sampler=sampler, steps=steps, time_grid=time_grid,
                            batch_size=batch_size, no_ema=no_ema, device=device)
    if not run.image8 or len(run.info["shape"]) != 3:
        raise DataError(f"{path}: a model of {run.info.get('kind')} data of shape {tuple(run.info['shape'])}; FID "
                        "and its kin compare 8-bit images")
    batch = run.recipe.sample.batch_size

    def draw(chunk):
        return generate(run.model, chunk, run.plan, batch_size=batch, device=run.device,
                        autocast=autocast(run.device))

    made = {"ema": run.ema, "model": run.artifact.meta.get("udiff.sha256")}
    return fid.drawn_image_set(path, run.info["shape"], seed_list, draw, batch, made, progress=update)


def _human(r: dict) -> str:
    extra = [f"KID {r['kid_mean']:.5f} ± {r['kid_std']:.5f}"] if "kid_mean" in r else []
    extra += [f"precision {r['precision']:.4f}, recall {r['recall']:.4f}"] if "precision" in r else []
    head = " ".join(([f"FID {r['fid']:.4f}"] if "fid" in r else []) + ([f"({', '.join(extra)})"] if extra else []))
    if "accuracy" in r:
        per = ", ".join("-" if a is None else f"{a:.2f}" for a in r["accuracy_per_class"])
        head = (head + "; " if head else "") + f"class accuracy {r['accuracy']:.4f} (per class {per})"
    how = r.get("sampling")
    made = f" ({how['sampler']}, {how['steps']} steps, {how['seconds']:.1f} s)" if how else ""
    against = (f" against {r['n_ref']} of {r['ref_source']}, {r['extractor']} features {r['feature_layer']} "
               f"({r['feature_dim']})" if "n_ref" in r else f" judged by {r['extractor']}")
    return (f"udiff eval-fid: {head}: {r['n_samples']} images of {r['samples']}{made}{against}, "
            f"{r['handling']}; {r['seconds']:.1f} s on {r['device']}")
