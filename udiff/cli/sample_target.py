"""`udiff sample RECIPE -n N -o SAMPLES` for a target recipe: parse, call dilation/metrics, write. No math here."""

from __future__ import annotations

import os

import click

from .options import emit, override, resolve_device, stderr_is_terminal


def looks_like_recipe(path: str) -> bool:
    """Only a .toml path (or a shipped recipe's @NAME) is read as a recipe: a target recipe may run code
    ([target] kind = "python"), so a file named like an artifact never is. A TOML file with [target] under another
    name is refused with a hint."""
    from ..recipe import is_shipped_name

    if path.endswith(".toml") or is_shipped_name(path):
        return True
    if path == "-" or path.endswith(".safetensors") or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
    except OSError:
        return False
    if len(head) > 8 and head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        return False
    from .. import recipe as R
    from ..errors import UdiffError

    try:
        is_target = "target" in R.tomllib.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, R.tomllib.TOMLDecodeError):
        return False
    if is_target:
        raise UdiffError(f"{path}: a target recipe must be named *.toml to be read as one (a [target] recipe can "
                         "run Python code); rename it")
    return False


def sample_target(recipe_path, seed_list, *, sampler, steps, time_grid, out, grid_png, batch_size, no_ema,
                  basis_path, compare, overrides, device, as_json):
    """Sample the recipe's target with its [sample] sampler (and, with --compare, every other sampler)."""
    from .. import recipe as R

    for flag, given in (("--time-grid", time_grid), ("--grid", grid_png), ("--no-ema", no_ema),
                        ("--basis", basis_path)):
        if given:
            raise click.UsageError(f"{flag} applies to model artifacts; {recipe_path} is a target recipe")
    if not out:
        raise click.UsageError("nothing to write: give -o SAMPLES")
    from ..artifacts import check_output

    check_output(out)
    if sampler is not None and sampler not in R.TARGET_SAMPLERS:
        raise click.UsageError(f"--sampler {sampler}: samples models; a target recipe takes "
                               f"{', '.join(R.TARGET_SAMPLERS)}")
    extra = list(overrides)
    for key, val in (("sampler", sampler), ("steps", steps), ("batch_size", batch_size)):
        if val is not None:
            extra.append(override("sample", key, val))
    rec = R.load(recipe_path, extra, target=True)
    dev = resolve_device(device)

    import dataclasses
    import sys
    import time

    import torch

    from .. import artifacts
    from .. import dilation as D
    from .. import metrics as M
    from ..build import build_target
    from ..errors import RecipeError

    try:
        target = build_target(rec.target, dev)
    except RecipeError as e:
        msg = str(e)
        raise RecipeError(msg if msg.startswith(recipe_path) else f"{recipe_path}: {msg}") from None
    s = rec.sample
    settings = {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name not in ("sampler", "batch_size")}
    names = [s.sampler] + ([n for n in R.TARGET_SAMPLERS if n != s.sampler] if compare else [])
    batches = -(-len(seed_list) // s.batch_size)
    runs = []
    for name in names:
        bar = None
        if stderr_is_terminal():
            from tqdm import tqdm

            bar = tqdm(total=D.iterations(name, **settings) * batches, unit="step", desc=name, file=sys.stderr,
                       dynamic_ncols=True)
        t0 = time.perf_counter()
        x, used = D.generate(target.log_prob, target.dim, seed_list, name, batch_size=s.batch_size, device=dev,
                             progress=bar.update if bar else None, **settings)
        seconds = time.perf_counter() - t0
        if bar:
            bar.close()
        runs.append((name, x, used, seconds))
    results = []
    for name, x, used, seconds in runs:
        results.append({"sampler": name, **used, "evals_total": used["evals"] * len(seed_list),
                        "seconds": round(seconds, 3), **M.evaluate(target, x), **M.log_z_error(target, used)})
    bad = int((~torch.isfinite(runs[0][1])).any(1).sum())
    if bad:
        from ..errors import NonFiniteResult

        raise NonFiniteResult(f"{recipe_path}: {bad} of {len(seed_list)} samples of {s.sampler} diverged (NaN or "
                              "Inf); lower [sample] step_size, set mala = true or raise steps; nothing was written")
    tensors = {"x": runs[0][1], "seeds": torch.tensor(seed_list, dtype=torch.int64)}
    meta = {"udiff.samples": {**results[0], "n": len(seed_list), "device": str(dev), "compare": results[1:]},
            "udiff.target": target.info()}
    artifacts.save(out, tensors, "samples", rec.to_json(), meta)
    for i, r in enumerate(results):
        record = {"out": out if i == 0 else None, "n": len(seed_list), "target": rec.target.kind,
                  "dim": target.dim, "device": str(dev), **r}
        emit(as_json, record, _human(record, out if i == 0 else None))


def _human(r: dict, out) -> str:
    head = f"udiff sample: wrote {out}:" if out else "udiff sample: compared:"
    text = (f"{head} {r['n']} samples of {r['target']} (d={r['dim']}), {r['sampler']}, {r['evals']} target "
            f"evaluations per sample, {r['seconds']:.1f} s on {r['device']}")
    parts = []
    if "log_z" in r:
        exact = f" (exact {r['log_z_exact']:.4g})" if "log_z_exact" in r else ""
        parts.append(f"log Z {r['log_z']:.4f} ± {r['log_z_stderr']:.4f}{exact} from {r['populations']} "
                     f"populations, {r['levels']} levels, {r['resamples']} resamplings")
    if "mode_weight_error" in r:
        parts.append(f"mode-weight error {r['mode_weight_error']:.3f}")
    if "mmd" in r:
        parts.append(f"MMD {r['mmd']:.4f}")
    if "sw2" in r:
        parts.append(f"SW2 {r['sw2']:.3f}")
    if "acceptance" in r:
        parts.append(f"acceptance {r['acceptance']:.2f}")
    if r.get("contraction"):
        parts.append(f"contraction {r['contraction']:.3g} at the start")
    if r.get("nonfinite"):
        parts.append(f"{r['nonfinite']} diverged")
    return text + ("; " + ", ".join(parts) if parts else "")
