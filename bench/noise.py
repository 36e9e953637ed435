"""What the per-sample noise (udiff/rng.py NoiseSource) costs: one draw against torch.randn, eager and under
torch.compile, and its share of a sampling run (ancestral sampler: one draw per step).

    python bench/noise.py                      # CPU, 1 thread
    python bench/noise.py --device cuda --batch 512
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _time(fn, dev, reps):
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def main():
    from udiff import recipe as R
    from udiff.build import build_model
    from udiff.rng import NoiseSource
    from udiff.samplers import Plan, generate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=20, help="ancestral steps of the sampling run")
    ap.add_argument("--compile", action="store_true", help="also time NoiseSource.__call__ under torch.compile")
    args = ap.parse_args()
    dev = torch.device(args.device)
    shape = (1, 28, 28)
    src = NoiseSource(range(args.batch), device=dev)
    res = {"device": str(dev), "batch": args.batch, "shape": list(shape), "threads": torch.get_num_threads()}
    res["noise_ms"] = 1e3 * _time(lambda: src(7, shape), dev, args.reps)
    res["randn_ms"] = 1e3 * _time(lambda: torch.randn((args.batch,) + shape, device=dev), dev, args.reps)
    res["hash_ms"] = 1e3 * _time(lambda: src._bits(7, 784), dev, args.reps)
    if args.compile:  # the integer hash compiled into one kernel: the same bits
        bits = torch.compile(NoiseSource._bits, dynamic=False)
        t0 = time.perf_counter()
        res["hash_compiled_equal"] = bool(torch.equal(bits(src, 7, 784), src._bits(7, 784)))
        res["hash_compile_s"] = time.perf_counter() - t0
        res["hash_compiled_ms"] = 1e3 * _time(lambda: bits(src, 7, 784), dev, args.reps)
        # the whole draw compiled: log, sin and cos vectorised differ from eager in the last bit
        draw = torch.compile(NoiseSource.__call__, dynamic=False)
        res["noise_compiled_max_abs_diff"] = float((draw(src, 7, shape) - src(7, shape)).abs().max())
        res["noise_compiled_ms"] = 1e3 * _time(lambda: draw(src, 7, shape), dev, args.reps)
    # share of a sampling run: the small-28 network (shrunk on the CPU), ancestral sampler
    rec = R.loads('[data]\nsource = "tensors:bench"\n[schedule]\nkind = "vp-linear"\n[net]\nkind = "unet"\n'
                  'preset = "small-28"\n', ["net.channels=32", "net.num_blocks=1"] if dev.type == "cpu" else [])
    model = build_model(rec, {"shape": list(shape)}).prepare(dev).eval()
    plan = Plan(sampler="ancestral", steps=args.steps)
    generate(model, range(2), Plan(sampler="ancestral", steps=2), device=dev)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    generate(model, range(args.batch), plan, batch_size=args.batch, device=dev)
    prof.disable()
    res["sample_s"] = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    noise = [v for k, v in stats.stats.items() if k[2] == "__call__" and k[0].endswith("rng.py")]
    res["noise_s_in_sampling"] = sum(v[3] for v in noise)  # cumulative time of NoiseSource.__call__
    res["noise_share"] = res["noise_s_in_sampling"] / res["sample_s"]
    res = {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}
    print(json.dumps(res, sort_keys=True))


if __name__ == "__main__":
    main()
