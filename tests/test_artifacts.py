"""Artifacts: round trips, corruption, wrong kinds, atomic writes, stdin/stdout."""

import io
import os
import sys

import pytest
import torch

from udiff import artifacts as A
from udiff.errors import ArtifactError


def _tensors():
    return {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.bfloat16),
            "c": torch.zeros(0, dtype=torch.uint8)}


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    p = str(tmp_path / "x.safetensors")
    A.save(p, _tensors(), "samples", recipe_json='{"a":1}', meta={"udiff.n": 3, "udiff.s": "text"})
    art = A.load(p, "samples")
    assert art.kind == "samples" and art.recipe_json == '{"a":1}'
    assert art.json("udiff.n") == 3 and art.meta["udiff.s"] == "text"
    assert art.meta["udiff.format"] == str(A.FORMAT) and art.meta["format"] == "pt"
    for k, v in _tensors().items():
        assert torch.equal(art.tensors[k], v)


def test_wrong_kind_names_both_kinds(tmp_path):
    p = str(tmp_path / "x.safetensors")
    A.save(p, _tensors(), "samples")
    with pytest.raises(ArtifactError, match=r"is a 'samples' artifact; expected a 'model' artifact \(made by "):
        A.load(p, "model")


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "foreign"])
def test_corrupted_files_are_refused(tmp_path, damage):
    p = str(tmp_path / "x.safetensors")
    A.save(p, _tensors(), "model")
    data = bytearray(open(p, "rb").read())
    if damage == "truncate":
        data = data[:-5]
    elif damage == "flip":
        data[-2] ^= 0x10
    elif damage == "garbage":
        data = bytearray(b"this is not safetensors at all")
    elif damage == "empty":
        data = bytearray()
    else:
        from safetensors.torch import save
        data = bytearray(save({"w": torch.ones(2)}))
    open(p, "wb").write(bytes(data))
    with pytest.raises(ArtifactError) as e:
        A.load(p, "model")
    msg = str(e.value)
    assert msg.startswith(p) and "\n" not in msg


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ArtifactError, match="no such file"):
        A.load(str(tmp_path / "nope.safetensors"))
    with pytest.raises(ArtifactError, match="is a directory"):
        A.load(str(tmp_path))
    with pytest.raises(ArtifactError, match="is a directory; give a file name"):
        A.save(str(tmp_path), _tensors(), "model")
    open(tmp_path / "f", "w").close()
    with pytest.raises(ArtifactError, match="is a file, not a directory"):
        A.save(str(tmp_path / "f" / "x.safetensors"), _tensors(), "model")
    assert os.listdir(tmp_path) == ["f"]


def test_missing_folders_are_made_only_when_the_output_is(tmp_path):
    deep = tmp_path / "no" / "dir" / "x.safetensors"
    with pytest.raises(RuntimeError):
        with A.Outputs() as out:
            open(out.stage(str(deep)), "w").write("half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []  # the temporary file sat in the nearest existing folder, and is gone
    A.save(str(deep), _tensors(), "model")
    assert A.load(str(deep), "model").kind == "model"


def test_outputs_follow_the_umask_and_killed_runs_tmp_files_are_removed(tmp_path):
    old = os.umask(0o027)
    try:
        A.save(str(tmp_path / "a.safetensors"), _tensors(), "model")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.safetensors").st_mode & 0o777 == 0o640  # not mkstemp's 0600
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".a.safetensors.{int(dead.stdout)}.abc123.tmp"  # what a killed writer leaves
    other = tmp_path / ".b.safetensors.1.abc123.tmp"  # pid 1 is alive: never touched
    stale.write_text("half")
    other.write_text("half")
    A.save(str(tmp_path / "a.safetensors"), _tensors(), "model")
    assert sorted(os.listdir(tmp_path)) == [".b.safetensors.1.abc123.tmp", "a.safetensors"]


def test_edited_metadata_is_refused(tmp_path):
    import json
    import struct

    p = str(tmp_path / "m.safetensors")
    A.save(p, _tensors(), "model", recipe_json='{"train": {"steps": 3}}')
    data = open(p, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["udiff.recipe"] = '{"train": {"steps": 4}}'
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    open(p, "wb").write(struct.pack("<Q", len(text)) + text + data[8 + n:])
    with pytest.raises(ArtifactError, match="metadata do not match"):
        A.load(p)


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError):
        with A.Outputs() as out:
            tmp = out.stage(str(target))
            open(tmp, "w").write("half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_outputs_commit_all_together(tmp_path):
    with A.Outputs() as out:
        for name in ("a", "b"):
            open(out.stage(str(tmp_path / name)), "w").write(name)
        assert sorted(os.listdir(tmp_path)) == sorted(f for f in os.listdir(tmp_path) if f.startswith("."))
        out.commit()
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_stdout_and_stdin(monkeypatch):
    buf = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buf))
    A.save("-", _tensors(), "samples")
    sys.stdout.flush()
    data = buf.getvalue()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    art = A.load("-", "samples")
    assert torch.equal(art.tensors["a"], _tensors()["a"])


def test_nothing_is_pickled():
    import pathlib
    import re

    src = pathlib.Path(A.__file__).parent
    for f in src.rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"\bimport pickle\b|pickle\.loads?\(|torch\.load\(|cloudpickle", text), f
