"""Pictures: a grid of uint8 images written as PNG; images and masks read from files for inpainting."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from .data import IMAGE_EXTS  # the suffixes read as images, one list for data sources and inpaint


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


MIN_PIXELS = 256  # a picture at the automatic scale is at least this many pixels on its longer side


def auto_scale(height: int, width: int, least: int = MIN_PIXELS) -> int:
    """The least integer enlargement (1 to 16) that makes a height × width picture `least` pixels on its longer side."""
    return max(1, min(16, math.ceil(least / max(height, width, 1))))


def save_png(path: str, array: np.ndarray, scale: int | None = 1) -> None:
    """Write an (H, W, C) uint8 array as PNG (grayscale for C = 1), enlarged by `scale` (None: auto_scale)."""
    from PIL import Image

    if scale is None:
        scale = auto_scale(*array.shape[:2])
    if scale > 1:
        array = array.repeat(scale, axis=0).repeat(scale, axis=1)
    img = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    img.save(path, format="PNG")




def open_image(path: str, what: str):
    """PIL's image of a file, with one-line errors for an unreadable file or one that is no image."""
    from PIL import Image, UnidentifiedImageError

    from .errors import DataError

    try:
        im = Image.open(path)
        im.load()
    except UnidentifiedImageError:
        raise DataError(f"{what} {path}: not an image PIL can read (PNG, JPEG, BMP, WebP); give an image "
                        "file") from None
    except PermissionError:
        raise DataError(f"{what} {path}: permission denied; make the file readable") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path}: is a directory, expected an image file") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupted image data
        raise DataError(f"{what} {path}: a broken image ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        "give an intact image file") from None
    return im


def read_items(image: str, shape, image8: bool):
    """IMAGE → float items in model units, (N, *shape); the model's kind of data decides the encoding."""
    import torch

    from . import data as D
    from .errors import DataError

    if image.lower().endswith(IMAGE_EXTS):
        if not os.path.isfile(image):
            raise DataError(f"{image}: no such image file")
        if len(shape) != 3:
            raise DataError(f"{image}: the model makes vectors of shape {tuple(shape)}, not images")
        c, h, w = shape
        with open_image(image, "IMAGE") as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                raise DataError(f"{image}: is {im.size[0]}×{im.size[1]}, the model makes {w}×{h} images; resize it")
            import numpy as np

            arr = np.asarray(im)
        t = torch.from_numpy(arr.copy()).reshape(1, h, w, c).permute(0, 3, 1, 2).contiguous()
        return D.to_unit(t), True
    source = f"tensors:{image}" if image.endswith(".safetensors") else image
    ds = D.load(source)
    if tuple(ds.shape) != tuple(shape):
        raise DataError(f"{image}: items have shape {tuple(ds.shape)}, the model's are {tuple(shape)}")
    if ds.is_image8 != image8:
        raise DataError(f"{image}: {'8-bit images' if ds.is_image8 else 'float data'}, but the model was trained "
                        f"on {'8-bit images' if image8 else 'float data'}")
    return ds.unit(), ds.is_image8


def read_mask(spec: str, shape):
    """MASK → bool tensor of the item shape, True where known."""
    import torch
    from safetensors.torch import load_file

    from .errors import DataError
    from .inpaint import named_mask
    from .registry import MASKS

    if spec in MASKS:
        return named_mask(spec, shape)
    if not os.path.isfile(spec):
        raise DataError(f"--mask {spec}: no such file and not a named mask ({', '.join(MASKS.names())})")
    if spec.lower().endswith(IMAGE_EXTS):
        import numpy as np

        with open_image(spec, "--mask") as im:
            arr = np.asarray(im.convert("L")) > 127
        m = torch.from_numpy(arr.copy())
    else:
        try:
            m = load_file(spec).get("mask")
        except Exception as e:
            raise DataError(f"--mask {spec}: cannot read safetensors ({str(e).splitlines()[0]})") from None
        if m is None:
            raise DataError(f"--mask {spec}: no key 'mask' (bool or uint8, the shape of one item)")
        m = m != 0
    if len(shape) == 3 and m.shape == shape[1:]:
        m = m.unsqueeze(0).expand(shape).clone()
    if tuple(m.shape) != tuple(shape):
        raise DataError(f"--mask {spec}: shape {tuple(m.shape)} does not match the items' {tuple(shape)}")
    if bool(m.all()):
        raise DataError(f"--mask {spec}: everything is known; nothing to inpaint (white = known)")
    return m
