"""Bits-back compression: the latent grid's trade-off, and the baselines (docs/compression.md).

    python bench/compression.py MODEL --data fashion-mnist:test --limit 256 --configs 1:8,2:8,2:8:off,4:8,4:16,8:8
    python bench/compression.py MODEL --data fashion-mnist:test --limit 2000 --baselines

For every setting it codes the same images (nothing is written), and prints a markdown table: the file's
bits/dim, the stack's net growth (the realized bound), the bits the first image borrowed, what the later
images cost, and the file's excess over the discrete-T bound of the same images estimated as `udiff eval-nll
--steps T --repeats K` does. --baselines adds PNG (Pillow, optimize=True, one file per image) and xz -9
(Python's lzma, preset 9, the .xz container) on the raw bytes of all images.
"""

from __future__ import annotations

import argparse
import io
import lzma
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from udiff import artifacts  # noqa: E402
from udiff import data as D  # noqa: E402
from udiff.build import model_from_artifact  # noqa: E402
from udiff.coding import Settings, compress  # noqa: E402
from udiff.likelihood import evaluate  # noqa: E402


def png_bits(images: torch.Tensor) -> int:
    from PIL import Image

    total = 0
    for im in images:
        arr = im.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG", optimize=True)
        total += 8 * len(buf.getvalue())
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data", default="fashion-mnist:test")
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--configs", default="2:8", help="comma-separated CELLS:WINDOW[:off] (off: no Sheppard "
                    "correction)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--vlb-repeats", type=int, default=100)
    ap.add_argument("--baselines", action="store_true")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    art = artifacts.load(a.model, ("model", "checkpoint"))
    model, _, _ = model_from_artifact(art)
    images = D.load(a.data, a.limit).images
    n, dims = images.shape[0], math.prod(images.shape[1:])
    per = n * dims
    t0 = time.perf_counter()
    est = evaluate(model, images, image8=True, steps=a.steps, repeats=a.vlb_repeats, device=a.device)
    print(f"discrete T = {a.steps} bound: {est.value:.4f} ± {est.stderr:.4f} bits/dim ({a.vlb_repeats} repeats, "
          f"{time.perf_counter() - t0:.0f} s); terms {est.terms}", flush=True)
    if a.baselines:
        print(f"PNG (optimize=True): {png_bits(images) / per:.4f} bits/dim; xz -9 on the raw bytes: "
              f"{8 * len(lzma.compress(images.numpy().tobytes(), preset=9)) / per:.4f} bits/dim", flush=True)
    print("| cells | window | Sheppard | file bits/dim | net bits/dim | first image borrowed (bits) | later images "
          "bits/dim | file − bound | encode img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for config in a.configs.split(","):
        cells, window, *rest = config.split(":")
        s = rest != ["off"]
        st = Settings(steps=a.steps, cells=int(cells), window=int(window), batch=a.batch_size, sheppard=s)
        c = compress(model, images, art.meta.get("udiff.sha256", ""), st, device=a.device)
        print(f"| {cells} | {window} | {'on' if s else 'off'} | {c.bits_per_dim:.4f} | {c.net_bits / per:.4f} | "
              f"{c.first_item_bits - c.first_item_net_bits} | {c.amortized_bits_per_dim:.4f} | "
              f"{c.bits_per_dim - est.value:+.4f} | {n / c.seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
