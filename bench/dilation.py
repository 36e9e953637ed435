"""Dilation path against its baselines at equal budgets, on the built-in target recipes.

    python bench/dilation.py                          # every recipes/dilation-*.toml, 10,000 samples each, CPU
    python bench/dilation.py -n 2000 --steps 300 --set sample.levels=30    # quicker
    python bench/dilation.py --device cuda --json     # one JSON object per (target, sampler)

For each recipe it runs the recipe's [sample] settings with every sampler (dilation-smc, dilation, ula, mala,
convolution-mc) on the same seeds and the same budget of target-gradient evaluations per sample, then prints a
markdown table of the metrics against exact samples: max mode-weight error (mixtures), MMD (RBF, median
heuristic), sliced W2, the error of log Z against the target's exact value with the sampler's standard error
(dilation-smc), evaluations per sample, MALA acceptance, diverged samples, and seconds per 10,000 samples. This
is what `udiff sample RECIPE --compare` does for one recipe.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from udiff import dilation as D  # noqa: E402
from udiff import metrics as M  # noqa: E402
from udiff import recipe as R  # noqa: E402
from udiff.build import build_target  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", help="target recipes [default: recipes/dilation-*.toml]")
    ap.add_argument("-n", type=int, default=10000, help="samples per run (seeds 0..n-1)")
    ap.add_argument("--steps", type=int, help="override [sample] steps (evaluations per sample)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a recipe key of every recipe, as udiff's --set")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = args.recipes or sorted(glob.glob(os.path.join(ROOT, "recipes", "dilation-*.toml")))
    rows = []
    for path in paths:
        extra = args.overrides + ([f"sample.steps={args.steps}"] if args.steps else [])
        rec = R.load(path, extra, target=True)
        target = build_target(rec.target, args.device)
        settings = {k: v for k, v in rec.to_dict()["sample"].items() if k not in ("sampler", "batch_size")}
        runs = []
        for sampler in R.TARGET_SAMPLERS:
            t0 = time.perf_counter()
            x, used = D.generate(target.log_prob, target.dim, range(args.n), sampler, device=args.device, **settings)
            runs.append((sampler, x, used, time.perf_counter() - t0))
        for sampler, x, used, seconds in runs:  # metrics on the CPU once every sampler has run
            row = {"target": os.path.basename(path).removesuffix(".toml").removeprefix("dilation-"),
                   "kind": rec.target.kind, "dim": target.dim, "sampler": sampler, **used,
                   "seconds": round(seconds, 1), "seconds_per_10k": round(seconds * 1e4 / args.n, 1),
                   **M.evaluate(target, x), **M.log_z_error(target, used)}
            rows.append(row)
            if args.json:
                print(json.dumps(row, sort_keys=True), flush=True)
        target.to(args.device)
    if not args.json:
        print(table(rows, args.n))


def table(rows, n) -> str:
    def num(r, key, fmt):
        if key not in r:
            return "–"
        return format(r[key], fmt) if abs(r[key]) < 1e6 else "> 1e6"  # a few exploded chains dominate

    out = [f"{n} samples per run; budget = target-gradient evaluations per sample, the same for every sampler.", "",
           "| target | d | sampler | evals | mode-weight err | MMD | SW2 | log Z err ± se | accept | diverged "
           "| s / 10k |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        logz = f"{r['log_z_error']:+.3f} ± {r['log_z_stderr']:.3f}" if "log_z_error" in r else "–"
        out.append(f"| {r['target']} | {r['dim']} | {r['sampler']} | {r['evals']} "
                   f"| {num(r, 'mode_weight_error', '.3f')} | {num(r, 'mmd', '.4f')} | {num(r, 'sw2', '.3f')} "
                   f"| {logz} | {num(r, 'acceptance', '.2f')} "
                   f"| {r.get('nonfinite', 0)} | {r['seconds_per_10k']} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
