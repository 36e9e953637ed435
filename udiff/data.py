"""Local data sources: every data set is read from disk, nothing is downloaded.

A source is a string, given in a recipe's [data] source or on the command line:

    digits                                  scikit-learn's bundled 8x8 digits (1797 images, 1 channel)
    fashion-mnist:train | :test             idx files of Debian's dataset-fashion-mnist (/usr/share/datasets)
    fashion-mnist:DIR:train | :test         the same files in DIR
    mnist:DIR:train | :test                 MNIST idx files in DIR (.gz or not)
    cifar10:TARBALL:train | :test           cifar-10-python.tar.gz or cifar-10-binary.tar.gz, as downloaded
    folder:DIR                              PNG/JPEG images of one size (grayscale if all are)
    tensors:FILE.safetensors                key `images` (uint8 N×C×H×W) or `x` (float, N×d or N×C×H×W)

Where a source has class labels they come along as int64 `labels` (N,): the digit of `digits`, the idx
label files beside MNIST/Fashion-MNIST images, CIFAR-10's labels, a `labels` key in a tensors file, and
for `folder:DIR` whose images all lie in sub-folders, the index of each image's sub-folder in sorted
order. Sources without them have labels = None.

8-bit images stay uint8 until a batch is drawn; `to_unit` maps them to the centres of 256 bins in
[-1, 1] as VDM does: x = (2k + 1)/256 - 1. Float data is used as it is.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tarfile
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass
class Dataset:
    """A whole data set in memory: `images` (uint8 N×C×H×W) for 8-bit data, else `x` (float32 N×...);
    `labels` (int64 N) where the source has classes."""

    source: str
    images: torch.Tensor | None = None
    x: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @property
    def is_image8(self) -> bool:
        return self.images is not None

    @property
    def tensor(self) -> torch.Tensor:
        return self.images if self.images is not None else self.x

    @property
    def shape(self) -> tuple[int, ...]:
        """The event shape of one item: (C, H, W) or (d,)."""
        return tuple(self.tensor.shape[1:])

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def info(self) -> dict:
        """What a model artifact records about its training data."""
        return {"source": self.source, "shape": list(self.shape), "n": len(self),
                "kind": "image8" if self.is_image8 else "float", "sha256": self.sha256()}

    def sha256(self) -> str:
        t = self.tensor.contiguous()
        return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()

    def unit(self, idx=None) -> torch.Tensor:
        """Items as float32 in model units ([-1, 1] bin centres for 8-bit images)."""
        t = self.tensor if idx is None else self.tensor[idx]
        return to_unit(t) if self.is_image8 else t.float()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 at the centres of the 256 bins of [-1, 1] (VDM's encoding)."""
    return images.to(torch.float32).mul_(2.0 / 256.0).add_(1.0 / 256.0 - 1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] → uint8 by the bin each value falls in (inverse of `to_unit` at centres)."""
    return ((x.float() + 1.0) * 128.0).floor_().clamp_(0, 255).to(torch.uint8)


def is_source(text: str) -> bool:
    """Whether `text` names a data source (rather than, say, an artifact path): its kind is one we read."""
    return isinstance(text, str) and text.partition(":")[0] in _READERS


def load(source: str, limit: int = 0) -> Dataset:
    """Read a data source string into memory (see the module docstring for the forms)."""
    if not isinstance(source, str) or not source:
        raise DataError("data source: empty; give e.g. digits or fashion-mnist:train")
    name, _, rest = source.partition(":")
    reader = _READERS.get(name)
    if reader is None:
        raise DataError(f"data source {source!r}: unknown kind {name!r} (allowed: {', '.join(_READERS)})")
    ds = reader(source, rest)
    if limit:
        ds = Dataset(source, *(None if t is None else t[:limit] for t in (ds.images, ds.x, ds.labels)))
    if len(ds) == 0:
        raise DataError(f"data source {source!r}: holds no items")
    return ds


def _split(source: str, rest: str, default_dir: str | None) -> tuple[str, str]:
    """'DIR:train' / 'train' → (DIR, split)."""
    path, _, split = rest.rpartition(":")
    if split not in ("train", "test"):
        raise DataError(f"data source {source!r}: end it with :train or :test")
    if not path:
        if default_dir is None:
            example = f"{source.split(':')[0]}:/data/mnist:{split}"
            raise DataError(f"data source {source!r}: give the directory, e.g. {example}")
        path = default_dir
    return path, split


def _read_digits(source: str, rest: str) -> Dataset:
    if rest:
        raise DataError(f"data source {source!r}: 'digits' takes no arguments")
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("data source 'digits' needs scikit-learn (pip install scikit-learn)") from None
    d = load_digits()
    # 17 grey levels 0..16 → 0..255.
    img = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return Dataset(source, images=torch.from_numpy(img), labels=torch.from_numpy(d.target).long())


def _idx(path: str) -> np.ndarray:
    """Read an idx file (MNIST format), gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read idx file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte idx file")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated idx file ({body.size} of {int(np.prod(dims))} bytes)")
    return body.reshape(dims)


