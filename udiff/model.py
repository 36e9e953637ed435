"""A diffusion model: the five parts (basis, prior, process, schedule, network) behind one call.

`model.eps(z, lvl)` is the network's prediction of the noise in the state z (B, k, *event), given the
noise level `lvl = model.level(t)`; it returns the `process.predicted` last slots, (B, p, *event), in
component space. Samplers, losses and likelihoods only ever call these two methods.

`NetModel` runs a backbone on the state mapped back to data layout (basis.to_net), stacked along channels
(images: (B, k·C, H, W); vectors: (B, k·d)) with a scalar noise label; `nets.gaussian.GaussianModel`
computes the same quantity in closed form for Gaussian data.
"""

from __future__ import annotations

import torch
from torch import nn

from .basis import Basis
from .nets.embeddings import noise_label
from .process import Process
from .schedule import NoiseLevel, Schedule


GAMMA_MAP_SCALE = 10.0  # gamma-map inputs are gamma / 10: about [-1.5, 1.5]


class Model(nn.Module):
    """Common part: the basis and schedule are submodules (their tensors go into artifacts)."""

    def __init__(self, basis: Basis, process: Process, schedule: Schedule, event_shape):
        super().__init__()
        self.basis = basis
        self.schedule = schedule
        self.process = process
        self.event_shape = tuple(event_shape)

    def prepare(self, device, compile_net: bool = False) -> "Model":
        """Move to `device`; on CUDA, lay image networks out channels_last. Subclasses may compile."""
        return self.to(device)

    def level(self, t, **params) -> NoiseLevel:
        """The noise level at times t; `params` are per-item schedule parameters (e.g. a softness)."""
        return self.schedule.level(t, len(self.event_shape), **params)

    def eps(self, z: torch.Tensor, lvl: NoiseLevel) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Data (B, *event) → x0 in component space, (B, 1, *event)."""
        return self.basis.encode(x).unsqueeze(1)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, 1, *event) component-space estimate → data (B, *event)."""
        return self.basis.decode(x0[:, 0])


class NetModel(Model):
    def __init__(self, basis, process, schedule, event_shape, net: nn.Module, cond: str = "gamma"):
        super().__init__(basis, process, schedule, event_shape)
        self.net = net
        self.cond = cond
        self.channels_last = False
        # The network's callable: `net` itself, or its torch.compile'd version. Set with object.__setattr__
        # so that it is not registered as a second submodule (it would duplicate every state_dict key).
        object.__setattr__(self, "_forward", net)

    def prepare(self, device, compile_net: bool = False):
        self.to(device)
        if torch.device(device).type == "cuda" and len(self.event_shape) == 3:
            self.net.to(memory_format=torch.channels_last)
            self.channels_last = True
        if compile_net:
            object.__setattr__(self, "_forward", torch.compile(self.net))
        return self

    def eps(self, z, lvl):
        b, k = z.shape[:2]
        inp = self.basis.to_net(z.reshape((b * k,) + self.event_shape)).reshape((b, -1) + self.event_shape[1:])
        if self.cond == "gamma-map":  # the whole gamma vector, laid out like the components, as input channels
            gmap = (lvl.gamma[:, 0] / GAMMA_MAP_SCALE).to(inp.dtype).expand((b,) + self.event_shape)
            inp = torch.cat([inp, gmap.reshape((b, -1) + self.event_shape[1:])], dim=1)
        if len(self.event_shape) != 3:
            inp = inp.reshape(b, -1)
        elif self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        raw = lvl.t if self.cond == "t" else lvl.label()
        label = noise_label(raw, "t" if self.cond == "t" else "gamma").to(torch.float32).expand(b)
        out = self._forward(inp.to(torch.float32), label)
        p = self.process.predicted
        out = self.basis.from_net(out.float().reshape((b * p,) + self.event_shape))
        return out.reshape((b, p) + self.event_shape)
