"""`udiff check RECIPE`: how accurate the recipe's sampler and schedule are, on the exact Gaussian denoiser."""

from __future__ import annotations

import click

from ..registry import GRIDS, SAMPLERS
from .options import RECIPE_PATH, device_option, emit, json_option, set_option


@click.command("check", short_help="Measure a recipe's sampler and schedule on its data's exact Gaussian denoiser.")
@click.argument("recipe_path", type=RECIPE_PATH, metavar="RECIPE")
@click.option("--sampler", type=click.Choice(SAMPLERS.names()), help="Sampler; overrides [sample] sampler.")
@click.option("--steps", type=click.IntRange(min=1), metavar="K", help="Steps; overrides [sample] steps.")
@click.option("--time-grid", type=click.Choice(GRIDS.names()), help="Time grid; overrides [sample] grid.")
@click.option("-n", "--num", type=click.IntRange(min=2), default=4000, show_default=True, metavar="N",
              help="Samples drawn (seeds SEED .. SEED+N-1); the Monte-Carlo floor of the errors falls like 1/sqrt(N).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="INT", help="First seed.")
@click.option("--nll-items", type=click.IntRange(min=0), default=512, show_default=True, metavar="M",
              help="Data items the bound is computed over (0 = all).")
@click.option("--max-dims", type=click.IntRange(min=1), default=1024, show_default=True, metavar="D",
              help="Refuse data of more dimensions (the exact denoiser factors a D×D matrix per step).")
@click.option("--data", "data_source", metavar="SOURCE", help="Data source; overrides [data] source.")
@set_option
@device_option
@json_option
def command(recipe_path, sampler, steps, time_grid, num, seed, nll_items, max_dims, data_source, overrides, device,
            as_json):
    """Before training: fit the recipe's data by a Gaussian (mean and covariance in its basis), build the exact
    denoiser for the recipe's process, schedule and basis, and report

    \b
    - what the sampler's discretization costs: the relative errors of the mean (|mean - m| / sqrt(tr C)) and
      covariance (Frobenius) of N samples against the fitted Gaussian, beside those of N exact draws (the
      Monte-Carlo floor; errors well above it are the sampler's);
    - what the schedule's endpoints cost in the bound: the variational bound of the exact model (its prior,
      reconstruction and diffusion terms); the exact denoiser makes the diffusion term exact, so the ends cost
      the prior and reconstruction terms for 8-bit images (both vanish for ideal ends), and the bound's excess
      over the Gaussian's exact NLL of the same items for float data.

    Seconds on a CPU for 8×8 and 28×28 images: try samplers, steps and grids before a day of training.

    \b
    udiff check @digits
    udiff check @digits --sampler ddim --steps 20 --json
    udiff check recipes/gud-haar-fashion.toml --sampler heun --steps 35
    """
    import dataclasses

    from .. import data as D
    from .. import recipe as R
    from ..check import check
    from ..samplers import Plan
    from .models import progress
    from .options import override, resolve_device

    extra = list(overrides) + ([override("data", "source", data_source)] if data_source else [])
    for key, val in (("sampler", sampler), ("steps", steps), ("grid", time_grid)):
        if val is not None:
            extra.append(override("sample", key, val))
    rec = R.load(recipe_path, extra)
    if isinstance(rec.net, (R.ClassifierSpec, R.NoisyClassifierSpec)):
        raise click.UsageError(f"{recipe_path}: a classifier recipe has no sampler to check")
    ds = D.load(rec.data.source, rec.data.limit)
    plan = Plan.from_spec(rec.sample)
    if sampler is not None and steps is None and sampler != R.load(recipe_path, overrides).sample.sampler:
        # a sampler given here takes its own default steps and grid (the recipe's belong to the recipe's sampler)
        plan = dataclasses.replace(plan, steps=None, grid=time_grid)
    dev = resolve_device(device)
    with progress(num, "sample", "udiff check") as update:
        result = check(rec, ds, plan, n=num, seed=seed, nll_items=nll_items, max_dims=max_dims, device=dev,
                       progress=update)
    r = result.as_dict()
    s, e, f, b = r["sampler"], r["errors"], r["floor"], r["bound"]
    terms = ", ".join(f"{k} {b[k]:.4f}" for k in ("prior", "recon", "diffusion") if k in b)
    if r["endpoint_cost"] is None:
        ref = "; the fitted covariance is singular: no exact NLL to compare with"
    elif r["reference_nll"] is None:
        share = 100 * r["endpoint_cost"] / b["value"]
        ref = f"; the ends cost {r['endpoint_cost']:.4f} {r['units']} (prior + recon, {share:.2f}% of the bound)"
    else:
        ref = (f"; the Gaussian's exact NLL {r['reference_nll']:.4f}, so the ends cost {r['endpoint_cost']:+.4f} "
               f"{r['units']}")
    emit(as_json, {"recipe": recipe_path, **r},
         f"udiff check: {s['sampler']} {s['steps']} steps ({s['nfe']} NFE) on the exact Gaussian of {rec.data.source} "
         f"(d = {r['dims']}): mean error {e['mean_error']:.4f}, covariance error {e['cov_error']:.4f} from {r['n']} "
         f"samples (exact draws: {f['mean_error']:.4f}, {f['cov_error']:.4f}). Bound {b['value']:.4f} {r['units']} "
         f"over {b['items']} items ({terms}){ref}", result=True)
