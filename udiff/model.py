"""A diffusion model: the five parts (basis, prior, process, schedule, network) behind one call.

`model.eps(z, lvl)` is the network's prediction of the noise in the state z (B, k, *event), given the
noise level `lvl = model.level(t)`; it returns the `process.predicted` last slots, (B, p, *event), in
component space. Samplers, losses and likelihoods only ever call these two methods.

`NetModel` runs a backbone on the state mapped back to data layout (basis.to_net), stacked along channels
(images: (B, k·C, H, W); vectors: (B, k·d)) with a scalar noise label; `GaussianModel` computes the same
quantity in closed form for Gaussian data (the exact denoiser of nets/gaussian.py).
"""

from __future__ import annotations

import torch
from torch import nn

from . import conversions as C
from .basis import Basis
from .nets import gaussian as exact
from .nets.embeddings import noise_label
from .precond import EpsPrediction
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

    def prepare(self, device, compile_net: bool = False, wrap=None) -> "Model":
        """Move to `device`; on CUDA, lay image networks out channels_last. Subclasses may compile, and call
        their network through `wrap(net)` (training under torchrun: DDP)."""
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
    def __init__(self, basis, process, schedule, event_shape, net: nn.Module, cond: str = "gamma", precond=None):
        super().__init__(basis, process, schedule, event_shape)
        self.net = net
        self.cond = cond
        self.precond = precond or EpsPrediction()
        self.channels_last = False
        # The network's callable: `net` itself, or its torch.compile'd version. Set with object.__setattr__
        # so that it is not registered as a second submodule (it would duplicate every state_dict key).
        object.__setattr__(self, "_forward", net)

    def prepare(self, device, compile_net: bool = False, wrap=None):
        self.to(device)
        if torch.device(device).type == "cuda" and len(self.event_shape) == 3:
            self.net.to(memory_format=torch.channels_last)
            self.channels_last = True
        forward = wrap(self.net) if wrap else self.net
        object.__setattr__(self, "_forward", torch.compile(forward) if compile_net else forward)
        return self

    def eps(self, z, lvl):
        b, k = z.shape[:2]
        state = self.precond.inputs(self.process, z, lvl)
        inp = self.basis.to_net(state.reshape((b * k,) + self.event_shape)).reshape((b, -1) + self.event_shape[1:])
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
        return self.precond.eps(self.process, z, out.reshape((b, p) + self.event_shape), lvl)


class GaussianModel(Model):
    """ε-prediction of the Bayes-optimal denoiser for N(mean, cov) data (buffers, no parameters)."""

    def __init__(self, basis, process, schedule, event_shape, jitter: float = 0.0):
        super().__init__(basis, process, schedule, event_shape)
        d = 1
        for s in event_shape:
            d *= s
        self.jitter = float(jitter)
        self.register_buffer("mean", torch.zeros(d, dtype=torch.float64))  # component space
        self.register_buffer("cov", torch.eye(d, dtype=torch.float64))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> "GaussianModel":
        """Set mean and covariance from data items x (N, *event), in data space, then move them to components."""
        mean, cov = exact.moments(x, self.jitter)
        m, c = exact.encode_moments(self.basis, mean, cov, self.event_shape)
        self.mean.copy_(m)
        self.cov.copy_(c)
        return self

    def posterior_mean(self, z, lvl):
        """E[x0 | z_t] in component space, (B, 1, *event), float64."""
        w, y = C.observation(self.process, z.double(), lvl)
        b = z.shape[0]
        w = w.expand((w.shape[0],) + self.event_shape).reshape(w.shape[0], -1)
        x0 = exact.posterior_mean(self.mean, self.cov, w, y.reshape(b, -1))
        return x0.reshape((b, 1) + self.event_shape)

    def eps(self, z, lvl):
        eps = C.eps_from_x0(self.process, z.double(), self.posterior_mean(z, lvl), lvl)
        return eps[:, self.process.k - self.process.predicted:].to(torch.float32)
