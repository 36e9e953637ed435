"""udiff against EDM on the same network shape, device and batch, measured side by side in one run.

    python bench/speed.py --edm /path/to/your/edm/checkout                    # on a GPU: DDPM++ at 32x32x3
    python bench/speed.py --edm /path/to/edm --preset small-28                # the 28x28x1 network
    python bench/speed.py --edm /path/to/edm --tiny --device cpu              # smoke test of this script

EDM's code is not part of udiff: give the path of your own clone of NVlabs/edm. Both sides build the
DDPM++ CIFAR-10 network (EDM: SongUNet through VPPrecond with train.py's --arch=ddpmpp settings; udiff:
the `ddpmpp` preset), both train the VP formulation on random 32×32×3 uint8 data kept on the device, and
both sample with 35 network evaluations (EDM: edm_sampler, 18 steps; udiff: heun, 17 steps + final
denoising step). Throughput excludes warm-up steps (their time is reported); udiff is measured on its
default path (on CUDA: torch.compile for training, eager sampling) and, on CUDA, also with the other
choice (eager training, compiled sampling). Prints one line per measurement, the peak GPU memory of each,
the ratios udiff / EDM, and a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

TINY = dict(channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(16,), dropout=0.13)
SHAPES = {"ddpmpp": (3, 32, 32), "small-28": (1, 28, 28)}


def _preset(name):
    from udiff.nets.unet import PRESETS

    return dict(PRESETS[name])


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_gib(dev):
    return torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None


@contextlib.contextmanager
def _edm_precision():
    """EDM's train.py turns TF32 off and cuDNN benchmarking on; restore udiff's defaults afterwards."""
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.benchmark) = old


def _edm_import_path(edm_path):
    if not os.path.isfile(os.path.join(edm_path, "training", "networks.py")):
        sys.exit(f"--edm {edm_path}: not an NVlabs/edm checkout (no training/networks.py)")
    if edm_path not in sys.path:
        sys.path.insert(0, edm_path)
    try:  # EDM's dnnlib imports requests for its downloads, which this benchmark never makes
        import requests  # noqa: F401
    except ImportError:
        import types

        sys.modules["requests"] = types.ModuleType("requests")


def edm_net(edm_path, cfg, fp16, dev, shape):
    _edm_import_path(edm_path)
    from training.networks import VPPrecond

    return VPPrecond(img_resolution=shape[-1], img_channels=shape[0], use_fp16=fp16, model_type="SongUNet",
                     embedding_type="positional", encoder_type="standard", decoder_type="standard",
                     channel_mult_noise=1, resample_filter=[1, 1], model_channels=cfg["channels"],
                     channel_mult=list(cfg["channel_mult"]), num_blocks=cfg["num_blocks"],
                     attn_resolutions=list(cfg["attn_resolutions"]), dropout=cfg["dropout"]).to(dev)


def edm_train(edm_path, cfg, fp16, images, batch, steps, warm, dev):
    """EDM's training step (training_loop.py): VPLoss, sum / batch, nan_to_num on grads, Adam, EMA lerp."""
    _edm_import_path(edm_path)
    from training.loss import VPLoss

    net = edm_net(edm_path, cfg, fp16, dev, tuple(images.shape[1:])).train().requires_grad_(True)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = VPLoss()
    g = torch.Generator(device=dev).manual_seed(0)
    with _edm_precision():
        for step in range(steps + warm):
            if step == warm:
                _sync(dev)
                t0 = time.perf_counter()
            idx = torch.randint(0, images.shape[0], (batch,), device=dev, generator=g)
            x = images[idx].to(torch.float32) / 127.5 - 1
            opt.zero_grad(set_to_none=True)
            loss_fn(net=net, images=x, labels=None).sum().mul(1.0 / batch).backward()
            for p in net.parameters():
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            opt.step()
            with torch.no_grad():
                for pe, pn in zip(ema.parameters(), net.parameters()):
                    pe.copy_(pn.detach().lerp(pe, 0.999))
        _sync(dev)
    return steps * batch / (time.perf_counter() - t0)


def edm_sample(edm_path, cfg, fp16, n, dev, shape):
    _edm_import_path(edm_path)
    from generate import edm_sampler

    net = edm_net(edm_path, cfg, fp16, dev, shape).eval()
    latents = torch.randn((n,) + tuple(shape), device=dev)
    with _edm_precision(), torch.no_grad():
        edm_sampler(net, latents[:2], num_steps=2)  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        edm_sampler(net, latents, num_steps=18)
        _sync(dev)
    return n / (time.perf_counter() - t0)


