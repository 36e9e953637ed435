"""Conditional generation: a model wrapped so that its `eps(z, lvl)` is the guided prediction (docs/guidance.md).

Samplers, inpainting and eval-fid only ever call `model.eps(z, lvl)`, so guidance lives here, in the model
layer, and every sampler and process gets it:

    labels only                 ε̂ = ε̂(z, y): the class-conditional model alone (W = 1; W = 0: its null class)
    classifier-free guidance    ε̂ = ε̂_u + W (ε̂_c − ε̂_u), both branches in ONE batched network call
                                (Ho & Salimans 2022; the unconditional branch is the null class)
    classifier guidance         the score plus S ∇_z log p(y | z_t) (Dhariwal & Nichol 2021; PSLD §4): with
                                s = −L⁻ᵀ ε̂ (conversions.score_from_eps), ε̂' = ε̂ − S Lᵀ ∇_z log p(y | z_t) on the
                                predicted slots (conversions.eps_shift)

Per-sample labels travel with the seeds: `Conditioning.bind(model, start, n)` wraps the model for the batch of
items start ... start + n − 1, so sample k gets label y_k whatever the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import conversions as C
from .errors import UdiffError
from .schedule import NoiseLevel


@dataclass(frozen=True)
class Conditioning:
    """What a conditional sampling run uses: labels (N,) int64 (one per seed), the classifier-free guidance weight,
    and a classifier (with `log_prob(z, lvl, labels)`) with its scale."""

    labels: torch.Tensor
    guidance: float = 1.0
    classifier: object = None
    classifier_scale: float = 1.0

    def check(self, model) -> None:
        """One line when the model or classifier cannot take these labels."""
        classes = model.classes
        if self.classifier is None and not classes:
            raise UdiffError("--class/--labels: this model is unconditional ([net] classes = 0); train it with "
                             "[net] classes = K, or give a noise-conditional classifier with --classifier")
        if self.guidance != 1.0 and not classes:
            raise UdiffError("--guidance: classifier-free guidance needs a class-conditional model ([net] classes = K "
                             "with [train] label_dropout > 0); with an unconditional model use --classifier")
        limit = classes or self.classifier.classes
        if self.classifier is not None and classes and self.classifier.classes != classes:
            raise UdiffError(f"--classifier: has {self.classifier.classes} classes, the model {classes}; use a "
                             "classifier of the model's classes")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= limit):
            bad = int(self.labels.max()) if int(self.labels.max()) >= limit else int(self.labels.min())
            raise UdiffError(f"--class/--labels: label {bad} is not a class of this model (allowed: 0 to {limit - 1})")

    def bind(self, model, start: int, n: int) -> "Guided":
        return Guided(model, self.labels[start:start + n], self.guidance, self.classifier, self.classifier_scale)

    def described(self) -> dict:
        """For the samples artifact's metadata and the --json line (the labels themselves go in its tensors)."""
        labels = self.labels.tolist()
        one = len(set(labels)) == 1
        out = {"class": labels[0] if one and labels else "per seed (tensor labels)", "guidance": self.guidance}
        if self.classifier is not None:
            out.update(classifier=getattr(self.classifier, "source", "given"), classifier_scale=self.classifier_scale)
        return out


def _doubled(lvl: NoiseLevel) -> NoiseLevel:
    """A level for a batch stacked twice (one for the whole batch stays as it is)."""
    if lvl.gamma.shape[0] == 1:
        return lvl
    cat = lambda v: torch.cat([v, v]) if torch.is_tensor(v) and v.shape[:1] == lvl.gamma.shape[:1] else v  # noqa
    return NoiseLevel(t=cat(lvl.t), gamma=cat(lvl.gamma), dgamma=cat(lvl.dgamma))


