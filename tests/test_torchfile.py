"""torch.save files (the user's Inception weights) read without unpickling them."""

import os

import pytest
import torch
from torch import nn

from udiff.errors import ArtifactError
from udiff.torchfile import load_state


def _state():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(5, 6))
    state = dict(net.state_dict())
    state["half_transposed"] = torch.randn(3, 2).half().t()       # a strided view of a float16 storage
    state["slice"] = torch.arange(10, dtype=torch.float64)[2:7]   # a view with an offset
    state["shared"] = state["slice"][1:3]                         # a second view of the same storage
    state["param"] = nn.Parameter(torch.ones(2))                  # _rebuild_parameter
    return state


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_state_dicts_round_trip(tmp_path, zip_format):
    path = str(tmp_path / "w.pth")
    state = _state()
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    got = load_state(path)
    assert list(got) == list(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v.detach()), k


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_anything_but_tensors_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.pth")
    torch.save({"w": torch.ones(2), "x": Payload(marker)}, path)
    with pytest.raises(ArtifactError, match="system"):
        load_state(path)
    assert not marker.exists()
    torch.save({"w": torch.ones(2), "n": 3}, path)
    with pytest.raises(ArtifactError, match="not a state dict"):
        load_state(path)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="not a"):
        load_state(str(tmp_path / "junk.pth"))