def udiff_recipe(cfg, batch, steps, compile_net):
    from udiff import recipe as R

    sets = [f"net.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in cfg.items()]
    sets += [f"train.batch_size={batch}", f"train.steps={steps}", "train.checkpoint_every=0", "train.lr=1e-3",
             "train.warmup=0"]
    if compile_net is not None:  # None: udiff's default (compiled on CUDA)
        sets.append(f"train.compile={str(compile_net).lower()}")
    return R.loads('[data]\nsource = "tensors:bench"\n[schedule]\nkind = "vp-linear"\n[net]\nkind = "unet"\n',
                   sets)


def udiff_train(cfg, images, batch, steps, warm, dev, compile_net):
    """udiff's trainer as `udiff train` runs it: (img/s in steady state, warm-up seconds)."""
    from udiff.build import build_model
    from udiff.data import Dataset
    from udiff.train import WARM_STEPS, train

    assert warm == WARM_STEPS
    ds = Dataset("tensors:bench", images=images.cpu())
    rec = udiff_recipe(cfg, batch, steps + warm, compile_net)
    model = build_model(rec, ds.info())
    result = train(model, ds, rec, device=dev, out_path="-", data_info={})
    return result.images_per_second, result.warmup_seconds


def udiff_sample(cfg, n, dev, compile_net, shape):
    """udiff's sampler as `udiff sample` runs it (bf16 autocast on CUDA, inference mode), heun 35 NFE:
    (img/s after a warm-up batch of the same size, warm-up seconds)."""
    from udiff.build import build_model
    from udiff.samplers import Plan, generate

    rec = udiff_recipe(cfg, 1, 1, compile_net)
    model = build_model(rec, {"shape": list(shape)}).prepare(dev, compile_net=bool(compile_net)).eval()
    ac = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    t0 = time.perf_counter()
    generate(model, range(n), Plan(sampler="heun", steps=2), batch_size=n, device=dev, autocast=ac)  # warm-up
    _sync(dev)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate(model, range(n), Plan(sampler="heun", steps=17), batch_size=n, device=dev, autocast=ac)
    _sync(dev)
    return n / (time.perf_counter() - t0), warm


def profile(cfg, images, batch, dev, shape, rows=25):
    """Where udiff's time goes: torch.profiler tables (by self device time on CUDA, else self CPU time) of
    eager training (12 steps) and of eager heun sampling at 35 NFE, batch as the training batch."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    udiff_train(cfg, images, batch, 2, 10, dev, False)  # cuDNN autotuning outside the profile
    for what, fn in (("train", lambda: udiff_train(cfg, images, batch, 2, 10, dev, False)),
                     ("sample", lambda: udiff_sample(cfg, batch, dev, False, shape))):
        with torch_profile(activities=acts) as prof:
            fn()
        print(f"== profile: udiff {what}, eager", flush=True)
        print(prof.key_averages().table(sort_by=key, row_limit=rows), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edm", help="path of a local NVlabs/edm checkout (omit to time udiff alone)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="ddpmpp", choices=tuple(SHAPES), help="network and image shape")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50, help="timed training steps (after 10 warm-up steps)")
    ap.add_argument("--sample-batch", type=int, default=128)
    ap.add_argument("--tiny", action="store_true", help="a tiny network, to check this script on a CPU")
    ap.add_argument("--profile", action="store_true",
                    help="only profile udiff's eager training and sampling (torch.profiler tables), no timings")
    args = ap.parse_args()
    dev = torch.device(args.device)
    shape = SHAPES[args.preset]
    cfg = dict(TINY, attn_resolutions=(shape[-1] // 2,)) if args.tiny else _preset(args.preset)
    warm = 10
    images = torch.randint(0, 256, (max(4096, args.batch * 4),) + shape, dtype=torch.uint8, device=dev)
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "batch": args.batch,
           "sample_batch": args.sample_batch, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "net": "tiny" if args.tiny else args.preset, "shape": list(shape)}
    cuda = dev.type == "cuda"
    if args.profile:
        return profile(cfg, images, args.batch, dev, shape)

    def report(key, value, unit="img/s"):
        res[key] = round(value, 3)
        print(f"{key:<34s} {value:10.2f} {unit}", flush=True)

    def measure(key, fn):
        _reset_peak(dev)
        out = fn()
        rate, warm_s = out if isinstance(out, tuple) else (out, None)
        report(key, rate)
        if warm_s is not None:
            report(key + "_warmup_s", warm_s, "s")
        if cuda:
            report(key + "_peak_gib", _peak_gib(dev), "GiB")

    # udiff's default path first; on CUDA the other compile choice too
    measure("udiff_train", lambda: udiff_train(cfg, images, args.batch, args.steps, warm, dev, None))
    if cuda:
        measure("udiff_train_eager", lambda: udiff_train(cfg, images, args.batch, args.steps, warm, dev, False))
    if args.edm:
        measure("edm_train_fp32", lambda: edm_train(args.edm, cfg, False, images, args.batch, args.steps, warm, dev))
        if cuda:
            measure("edm_train_fp16", lambda: edm_train(args.edm, cfg, True, images, args.batch, args.steps, warm,
                                                        dev))
    measure("udiff_sample_35nfe", lambda: udiff_sample(cfg, args.sample_batch, dev, False, shape))
    if cuda:
        measure("udiff_sample_35nfe_compiled", lambda: udiff_sample(cfg, args.sample_batch, dev, True, shape))
    if args.edm:
        measure("edm_sample_35nfe_fp32", lambda: edm_sample(args.edm, cfg, False, args.sample_batch, dev, shape))
        if cuda:
            measure("edm_sample_35nfe_fp16", lambda: edm_sample(args.edm, cfg, True, args.sample_batch, dev, shape))
        for what in ("train", "sample_35nfe"):
            for variant in ("", "_eager", "_compiled"):
                ours = res.get(f"udiff_{what}{variant}")
                for prec in ("fp32", "fp16"):
                    theirs = res.get(f"edm_{what}_{prec}")
                    if ours is not None and theirs:
                        report(f"ratio_{what}{variant}_vs_edm_{prec}", ours / theirs, "x")
    print(json.dumps(res, sort_keys=True))


if __name__ == "__main__":
    main()
