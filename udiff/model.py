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

    classes = 0  # class-conditional models: labels 0 ... classes-1, and `classes` for none (the null class)

    def eps(self, z: torch.Tensor, lvl: NoiseLevel, labels=None) -> torch.Tensor:  # pragma: no cover - abstract
        """ε̂ of the predicted slots; `labels` (B,) int64 for a class-conditional model (None: unconditional)."""
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

    @property
    def classes(self) -> int:
        return self.net.label_embed.classes if hasattr(self.net, "label_embed") else 0

    def eps(self, z, lvl, labels=None):
        b = z.shape[0]
        inp, label = net_input(self, self.precond.inputs(self.process, z, lvl), lvl, self.cond)
        if self.classes:
            out = self._forward(inp, label, labels)
        else:
            out = self._forward(inp, label)
        p = self.process.predicted
        out = self.basis.from_net(out.float().reshape((b * p,) + self.event_shape))
        return self.precond.eps(self.process, z, out.reshape((b, p) + self.event_shape), lvl)


def net_input(model, state, lvl, cond: str = "gamma"):
    """What a backbone sees of a state (B, k, *event) in components: (input, noise label). The input is the state
    mapped back to data layout and stacked along channels (images: (B, k·C, H, W), float32, channels_last when
    the model is; vectors: (B, k·d)), with the gamma vector appended as channels for gamma-map conditioning;
    the label is nets.embeddings.noise_label of the mean gamma (or of t), (B,)."""
    b, k = state.shape[:2]
    shape = model.event_shape
    inp = model.basis.to_net(state.reshape((b * k,) + shape)).reshape((b, -1) + shape[1:])
    if cond == "gamma-map":  # the whole gamma vector, laid out like the components, as input channels
        gmap = (lvl.gamma[:, 0] / GAMMA_MAP_SCALE).to(inp.dtype).expand((b,) + shape)
        inp = torch.cat([inp, gmap.reshape((b, -1) + shape[1:])], dim=1)
    if len(shape) != 3:
        inp = inp.reshape(b, -1)
    elif getattr(model, "channels_last", False):
        inp = inp.contiguous(memory_format=torch.channels_last)
    raw = lvl.t if cond == "t" else lvl.label()
    label = noise_label(raw, "t" if cond == "t" else "gamma").to(torch.float32).expand(b)
    return inp.to(torch.float32), label


