"""Training and testing an image classifier ([net] kind = "classifier"): cross-entropy on clean images; and the
noise-conditional classifier of classifier guidance ([net] kind = "noisy-classifier", model.NoisyClassifier),
whose forward pass noises the clean batch itself, so that the same loop trains it.

This is the path `udiff train` takes for a classifier recipe, beside (not through) the diffusion loop of
train.py. AdamW with linear warm-up and cosine decay of the learning rate, gradient clipping, optional
horizontal flips; every random number of step s comes from rng.step_seed(seed, s), so a run is a function
of its recipe and data. The classifier's penultimate features are what `udiff eval-fid --extractor
classifier:PATH` compares (fid.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import Dataset, to_unit
from .errors import DataError
from .rng import step_seed
from .train import BatchOrder, LossLog

LABELLED = "digits, fashion-mnist, mnist, cifar10, tensors with a `labels` key, folder with class sub-folders"


@dataclass
class ClassifierResult:
    steps: int
    seconds: float
    images_per_second: float
    loss: float
    device: str
    test_accuracy: float
    n_train: int
    n_test: int
    test_source: str

    def as_dict(self):
        return dict(self.__dict__)


def split(ds: Dataset, test_source: str | None, holdout: float, load) -> tuple[Dataset, Dataset, str]:
    """(train, test, test source): the given test source, else the :test split of a :train source, else the last
    `holdout` fraction of `ds`. `load(source)` reads a data source. Both parts must be labelled images."""
    _labelled(ds)
    if test_source is None and ds.source.endswith(":train"):
        test_source = ds.source[:-len(":train")] + ":test"
    if test_source is None:
        n_test = max(1, int(round(holdout * len(ds))))
        if n_test >= len(ds):
            raise DataError(f"data source {ds.source!r}: {len(ds)} items are too few to hold out a test set")
        cut = len(ds) - n_test
        part = lambda a, b: Dataset(ds.source, images=ds.images[a:b], labels=ds.labels[a:b])  # noqa: E731
        return part(0, cut), part(cut, len(ds)), f"{ds.source} (last {n_test} items held out)"
    test = load(test_source)
    _labelled(test)
    if test.shape != ds.shape:
        raise DataError(f"test data {test_source!r}: images of shape {test.shape}, but the training data "
                        f"{ds.source!r} has {ds.shape}; give test images like the training images")
    return ds, test, test_source


def _labelled(ds: Dataset):
    if not ds.is_image8 or ds.images.ndim != 4:
        raise DataError(f"data source {ds.source!r}: a classifier needs 8-bit images (C×H×W), not float data")
    if ds.labels is None:
        raise DataError(f"data source {ds.source!r}: has no labels; a classifier needs labelled images ({LABELLED})")


def num_classes(*parts: Dataset) -> int:
    return int(max(int(p.labels.max()) for p in parts)) + 1


def fit(net, data: Dataset, test: Dataset, test_source: str, spec, *, hflip: bool = False, device="cpu",
        progress: bool = False, report=None) -> ClassifierResult:
    """Optimise `net` by cross-entropy on `data` per the [train] spec, then measure its accuracy on `test`.
    `progress`: a progress bar; `report(line)`: a line every half minute instead (stderr not a terminal)."""
    dev = torch.device(device)
    net.to(dev).train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, betas=tuple(spec.betas), eps=spec.adam_eps,
                            weight_decay=spec.weight_decay)
    images, labels = data.images.to(dev), data.labels.to(dev)
    order = BatchOrder(len(data), spec.batch_size, spec.seed)
    log = LossLog(spec.steps, device=dev, progress=progress, what="classifier training", every=spec.log_every,
                  batch_size=spec.batch_size, report=report)
    t0 = time.perf_counter()
    for step in range(spec.steps):
        torch.manual_seed(step_seed(spec.seed, step))
        idx = order.indices(step).to(dev)
        x, y = to_unit(images[idx]), labels[idx]
        if hflip:
            flip = torch.rand(x.shape[0], device=dev) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, spec.lr, spec.warmup, spec.steps)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        if spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log.add(loss, step + 1)
    log.close()
    seconds = time.perf_counter() - t0
    rate = spec.steps * spec.batch_size / seconds if seconds > 0 else 0.0
    acc = accuracy(net, test, device=dev)
    return ClassifierResult(spec.steps, seconds, rate, log.last, str(dev), acc, len(data), len(test), test_source)


def learning_rate(step: int, peak: float, warmup: int, steps: int) -> float:
    """Linear warm-up over `warmup` steps, then a cosine from `peak` down to 0 at `steps`."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


@torch.no_grad()
def accuracy(net, data: Dataset, *, batch_size: int = 500, device="cpu") -> float:
    """Fraction of `data` whose largest logit is its label."""
    net.eval()
    right = 0
    for i in range(0, len(data), batch_size):
        x = to_unit(data.images[i:i + batch_size].to(device))
        right += int((net(x).argmax(1).cpu() == data.labels[i:i + batch_size]).sum())
    return right / len(data)


NOISY_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)  # where a noisy classifier's test accuracy is reported


@torch.no_grad()
def noisy_accuracy(model, data: Dataset, times=NOISY_TIMES, *, batch_size: int = 500, device="cpu") -> dict:
    """{t: accuracy} of a noise-conditional classifier on noisy states of `data` at each time t (clamped to the
    schedule's t_min), the noise drawn from seed 0."""
    model.eval()
    out = {}
    for t in times:
        torch.manual_seed(0)
        right = 0
        for i in range(0, len(data), batch_size):
            x = to_unit(data.images[i:i + batch_size].to(device))
            tt = torch.full((len(x),), max(float(t), model.schedule.t_min), dtype=torch.float64, device=device)
            right += int((model(x, tt).argmax(1).cpu() == data.labels[i:i + batch_size]).sum())
        out[t] = right / len(data)
    return out
