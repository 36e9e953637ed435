"""What the commands that run a trained model share: loading it with its sampling plan, the device's
autocast, a progress bar on stderr, and the samples artifact."""

from __future__ import annotations

import contextlib
import dataclasses
import sys

import click

from .options import override, resolve_device


def restrict_to_sample(overrides):
    """A trained model's sections other than [sample] are fixed: changing them would change the model."""
    from .. import recipe as R

    for item in overrides:
        section, _, _ = R.parse_override(item)
        if section != "sample":
            raise click.UsageError(f"--set {item}: only [sample] keys can be overridden; [{section}] is part of "
                                   "the trained model (retrain to change it)")


@dataclasses.dataclass
class Loaded:
    model: object
    recipe: object
    info: dict
    artifact: object
    plan: object
    device: object
    ema: bool

    @property
    def image8(self) -> bool:
        return self.info.get("kind") == "image8"


def load_for_sampling(model_path, overrides, *, sampler=None, steps=None, time_grid=None, batch_size=None,
                      no_ema=False, basis_path=None, device="auto") -> Loaded:
    """The model of a model artifact (or checkpoint) on its device, with the sampling plan of its recipe's
    [sample] and the flags. A sampler given on the command line takes its own default steps and grid
    unless they are given too (a recipe's step count belongs to the recipe's sampler)."""
    from .. import artifacts
    from ..build import model_from_artifact, recipe_of
    from ..samplers import Plan

    restrict_to_sample(overrides)
    extra = list(overrides)
    for key, val in (("sampler", sampler), ("steps", steps), ("grid", time_grid), ("batch_size", batch_size)):
        if val is not None:
            extra.append(override("sample", key, val))
    from .. import recipe as R

    art = artifacts.load(model_path, ("model", "checkpoint"))  # a checkpoint samples mid-training
    stored = recipe_of(art)
    use_ema = recipe_of(art, extra).sample.ema and not no_ema
    model, rec, info = model_from_artifact(art, extra, ema=use_ema)
    if basis_path:
        check_basis(model, basis_path, model_path)
    plan = Plan.from_spec(rec.sample)
    if rec.sample.sampler != stored.sample.sampler:  # the stored steps and grid were the stored sampler's
        given = {R.parse_override(item)[1] for item in extra}
        plan = dataclasses.replace(plan, steps=plan.steps if "steps" in given else None,
                                   grid=plan.grid if "grid" in given else None)
    dev = resolve_device(device)
    model.prepare(dev)
    return Loaded(model, rec, info, art, plan.resolve(model), dev, use_ema)


def autocast(dev):
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None


@contextlib.contextmanager
def progress(total: int, unit: str, what: str = "udiff", every: float = 30.0):
    """Progress on stderr: a tqdm bar when it is a terminal, else a plain line every `every` seconds (a log
    file or CI sees that a long run moves); nothing with --quiet, nor from ranks other than 0 under torchrun.
    Yields the update function, or None."""
    from . import options

    if options.QUIET or not options.is_main():
        yield None
        return
    if not sys.stderr.isatty():
        import time

        state = {"done": 0, "last": time.monotonic(), "t0": time.monotonic()}

        def update(n=1):
            state["done"] += n
            now = time.monotonic()
            if now - state["last"] >= every and state["done"] < total:
                state["last"] = now
                click.echo(f"{what}: {state['done']}/{total} {unit}s ({100 * state['done'] / max(total, 1):.0f}%), "
                           f"{now - state['t0']:.0f} s", err=True)

        yield update
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()


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


def sample_tensors(x, seeds, image8: bool) -> dict:
    """The tensors of a samples artifact: uint8 `images` for 8-bit image models, else float32 `x`; `seeds`."""
    import torch

    from ..data import to_uint8

    out = {"seeds": torch.tensor(list(seeds), dtype=torch.int64)}
    if image8:
        out["images"] = to_uint8(x)
    else:
        out["x"] = x.float()
    return out


def write_samples(out, tensors: dict, recipe_json: str, meta: dict, *, grid_png=None, grid_scale: int | None = None,
                  pictures=None):
    """The samples artifact at `out` ("-": stdout) and the picture at `grid_png`, both or neither: written under
    temporary names and renamed together. `pictures`: float images in [-1, 1] when the tensors hold no
    uint8 `images`."""
    from .. import artifacts

    with artifacts.Outputs() as outputs:
        if grid_png:
            from ..data import to_uint8
            from ..images import grid, save_png

            pics = tensors["images"] if pictures is None else to_uint8(pictures.clamp(-1, 1))
            save_png(outputs.stage(grid_png), grid(pics), scale=grid_scale)
        if out and out != "-":
            with open(outputs.stage(out), "wb") as fh:
                fh.write(artifacts.to_bytes(tensors, "samples", recipe_json, meta))
        outputs.commit()
    if out == "-":
        artifacts.save("-", tensors, "samples", recipe_json, meta)


def conditioning(run: Loaded, n: int, class_, labels, guidance, classifier_path, classifier_scale, model_path):
    """The guidance.Conditioning of --class/--labels/--guidance/--classifier for n items, or None without them."""
    import torch

    from ..guidance import Conditioning, read_labels

    if class_ is not None and labels is not None:
        raise click.UsageError("--class and --labels both say which classes to draw; give one")
    if class_ is None and labels is None:
        if guidance is not None or classifier_path:
            flag = "--guidance" if guidance is not None else "--classifier"
            raise click.UsageError(f"{flag}: guides towards a class; say which with --class K or --labels LIST")
        return None
    ys = [class_] * n if class_ is not None else read_labels(labels)
    if len(ys) != n:
        raise click.UsageError(f"--labels: {len(ys)} labels for {n} items; give one label per seed")
    classifier = load_classifier(classifier_path, run, model_path) if classifier_path else None
    cond = Conditioning(torch.tensor(ys, dtype=torch.long), 1.0 if guidance is None else guidance, classifier,
                        classifier_scale)
    cond.check(run.model)
    return cond


def load_classifier(path: str, run: Loaded, model_path: str):
    """A noisy-classifier artifact, on MODEL's device, refused unless it was trained on MODEL's basis, process and
    schedule (it must see the states MODEL's sampler makes)."""
    from .. import artifacts
    from ..build import model_from_artifact, section_changes
    from ..errors import ArtifactError

    art = artifacts.load(path, "noisy-classifier")
    net, rec, info = model_from_artifact(art)
    same = {"data": ("*",), "net": ("*",), "train": ("*",), "sample": ("*",)}
    diffs = section_changes(rec, run.recipe, same)
    if diffs or tuple(info["shape"]) != tuple(run.info["shape"]):
        what = diffs[0] if diffs else f"items of shape {tuple(info['shape'])}"
        raise ArtifactError(f"--classifier {path}: trained on other states than {model_path}'s ({what}); train it "
                            "with the model's [basis], [process] and [schedule]")
    net.source = f"{path} (sha256 {art.meta.get('udiff.sha256', '?')[:16]})"
    return net.prepare(run.device)
