"""Pictures of samples: a grid of uint8 images written as PNG."""

from __future__ import annotations

import math

import numpy as np
import torch


def grid(images: torch.Tensor, cols: int | None = None, pad: int = 1, background: int = 0) -> np.ndarray:
    """uint8 (N, C, H, W) → one uint8 (H', W', C) array with the images on a grid, row by row."""
    n, c, h, w = images.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), background, dtype=np.uint8)
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y:y + h, x:x + w] = arr[i]
    return out


def save_png(path: str, array: np.ndarray, scale: int = 1) -> None:
    """Write an (H, W, C) uint8 array as PNG (grayscale for C = 1), optionally enlarged by `scale`."""
    from PIL import Image

    if scale > 1:
        array = array.repeat(scale, axis=0).repeat(scale, axis=1)
    img = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    img.save(path, format="PNG")