class GaussianModel(Model):
    """ε-prediction of the Bayes-optimal denoiser for N(mean, cov) data (buffers, no parameters).

    With `classes` = K > 0, a Gaussian per class (class_mean, class_cov, class_prior: the class-conditional
    exact denoiser): label k < K denoises with class k's Gaussian, and no label (or the null class K) with the
    mixture Σ π_k N(m_k, C_k), whose posterior mean is Σ_k p(k | z_t) E_k[x0 | z_t] (docs/guidance.md)."""

    def __init__(self, basis, process, schedule, event_shape, jitter: float = 0.0, classes: int = 0):
        super().__init__(basis, process, schedule, event_shape)
        d = 1
        for s in event_shape:
            d *= s
        self.jitter = float(jitter)
        self.classes = int(classes)
        self.register_buffer("mean", torch.zeros(d, dtype=torch.float64))  # component space
        self.register_buffer("cov", torch.eye(d, dtype=torch.float64))
        if self.classes:
            k = self.classes
            self.register_buffer("class_prior", torch.full((k,), 1.0 / k, dtype=torch.float64))
            self.register_buffer("class_mean", torch.zeros(k, d, dtype=torch.float64))
            self.register_buffer("class_cov", torch.eye(d, dtype=torch.float64).repeat(k, 1, 1))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> "GaussianModel":
        """Set mean and covariance from data items x (N, *event), in data space, then move them to components;
        per class from `labels` (N,) when the model has classes."""
        mean, cov = exact.moments(x, self.jitter)
        m, c = exact.encode_moments(self.basis, mean, cov, self.event_shape)
        self.mean.copy_(m)
        self.cov.copy_(c)
        if self.classes:
            prior, means, covs = exact.class_moments(x, labels, self.classes, self.jitter)
            for k in range(self.classes):
                m, c = exact.encode_moments(self.basis, means[k], covs[k], self.event_shape)
                self.class_mean[k].copy_(m)
                self.class_cov[k].copy_(c)
            self.class_prior.copy_(prior)
        return self

    def _observation(self, z, lvl):
        """(w, y) flattened to (1 or B, d) and (B, d), float64."""
        w, y = C.observation(self.process, z.double(), lvl)
        w = w.expand((w.shape[0],) + self.event_shape).reshape(w.shape[0], -1)
        return w, y.reshape(z.shape[0], -1)

    def posterior_mean(self, z, lvl, labels=None):
        """E[x0 | z_t] (given the class where `labels` (B,) names one) in component space, (B, 1, *event), float64."""
        w, y = self._observation(z, lvl)
        if not self.classes:
            x0 = exact.posterior_mean(self.mean, self.cov, w, y)
        else:
            each = self._class_means(w, y)  # (B, K, d)
            lab = None if labels is None else labels.to(z.device).long()
            known = None if lab is None else lab < self.classes
            x0 = each[torch.arange(len(lab)), lab.clamp(max=self.classes - 1)] if lab is not None else None
            if known is None or not bool(known.all()):
                mix = (self._class_log_posterior(w, y, each).exp()[..., None] * each).sum(1)
                x0 = mix if x0 is None else torch.where(known[:, None], x0, mix)
        return x0.reshape((z.shape[0], 1) + self.event_shape)

    def _class_means(self, w, y):
        return torch.stack([exact.posterior_mean(self.class_mean[k], self.class_cov[k], w, y)
                            for k in range(self.classes)], 1)

    def _class_log_posterior(self, w, y, each):
        ev = torch.stack([exact.log_evidence(self.class_mean[k], self.class_cov[k], w, y, each[:, k]).expand(len(y))
                          for k in range(self.classes)], 1)
        return torch.log_softmax(ev + self.class_prior.log(), dim=1)

    def class_log_posterior(self, z, lvl) -> torch.Tensor:
        """log p(k | z_t) of every class, (B, K), float64 and differentiable in z: the exact noisy classifier."""
        w, y = self._observation(z, lvl)
        return self._class_log_posterior(w, y, self._class_means(w, y))

    def eps(self, z, lvl, labels=None):
        eps = C.eps_from_x0(self.process, z.double(), self.posterior_mean(z, lvl, labels), lvl)
        return eps[:, self.process.k - self.process.predicted:].to(torch.float32)


class NoisyClassifier(Model):
    """p(y | z_t): a classifier of the states of a process (nets.classifier.NoisyClassifier), for classifier
    guidance. `log_prob(z, lvl, labels)` is what guidance differentiates; called on clean items x (training),
    it returns the logits of their noisy states at low-discrepancy random times (losses.stratified_times)."""

    def __init__(self, basis, process, schedule, event_shape, net: nn.Module):
        super().__init__(basis, process, schedule, event_shape)
        self.net = net
        for p in self.schedule.parameters():  # a learned schedule stays as the diffusion model trained it
            p.requires_grad_(False)

    @property
    def classes(self) -> int:
        return self.net.out.out_features

    def logits(self, z, lvl):
        inp, label = net_input(self, z, lvl)
        return self.net(inp, label)

    def log_prob(self, z, lvl, labels):
        """log p(labels | z_t), (B,)."""
        lp = torch.log_softmax(self.logits(z, lvl).double(), dim=1)
        return lp.gather(1, labels.to(lp.device).long()[:, None])[:, 0]

    def forward(self, x, t=None):
        """Logits of noisy states of clean data items x (B, *event) at times t (B,) [default: stratified]."""
        from .losses import stratified_times

        if t is None:
            t = stratified_times(x.shape[0], self.schedule.t_min, x.device)
        lvl = self.level(t)
        x0 = self.encode(x)
        eps = torch.randn((x.shape[0], self.process.k) + self.event_shape, device=x.device)
        return self.logits(C.perturb(self.process, x0, eps, lvl), lvl)