class Wrapped:
    """A model seen through a wrapper: everything but `eps` is the inner model's."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.__dict__["model"], name)


class Labelled(Wrapped):
    """A class-conditional model with the labels of one batch bound: `eps(z, lvl)` = model.eps(z, lvl, labels).
    Training uses it (labels, some dropped to the null class); so does sampling at W = 1."""

    def __init__(self, model, labels):
        super().__init__(model)
        self.labels = labels

    def eps(self, z, lvl, labels=None):
        return self.model.eps(z, lvl, self.labels if labels is None else labels)


class Guided(Wrapped):
    """The guided ε̂ of one batch (module docstring)."""

    def __init__(self, model, labels, guidance=1.0, classifier=None, classifier_scale=1.0):
        super().__init__(model)
        self.labels = labels.to(torch.long)
        self.guidance, self.classifier, self.scale = float(guidance), classifier, float(classifier_scale)

    def eps(self, z, lvl, labels=None):
        y = (self.labels if labels is None else labels).to(z.device)
        eps = self._free(z, lvl, y) if self.model.classes else self.model.eps(z, lvl)
        if self.classifier is not None and self.scale:
            grad = classifier_grad(self.classifier, z, lvl, y)
            eps = eps - (self.scale * C.eps_shift(self.process, grad, lvl)).to(eps.dtype)
        return eps

    def _free(self, z, lvl, y):
        """Classifier-free guidance ε̂_u + W (ε̂_c − ε̂_u); W = 1 is the conditional model alone and W = 0 the
        unconditional one (one branch each)."""
        null = torch.full_like(y, self.model.classes)
        if self.guidance == 1.0:
            return self.model.eps(z, lvl, y)
        if self.guidance == 0.0:  # the unconditional branch alone (with --classifier: classifier guidance of p(x))
            return self.model.eps(z, lvl, null)
        both = self.model.eps(torch.cat([z, z]), _doubled(lvl), torch.cat([y, null]))  # one network call
        cond, uncond = both.chunk(2)
        return uncond + self.guidance * (cond - uncond)


def classifier_grad(classifier, z, lvl, labels) -> torch.Tensor:
    """∇_z log p(labels | z_t) (B, k, *event), float64; it runs with gradients even inside the samplers'
    inference mode (the state and level are copied out of it)."""
    with torch.inference_mode(False), torch.enable_grad():
        zz = z.detach().clone().double().requires_grad_(True)
        lv = NoiseLevel(*(v.clone() if torch.is_tensor(v) else v for v in (lvl.t, lvl.gamma, lvl.dgamma)))
        logp = classifier.log_prob(zz, lv, labels.clone())
        (grad,) = torch.autograd.grad(logp.sum(), zz)
    return grad


class ExactClassifier:
    """p(y | z_t) of a class-conditional GaussianModel in closed form: the exact noisy classifier (tests, docs)."""

    def __init__(self, gaussian):
        self.model, self.classes, self.source = gaussian, gaussian.classes, "exact Gaussian classes"

    def log_prob(self, z, lvl, labels):
        lp = self.model.class_log_posterior(z, lvl)
        return lp.gather(1, labels.to(lp.device).long()[:, None])[:, 0]


def read_labels(spec: str) -> list[int]:
    """--labels FILE|LIST: a text file with one label per line, else a list for parse_labels."""
    import os

    if os.path.isfile(spec):
        try:
            with open(spec) as fh:
                text = ",".join(line.strip() for line in fh if line.strip())
        except (OSError, UnicodeDecodeError) as e:
            raise UdiffError(f"--labels {spec}: cannot read it ({e.__class__.__name__}); give a text file with one "
                             "label per line") from None
        return parse_labels(text, spec)
    return parse_labels(spec)


def parse_labels(text: str, where: str | None = None) -> list[int]:
    """--labels LIST: comma-separated class labels, with `K*N` for N copies of K (e.g. 0*8,1*8)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        label, _, count = part.partition("*")
        try:
            out += [int(label)] * (int(count) if count else 1)
        except ValueError:
            raise UdiffError(f"--labels {where or text}: {part!r} is not a label; give integers such as 0,1,2 or "
                             "3*16, or a file with one label per line") from None
    return out


def check_labels(labels, classes: int, source: str) -> None:
    """A class-conditional recipe needs labels 0 ... classes − 1 in its data (DataError otherwise)."""
    from .classify import LABELLED
    from .errors import DataError

    if labels is None:
        raise DataError(f"data source {source!r}: has no labels, but [net] classes = {classes} needs them "
                        f"({LABELLED})")
    top = int(labels.max()) if len(labels) else -1
    if top >= classes:
        raise DataError(f"data source {source!r}: has label {top}, beyond [net] classes = {classes}; set classes = "
                        f"{top + 1}")
