"""Data sources: every reader on small synthetic files, and the bundled/installed sets."""

import gzip
import io
import os
import struct
import tarfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from udiff import data as D
from udiff.errors import DataError


def test_unit_encoding_is_vdms_bin_centres_and_inverts():
    k = torch.arange(256, dtype=torch.uint8)
    x = D.to_unit(k)
    assert x[0] == -1 + 1 / 256 and x[-1] == 1 - 1 / 256
    assert torch.equal(D.to_uint8(x), k)
    assert D.to_uint8(torch.tensor([-5.0, 5.0])).tolist() == [0, 255]


def test_digits():
    ds = D.load("digits")
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.images.max() == 255 and ds.info()["kind"] == "image8"
    assert len(D.load("digits", limit=10)) == 10
    from sklearn.datasets import load_digits

    assert torch.equal(ds.labels, torch.from_numpy(load_digits().target).long())
    assert D.load("digits", limit=10).labels.tolist() == ds.labels[:10].tolist()


@pytest.mark.skipif(not os.path.isdir(D.FASHION_DIR), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package():
    ds = D.load("fashion-mnist:test")
    assert ds.images.shape == (10000, 1, 28, 28)
    assert ds.labels.dtype == torch.int64 and torch.equal(ds.labels.bincount(), torch.full((10,), 1000))


def _idx(path, arr):
    head = bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(head + arr.astype(np.uint8).tobytes())


def test_mnist_idx_files(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (7, 28, 28))
    _idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    ds = D.load(f"mnist:{tmp_path}:train")
    assert torch.equal(ds.images[:, 0], torch.from_numpy(imgs.astype(np.uint8)))
    assert ds.labels is None  # no label file: images only
    labels = np.array([3, 1, 4, 1, 5, 9, 2])
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    assert D.load(f"mnist:{tmp_path}:train").labels.tolist() == labels.tolist()
    ds = D.load(f"fashion-mnist:{tmp_path}:train")
    assert len(ds) == 7
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        D.load(f"mnist:{tmp_path}:test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 5, 2, 2) + b"\x01")
    with pytest.raises(DataError, match="truncated"):
        D.load(f"mnist:{tmp_path}:test")


def _pickled_labels(labels) -> bytes:
    """A protocol-2 pickle's list of ints as CIFAR's batch files hold it: appends in groups of 1000."""
    out = b"U\x06labelsq\x03]q\x04"
    for i in range(0, len(labels), 1000):
        out += b"(" + b"".join(b"K" + bytes([int(v)]) for v in labels[i:i + 1000]) + b"e"
    return out


def _cifar_tar(path, python=True):
    rng = np.random.default_rng(1)
    blocks, all_labels = {}, {}
    with tarfile.open(path, "w") as tar:  # uncompressed: gzip of random bytes is slow; "r:*" reads both
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            block = rng.integers(0, 256, (10000, 3072), dtype=np.uint8)
            blocks[name] = block
            labels = rng.integers(0, 10, (10000, 1), dtype=np.uint8)
            all_labels[name] = labels[:, 0]
            if python:  # the layout of a protocol-2 pickle's BINSTRING holding the image block, then the labels
                head = b"\x80\x02}q\x00(U\x04dataq\x01T" + struct.pack("<I", block.size)
                payload = head + block.tobytes() + b"q\x02" + _pickled_labels(labels[:, 0]) + b"u."
                member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            else:
                payload = np.concatenate([labels, block], axis=1).tobytes()
                member = tarfile.TarInfo(f"cifar-10-batches-bin/{name}.bin")
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    return blocks, all_labels


@pytest.mark.parametrize("python", [True, False], ids=["python", "binary"])
def test_cifar10_tarballs(tmp_path, python):
    path = tmp_path / "cifar.tar.gz"
    blocks, labels = _cifar_tar(path, python)
    test = D.load(f"cifar10:{path}:test")
    assert test.labels.tolist() == labels["test_batch"].tolist()
    assert test.images.shape == (10000, 3, 32, 32)
    assert torch.equal(test.images.reshape(10000, -1), torch.from_numpy(blocks["test_batch"]))
    train = D.load(f"cifar10:{path}:train")
    assert train.images.shape == (50000, 3, 32, 32)
    assert torch.equal(train.images[10000:20000].reshape(10000, -1), torch.from_numpy(blocks["data_batch_2"]))
    assert train.labels[10000:20000].tolist() == labels["data_batch_2"].tolist()


def test_folder_of_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    ds = D.load(f"folder:{tmp_path}")
    assert ds.images.shape == (3, 1, 6, 5)
    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    assert D.load(f"folder:{tmp_path}").images.shape == (4, 3, 6, 5)
    Image.fromarray(rng.integers(0, 256, (7, 5), dtype=np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(DataError, match="differ in size"):
        D.load(f"folder:{tmp_path}")


def test_folder_class_subfolders_are_labels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    for cls, n in (("cat", 2), ("ant", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = D.load(f"folder:{tmp_path}")
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]  # sorted: ant = 0, cat = 1
    Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(tmp_path / "loose.png")
    assert D.load(f"folder:{tmp_path}").labels is None  # an image outside the sub-folders: no labels


def test_tensors_files(tmp_path):
    p = str(tmp_path / "t.safetensors")
    save_file({"images": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)}, p)
    assert D.load(f"tensors:{p}").is_image8
    save_file({"x": torch.randn(5, 3)}, p)
    ds = D.load(f"tensors:{p}")
    assert not ds.is_image8 and ds.shape == (3,) and ds.labels is None
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    save_file({"images": images, "labels": torch.tensor([2, 0, 1], dtype=torch.int32)}, p)
    ds = D.load(f"tensors:{p}")
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [2, 0, 1]
    for bad in (torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0, 1]), torch.tensor([[0, 1, 2]]), torch.tensor([0, -1])):
        save_file({"images": images, "labels": bad}, p)
        with pytest.raises(DataError, match="labels"):
            D.load(f"tensors:{p}")
    save_file({"images": torch.zeros(2, 4, 4)}, p)
    with pytest.raises(DataError, match="must be uint8 N×C×H×W"):
        D.load(f"tensors:{p}")
    save_file({"x": torch.tensor([[float("nan")]])}, p)
    with pytest.raises(DataError, match="NaN"):
        D.load(f"tensors:{p}")
    save_file({"y": torch.zeros(2)}, p)
    with pytest.raises(DataError, match="no key 'images'"):
        D.load(f"tensors:{p}")
    open(p, "wb").write(b"junk")
    with pytest.raises(DataError, match="cannot read safetensors"):
        D.load(f"tensors:{p}")


@pytest.mark.parametrize("source, message", [
    ("", "empty"), ("imagenet", "unknown kind 'imagenet'"), ("digits:3", "takes no arguments"),
    ("fashion-mnist:val", "end it with :train or :test"), ("cifar10:/nope.tgz:train", "not found"),
    ("folder:/nonexistent", "not found"), ("fashion-mnist:/nonexistent:train", "directory /nonexistent not found"),
])
def test_bad_sources(source, message):
    with pytest.raises(DataError, match=message):
        D.load(source)