def _find_idx(directory: str, stem: str, source: str, required: bool = True) -> str | None:
    for name in (stem, stem + ".gz"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    if not required:
        return None
    hint = (" (install the Debian package dataset-fashion-mnist, or give fashion-mnist:DIR:train)"
            if directory == FASHION_DIR else "")
    raise DataError(f"data source {source!r}: {os.path.join(directory, stem)}[.gz] not found{hint}")


def _read_mnist_like(default_dir):
    def read(source: str, rest: str) -> Dataset:
        directory, split = _split(source, rest, default_dir)
        if not os.path.isdir(directory):
            hint = (" (install the Debian package dataset-fashion-mnist, or give fashion-mnist:DIR:train)"
                    if directory == FASHION_DIR else "")
            raise DataError(f"data source {source!r}: directory {directory} not found{hint}")
        prefix = "train" if split == "train" else "t10k"
        arr = _idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte", source))
        if arr.ndim != 3:
            raise DataError(f"data source {source!r}: expected N×H×W images, got shape {arr.shape}")
        labels = _find_idx(directory, f"{prefix}-labels-idx1-ubyte", source, required=False)
        if labels is not None:
            labels = _idx(labels)
            if labels.shape != arr.shape[:1]:
                raise DataError(f"data source {source!r}: {len(labels)} labels for {len(arr)} images")
            labels = torch.from_numpy(labels.astype(np.int64))
        return Dataset(source, images=torch.from_numpy(arr.copy())[:, None], labels=labels)
    return read


def _cifar_block(raw: bytes) -> np.ndarray | None:
    """The 10000×3072 uint8 image block inside a CIFAR-10 python batch file, found by its length prefix.

    The batch files are pickles; rather than unpickle them, we find the one byte string of exactly
    10000·3072 bytes (opcode BINSTRING 'T' or BINBYTES 'B' with a 4-byte length, or BINBYTES8 with an
    8-byte one) and read it as bytes. Nothing in the file is executed.
    """
    n = 10000 * 3072
    for marker, width in ((b"T", 4), (b"B", 4), (b"\x8e", 8)):
        pos = raw.find(marker + n.to_bytes(width, "little"))
        if pos >= 0 and pos + 1 + width + n <= len(raw):
            start = pos + 1 + width
            return np.frombuffer(raw, dtype=np.uint8, count=n, offset=start).reshape(10000, 3, 32, 32)
    return None


def _cifar_labels(raw: bytes) -> list[int] | None:
    """The `labels` list of a CIFAR-10 python batch file, read from the pickle's opcodes without unpickling
    (pickletools only disassembles): the integers pushed between the key 'labels' and the next key."""
    import pickletools

    ops = pickletools.genops(raw)
    try:
        for op, arg, _ in ops:
            if "STRING" in op.name or "UNICODE" in op.name or "BYTES" in op.name:
                if arg in ("labels", b"labels"):
                    break
        else:
            return None
        out = []
        for op, arg, _ in ops:
            if op.name in ("BININT", "BININT1", "BININT2"):
                out.append(arg)
            elif op.name not in ("EMPTY_LIST", "MARK", "APPENDS", "APPEND", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                break
        return out
    except ValueError:  # a malformed pickle
        return None


def _read_cifar10(source: str, rest: str) -> Dataset:
    path, split = _split(source, rest, None)
    if not os.path.isfile(path):
        raise DataError(f"data source {source!r}: {path} not found (the user's own cifar-10-python.tar.gz)")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    chunks, labels = [], []
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            for name in names:
                if name in members:  # python version: a pickle, read without unpickling
                    raw = tar.extractfile(members[name]).read()
                    block = _cifar_block(raw)
                    if block is None:
                        raise DataError(f"data source {source!r}: {name} has no 10000×3072 image block")
                    chunks.append(block)
                    found = _cifar_labels(raw)
                    labels.append(np.array(found, dtype=np.int64) if found and len(found) == len(block) else None)
                elif name + ".bin" in members:  # binary version: label byte + 3072 pixel bytes per record
                    raw = np.frombuffer(tar.extractfile(members[name + ".bin"]).read(), dtype=np.uint8)
                    chunks.append(raw.reshape(-1, 3073)[:, 1:].reshape(-1, 3, 32, 32))
                    labels.append(raw.reshape(-1, 3073)[:, 0].astype(np.int64))
                else:
                    raise DataError(f"data source {source!r}: {path} has no {name}; expected the CIFAR-10 "
                                    "python or binary tarball")
    except (tarfile.TarError, OSError, ValueError) as e:
        raise DataError(f"data source {source!r}: cannot read {path} ({e})") from None
    labels = torch.from_numpy(np.concatenate(labels)) if all(x is not None for x in labels) else None
    return Dataset(source, images=torch.from_numpy(np.concatenate(chunks)), labels=labels)


def _read_folder(source: str, rest: str) -> Dataset:
    from PIL import Image

    if not os.path.isdir(rest):
        raise DataError(f"data source {source!r}: directory {rest!r} not found")
    files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(rest) for f in fs
                   if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise DataError(f"data source {source!r}: no PNG/JPEG images under {rest}")
    imgs = []
    for f in files:
        try:
            with Image.open(f) as im:
                imgs.append(im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy())
        except OSError as e:
            raise DataError(f"{f}: cannot read image ({e})") from None
    gray = all(im.mode == "L" for im in imgs)
    arrs = [np.asarray(im if gray else im.convert("RGB")) for im in imgs]
    if len({a.shape for a in arrs}) != 1:
        raise DataError(f"data source {source!r}: images differ in size ({arrs[0].shape} vs others); "
                        "resize them to one size first")
    arr = np.stack(arrs)
    arr = arr[:, None] if gray else arr.transpose(0, 3, 1, 2)
    # class sub-folders: every image in a sub-folder of DIR, labelled by the sub-folder's sorted index
    parts = [os.path.relpath(f, rest).split(os.sep) for f in files]
    classes = [p[0] if len(p) > 1 else None for p in parts]
    labels = None
    if None not in classes:
        index = {c: i for i, c in enumerate(sorted(set(classes)))}
        labels = torch.tensor([index[c] for c in classes], dtype=torch.int64)
    return Dataset(source, images=torch.from_numpy(np.ascontiguousarray(arr)), labels=labels)


def _read_tensors(source: str, rest: str) -> Dataset:
    from safetensors.torch import load_file

    if not os.path.isfile(rest):
        raise DataError(f"data source {source!r}: file {rest!r} not found")
    try:
        tensors = load_file(rest)
    except Exception as e:
        raise DataError(f"data source {source!r}: cannot read safetensors ({str(e).splitlines()[0]})") from None
    labels = tensors.get("labels")
    if labels is not None and (labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool
                               or labels.ndim != 1 or (labels < 0).any()):
        raise DataError(f"data source {source!r}: key 'labels' must be non-negative integers of shape (N,), got "
                        f"{str(labels.dtype).replace('torch.', '')} {tuple(labels.shape)}")
    labels = None if labels is None else labels.long()
    for key in ("images", "x"):
        if key in tensors and labels is not None and len(labels) != len(tensors[key]):
            raise DataError(f"data source {source!r}: {len(labels)} labels for {len(tensors[key])} items")
    if "images" in tensors:
        t = tensors["images"]
        if t.dtype != torch.uint8 or t.ndim != 4:
            raise DataError(f"data source {source!r}: key 'images' must be uint8 N×C×H×W, got "
                            f"{str(t.dtype).replace('torch.', '')} {tuple(t.shape)}")
        return Dataset(source, images=t.contiguous(), labels=labels)
    if "x" in tensors:
        t = tensors["x"]
        if not t.is_floating_point() or t.ndim not in (2, 4):
            raise DataError(f"data source {source!r}: key 'x' must be float N×d or N×C×H×W, got "
                            f"{str(t.dtype).replace('torch.', '')} {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise DataError(f"data source {source!r}: key 'x' holds NaN or infinite values")
        return Dataset(source, x=t.float().contiguous(), labels=labels)
    raise DataError(f"data source {source!r}: no key 'images' (uint8 N×C×H×W) or 'x' (float) in {rest}")


_READERS = {
    "digits": _read_digits,
    "fashion-mnist": _read_mnist_like(FASHION_DIR),
    "mnist": _read_mnist_like(None),
    "cifar10": _read_cifar10,
    "folder": _read_folder,
    "tensors": _read_tensors,
}
