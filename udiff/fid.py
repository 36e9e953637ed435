"""Sample-quality metrics with torch-fidelity doing the arithmetic: FID, KID, precision/recall; and the class
accuracy of labelled samples, judged by a classifier.

Feature extractors are torch-fidelity feature extractors (`FeatureExtractorBase` subclasses in its registry),
so its own code extracts the features (`create_feature_extractor`, `get_featuresdict_from_dataset`) and
computes the metrics (`fid_features_to_statistics`, `fid_statistics_to_metric`, `kid_features_to_metric`,
`prc_features_to_metric`: the functions `calculate_metrics` calls). udiff calls those functions rather than
`calculate_metrics` itself because the latter takes reference statistics only from its own pickled cache;
here they come from a `stats` artifact (safetensors, never pickle). The numbers are the same either way
(tests/test_fid.py checks it against `calculate_metrics`). docs/fid.md says what is measured and why.

Extractors, by the name given to `udiff eval-fid --extractor` (table `EXTRACTORS`):

    inception         torch-fidelity's `inception-v3-compat` with the user's weights file (never a download):
                      uint8 images, grey repeated to 3 channels, torch-fidelity's TF1-compatible bilinear
                      resize to 299×299; features "2048"
    classifier:PATH   the penultimate layer of a `classifier` artifact (udiff train, [net] kind = "classifier"),
                      registered with torch-fidelity as "udiff-classifier": images at their own size and
                      channels, mapped to [-1, 1] bin centres as in training; features "penultimate"

Class accuracy (`accuracy`): each labelled sample (`udiff sample --class/--labels` stores the labels) is given
to a classifier's last layer, and the share whose largest logit is its label is reported, overall and per
class. The classifier must not have taken part in sampling (guidance), or it judges its own work.

Reference statistics (the `stats` artifact): `mu` (float32, as torch-fidelity computes it from float32
features), `sigma` (float64, np.cov), and `features` (float32, N×D) when KID or precision/recall are to be
computed from it; metadata `udiff.stats` says which extractor (and the SHA-256 of its weights), which layer,
how images were fed, what data, and how many items.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from .data import to_unit
from .errors import ArtifactError, DataError, NonFiniteResult, UdiffError

METRICS = ("fid", "kid", "prc", "accuracy")
REF_METRICS = ("fid", "kid", "prc")  # the metrics that compare with a reference set
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's published Inception-v3 weights
INCEPTION_SHA_PREFIX = "6726825d"  # the file name's hash prefix: the first digits of its SHA-256
KID_SUBSETS, KID_SUBSET_SIZE, PRC_NEIGHBORHOOD, RNG_SEED = 100, 1000, 3, 2020  # torch-fidelity's defaults
TORCH_FIDELITY_VERSION = torch_fidelity.__version__


# ---------------------------------------------------------------------------------------------------
# Extractors


class Features(FeatureExtractorBase):
    """A torch-fidelity feature extractor without compilation whose first feature is the one every metric
    uses: subclasses name their features (FEATURES) and define forward (uint8 batch → tuple of features)."""

    FEATURES: tuple[str, ...] = ()

    @classmethod
    def get_provided_features_list(cls):
        return cls.FEATURES

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        return cls.FEATURES[0]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None


class ClassifierFeatures(Features):
    """A udiff classifier as a torch-fidelity feature extractor: uint8 batches in, (penultimate, logits) out.

    torch-fidelity passes the keyword arguments of `create_feature_extractor` to the constructor; udiff
    gives the trained network as `net` (nets.classifier.Classifier, see build.classifier_from_artifact)."""

    FEATURES = ("penultimate", "logits")

    def __init__(self, name, features_list, net=None, **kwargs):
        super().__init__(name, features_list)
        if net is None:
            raise ValueError("ClassifierFeatures needs net=, a trained udiff classifier")
        self.net = net

    def forward(self, x):
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"expected uint8 B×C×H×W images, got {x.dtype} {tuple(x.shape)}")
        h = self.net.features(to_unit(x))
        out = {"penultimate": h, "logits": self.net.out(h)}
        return tuple(out[k].float() for k in self.features_list)


CLASSIFIER_NAME = "udiff-classifier"
if CLASSIFIER_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(CLASSIFIER_NAME, ClassifierFeatures)


@dataclass
class Extractor:
    """A feature extractor as eval-fid uses it: which torch-fidelity extractor, built how, fed how."""

    name: str                 # as given to --extractor: "inception", "classifier:PATH", ...
    kind: str                 # the part before ":" (what a stats artifact must match, with sha256)
    tf_name: str              # its name in torch-fidelity's registry
    layer: str                # the feature layer the metrics use
    sha256: str               # of the weights
    handling: str             # how images are fed, in words, for the output
    kwargs: Callable[[], dict] = dict  # its constructor's keyword arguments (torch-fidelity forwards them)
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x  # uint8 images → the extractor's uint8 input
    check: Callable[[tuple], None] = lambda shape: None            # raises DataError for images it cannot take
    batch_size: int = 256
    logits: Optional[str] = None  # the layer of class logits, for `accuracy` (classifiers only)

    def build(self, device, with_logits: bool = False):
        """The torch-fidelity feature extractor module (on CUDA when `device` is); with its logits layer too."""
        cuda = torch.device(device).type == "cuda"
        layers = [self.layer] + ([self.logits] if with_logits else [])
        try:
            return create_feature_extractor(self.tf_name, layers, cuda=cuda, verbose=False, **self.kwargs())
        except RuntimeError as e:  # load_state_dict of weights for another network
            raise ArtifactError(f"{self.name}: the weights do not fit torch-fidelity's {self.tf_name} "
                                f"({str(e).splitlines()[0][:120]}); expected {INCEPTION_FILE}") from None


EXTRACTORS: dict[str, Callable[[str, Optional[str]], Extractor]] = {}
USAGE: dict[str, str] = {}  # how each kind is written on the command line


def register_extractor(kind: str, usage: Optional[str] = None):
    """Add an extractor kind: a function (argument after "KIND:", --weights path or None) → Extractor."""
    def deco(fn):
        EXTRACTORS[kind], USAGE[kind] = fn, usage or kind
        return fn
    return deco


def extractor(name: str, weights: Optional[str] = None) -> Extractor:
    """The extractor `--extractor NAME [--weights PATH]` names."""
    kind, _, arg = name.partition(":")
    if kind not in EXTRACTORS:
        raise UdiffError(f"--extractor {name}: unknown extractor (allowed: {', '.join(USAGE.values())})")
    return EXTRACTORS[kind](arg, weights)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _three_channels(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _rgb_or_grey(shape):
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"the inception extractor takes grey or RGB images (1 or 3 channels), not items of shape "
                        f"{tuple(shape)}")


@register_extractor("inception")
def _inception(arg: str, weights: Optional[str]) -> Extractor:
    if arg:
        raise UdiffError(f"--extractor inception:{arg}: inception takes no argument; give its weights with --weights")
    default = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)
    path = weights or (default if os.path.isfile(default) else None)
    if path is None or not os.path.isfile(path):
        where = f"--weights {path}: no such file" if path else f"no --weights given and no {default}"
        raise UdiffError(f"{where}; the inception extractor needs torch-fidelity's Inception-v3 weights, the file "
                         f"{INCEPTION_FILE} (your own copy; udiff never downloads)")
    state = _load_state(path)
    buf = io.BytesIO()  # torch-fidelity opens its weights path with torch's loader: plain tensors, re-saved
    torch.save(state, buf)
    handling = "uint8, grey repeated to 3 channels, torch-fidelity's TF1-compatible bilinear resize to 299x299"
    return Extractor("inception", "inception", "inception-v3-compat", "2048", file_sha256(path), handling,
                     kwargs=lambda: {"feature_extractor_weights_path": io.BytesIO(buf.getvalue())},
                     prepare=_three_channels, check=_rgb_or_grey, batch_size=64)


def _load_state(path: str) -> dict:
    """A state dict of tensors from a .safetensors file or a torch.save file, read without unpickling anything."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(path)
        except Exception as e:
            raise ArtifactError(f"--weights {path}: cannot read safetensors ({str(e).splitlines()[0][:120]}); "
                                f"expected {INCEPTION_FILE}") from None
    from .torchfile import load_state
    return load_state(path)


@register_extractor("classifier", "classifier:PATH")
def _classifier(arg: str, weights: Optional[str]) -> Extractor:
    from . import artifacts
    from .build import classifier_from_artifact

    if not arg:
        raise UdiffError("--extractor classifier: give the classifier artifact, classifier:PATH (made by udiff train "
                         "on a recipe with [net] kind = \"classifier\")")
    if weights:
        raise UdiffError("--weights: applies to --extractor inception; a classifier's weights are in its artifact")
    art = artifacts.load(arg, "classifier")
    net, meta = classifier_from_artifact(art)
    shape = tuple(meta["shape"])

    def check(s):
        if tuple(s) != shape:
            raise DataError(f"--extractor classifier:{arg}: was trained on images of shape {shape}, not "
                            f"{tuple(s)}; use a classifier of these images")

    handling = f"native {'x'.join(map(str, shape))} uint8 mapped to [-1, 1] bin centres as in training, no resize"
    return Extractor(f"classifier:{arg}", "classifier", CLASSIFIER_NAME, "penultimate", art.meta["udiff.sha256"],
                     handling, kwargs=lambda: {"net": net}, check=check, batch_size=500, logits="logits")


def features(module, ext: Extractor, images: torch.Tensor, device="cpu") -> dict[str, torch.Tensor]:
    """Every layer the module was built with, (N, D) float32 on the CPU, of uint8 images (N, C, H, W),
    extracted by torch-fidelity."""
    cuda = torch.device(device).type == "cuda"
    data = _Images(images, ext.prepare)
    return get_featuresdict_from_dataset(data, module, ext.batch_size, cuda, save_cpu_ram=True, verbose=False)


class _Images(torch.utils.data.Dataset):
    """uint8 images as the torch Dataset torch-fidelity reads, one 3-D uint8 tensor per item."""

    def __init__(self, images, prepare):
        self.images, self.prepare = images, prepare

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.prepare(self.images[i:i + 1])[0]


# ---------------------------------------------------------------------------------------------------
# Image sets: data, a samples artifact, or a model's draws, produced chunk by chunk


@dataclass
class ImageSet:
    """Images to measure: `chunks(cuts)` yields uint8 (b, C, H, W) batches, items start..stop of each cut
    (start, stop); `n` images of `shape` in all, cut in batches of `batch` (distributed.batches)."""

    label: str                                   # what they are (a data source, a path)
    shape: tuple
    n: int
    chunks: Callable[[list], Iterable[torch.Tensor]]
    batch: int = 1000
    info: dict = field(default_factory=dict)     # how they were made (filled in by a model's draws)
    labels: Optional[torch.Tensor] = None        # int64 (n,): the class each image should show (for accuracy)


def image_set(label: str, images: Optional[torch.Tensor], n: Optional[int] = None, what: str = "holds",
              labels: Optional[torch.Tensor] = None) -> ImageSet:
    """The first `n` (default all) of uint8 `images` (N, C, H, W) and of their `labels`; None means the source
    held float data."""
    if images is None or images.dtype != torch.uint8 or images.ndim != 4:
        raise DataError(f"{label}: {what} no 8-bit images (uint8 N×C×H×W); FID and its kin compare images")
    if n is not None and n > len(images):
        raise DataError(f"-n {n}: {label} {what} only {len(images)} images")
    if labels is not None and (labels.dtype != torch.int64 or tuple(labels.shape) != (len(images),)):
        raise DataError(f"{label}: its labels are {labels.dtype} of shape {tuple(labels.shape)}, not one int64 per "
                        "image; write them with udiff sample --class/--labels")
    images = images[:n] if n is not None else images
    labels = labels[:n] if labels is not None and n is not None else labels
    return ImageSet(label, tuple(images.shape[1:]), len(images), lambda cuts: (images[a:b] for a, b in cuts),
                    labels=labels)


def drawn_image_set(label: str, shape: tuple, seeds, draw, batch_size: int, made: dict, progress=None) -> ImageSet:
    """Samples of a model drawn batch by batch while their features are extracted: no image is written, and
    at most one batch of float samples is held. `draw(seeds)` → (x float (B, *shape) in [-1, 1], used: what
    was run); `made` says how the samples are made (model, EMA), for the result, with `used` and the time."""
    from .data import to_uint8

    seeds = list(seeds)
    out = ImageSet(label, tuple(shape), len(seeds), None, batch_size)

    def chunks(cuts):
        import time
        seconds, used = 0.0, {}
        for a, b in cuts:
            t0 = time.perf_counter()
            x, used = draw(seeds[a:b])
            seconds += time.perf_counter() - t0
            if progress:
                progress(len(x))
            yield to_uint8(x)
        out.info = {"sampling": {**used, **made, "n": len(seeds), "seconds": round(seconds, 3)}}

    out.chunks = chunks
    return out


@dataclass
class Measured:
    """What `measure` got from one image set."""

    stats: "Stats"                        # feature statistics (and the features)
    images_sha256: str                    # of the images (uint8, in order)
    logits: Optional[torch.Tensor] = None  # (N, classes) when the module was built with its logits layer


def measure(module, ext: Extractor, images: ImageSet, device="cpu", world=None) -> Optional[Measured]:
    """Features of every image of the set (and logits, when the module has that layer), and the digest of the
    images.

    Under torchrun (`world`) each rank draws and measures its block of the set's batches, and rank 0 gathers
    the images and features in order: the same result as one process; None on the other ranks."""
    from . import distributed

    world = world or distributed.World()
    mine, layers = [], {}
    for chunk in images.chunks(distributed.batches(images.n, images.batch, world)):
        chunk = chunk.contiguous()
        mine.append(chunk)
        for name, value in features(module, ext, chunk, device).items():
            layers.setdefault(name, []).append(value)
    empty = torch.zeros((0,) + tuple(images.shape), dtype=torch.uint8)
    mine = torch.cat(mine) if mine else empty
    layers = {name: torch.cat(parts) for name, parts in layers.items()}
    if world.size > 1:
        if not layers:  # a rank without a batch: its (0, D) share of each layer, D from one blank image
            layers = {name: v[:0] for name, v in _blank(module, ext, images.shape, device).items()}
        mine = distributed.gather(mine)
        layers = {name: distributed.gather(v) for name, v in layers.items()}
        if not world.main:
            return None
    feats = layers.get(ext.layer, torch.zeros((0, 1)))
    return Measured(Stats.of(feats), hashlib.sha256(mine.reshape(-1).numpy().tobytes()).hexdigest(),
                    layers.get(ext.logits) if ext.logits else None)


def _blank(module, ext: Extractor, shape: tuple, device="cpu") -> dict[str, torch.Tensor]:
    """Every layer of one blank image: the layers' dimensions."""
    return features(module, ext, torch.zeros((1,) + tuple(shape), dtype=torch.uint8), device)



# ---------------------------------------------------------------------------------------------------
# Statistics and metrics


@dataclass
class Stats:
    """Feature statistics of one set of images: torch-fidelity's (mu, sigma) and, optionally, the features."""

    mu: np.ndarray                      # float32 (D,)
    sigma: np.ndarray                   # float64 (D, D)
    n: int
    feats: Optional[torch.Tensor] = None  # float32 (N, D): needed for KID and precision/recall

    @classmethod
    def of(cls, feats: torch.Tensor) -> "Stats":
        if len(feats) < 2:
            raise DataError(f"{len(feats)} image(s): a covariance needs at least 2")
        if not torch.isfinite(feats).all():
            raise NonFiniteResult("the extracted features are not finite (NaN or infinite values); nothing was written")
        s = fid_features_to_statistics(feats)
        return cls(s["mu"], s["sigma"], len(feats), feats)

    def sha256(self) -> str:
        """The reference statistics' digest (of mu and sigma; the same for raw data and its stats artifact)."""
        from .artifacts import digest
        return digest(self.tensors(with_features=False))

    def tensors(self, with_features: bool) -> dict[str, torch.Tensor]:
        out = {"mu": torch.from_numpy(self.mu), "sigma": torch.from_numpy(self.sigma)}
        if with_features:
            out["features"] = self.feats
        return out


def compare(samples: Stats, ref: Stats, metrics=("fid",)) -> dict:
    """The metrics of `samples` (torch-fidelity's input1, the generated set) against `ref` (input2, the real set).

    KID uses torch-fidelity's defaults (100 subsets of 1000, or of the smaller set's size when it is smaller;
    polynomial kernel), precision/recall its 3 nearest neighbours; both its rng seed 2020.
    """
    out = {}
    if "fid" in metrics:
        fid = fid_statistics_to_metric({"mu": samples.mu, "sigma": samples.sigma},
                                       {"mu": ref.mu, "sigma": ref.sigma}, False)[KEY_METRIC_FID]
        out["fid"] = fid
    if ("kid" in metrics or "prc" in metrics) and (samples.feats is None or ref.feats is None):
        raise ArtifactError("the reference statistics hold no features, which KID and precision/recall need; "
                            "re-create them with --save-ref and --metrics including kid or prc")
    if "kid" in metrics:
        size = min(KID_SUBSET_SIZE, samples.n, ref.n)
        kid = kid_features_to_metric(samples.feats, ref.feats, kid_subsets=KID_SUBSETS, kid_subset_size=size,
                                     rng_seed=RNG_SEED, verbose=False)
        out.update(kid_mean=kid[KEY_METRIC_KID_MEAN], kid_std=kid[KEY_METRIC_KID_STD], kid_subsets=KID_SUBSETS,
                   kid_subset_size=size)
    if "prc" in metrics:
        if min(samples.n, ref.n) <= PRC_NEIGHBORHOOD:
            raise DataError(f"precision/recall need more than {PRC_NEIGHBORHOOD} images in each set")
        prc = prc_features_to_metric(samples.feats, ref.feats, prc_neighborhood=PRC_NEIGHBORHOOD,
                                     save_cpu_ram=True, verbose=False)
        out.update(precision=prc[KEY_METRIC_PRECISION], recall=prc[KEY_METRIC_RECALL],
                   prc_neighborhood=PRC_NEIGHBORHOOD)
    if "kid" in metrics or "prc" in metrics:
        out["rng_seed"] = RNG_SEED
    bad = [k for k in ("fid", "kid_mean", "precision", "recall") if k in out and not np.isfinite(out[k])]
    if bad:
        raise NonFiniteResult(f"{bad[0]} is {out[bad[0]]}: the features are not finite (NaN or infinite values); "
                              "nothing was written")
    return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The share of items whose largest logit is their label, overall and per class (None for a class with no
    items), with the counts per class."""
    classes = logits.shape[1]
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise DataError(f"labels from {int(labels.min())} to {int(labels.max())}, but the classifier knows classes "
                        f"0 ... {classes - 1}; judge samples with a classifier of their classes")
    right = (logits.argmax(1) == labels).double()
    counts = torch.bincount(labels, minlength=classes)
    hits = torch.bincount(labels, weights=right, minlength=classes)
    per_class = [float(h / c) if c else None for h, c in zip(hits.tolist(), counts.tolist())]
    return {"accuracy": float(right.mean()), "accuracy_per_class": per_class, "n_per_class": counts.tolist()}


# ---------------------------------------------------------------------------------------------------
# The whole comparison


@dataclass
class Evaluation:
    record: dict                   # the result: metrics and what was measured (the JSON of udiff eval-fid)
    ref: Optional[Stats]           # the reference statistics (for --save-ref); None when no metric needs them
    ref_desc: Optional[dict]       # what they are of (a stats artifact's udiff.stats)


def evaluate(samples: ImageSet, ref: Optional[str], ext: Extractor, metrics=("fid",), device="cpu",
             world=None) -> Evaluation | None:
    """Compare an image set with REF (a data source, or a stats artifact path) in `ext`'s features, and judge
    its labels with `ext`'s classifier for `accuracy` (which alone needs no REF).
    Under torchrun (`world`) the ranks share the batches of each set (see `measure`); rank 0 returns the
    Evaluation of one process, the other ranks None."""
    import time

    t0 = time.perf_counter()
    ext.check(samples.shape)
    judged = "accuracy" in metrics
    if judged and ext.logits is None:
        raise UdiffError(f"--metrics accuracy: needs a classifier's predictions, which the {ext.kind} extractor "
                         "has not; use --extractor classifier:PATH (a classifier artifact from udiff train)")
    if judged and samples.labels is None:
        raise DataError(f"{samples.label}: its images carry no labels, so there is no class to judge; draw them "
                        "with udiff sample --class K or --labels LIST and pass that samples artifact")
    compared = [m for m in metrics if m in REF_METRICS]
    if compared and ref is None:
        raise UdiffError(f"--metrics {','.join(compared)}: compare with a reference; give --ref (a data source or a "
                         "stats artifact)")
    module = ext.build(device, with_logits=judged)
    ref_stats = ref_desc = None
    if compared:
        ref_stats, ref_desc = _reference(module, ext, ref, samples, device, world)
    got = measure(module, ext, samples, device, world)
    if got is None:  # not rank 0
        return None
    record = compare(got.stats, ref_stats, compared) if compared else {}
    if judged:
        record.update(accuracy(got.logits, samples.labels))
    if compared:
        record.update(n_ref=ref_stats.n, ref=ref, ref_source=ref_desc.get("source"), ref_sha256=ref_stats.sha256(),
                      feature_dim=int(ref_stats.mu.shape[0]))
    record.update({"n_samples": got.stats.n, "samples": samples.label, "samples_sha256": got.images_sha256,
                   "extractor": ext.name, "extractor_sha256": ext.sha256, "feature_layer": ext.layer,
                   "handling": ext.handling, "torch_fidelity_version": TORCH_FIDELITY_VERSION, **samples.info,
                   "seconds": round(time.perf_counter() - t0, 3), "device": str(device),
                   "world_size": world.size if world else 1})
    return Evaluation(record, ref_stats, ref_desc)


def _reference(module, ext: Extractor, ref: str, samples: ImageSet, device, world) -> tuple[Stats, dict]:
    """REF's statistics and what they are of: measured from a data source, or read from a stats artifact."""
    from . import data as D

    if D.is_source(ref):
        ref_images, ref_stats = image_set(ref, D.load(ref).images), None
        ref_shape = ref_images.shape
    else:
        ref_stats, ref_desc = load_stats(ref)
        check_compatible(ref_desc, ext, ref)
        ref_shape = tuple(ref_desc.get("shape", ()))
    if ref_shape != samples.shape:
        raise DataError(f"{samples.label}: images of shape {samples.shape}, but the reference {ref} holds images of "
                        f"shape {ref_shape}; compare images of one shape")
    if ref_stats is None:
        got = measure(module, ext, ref_images, device, world)
        ref_stats = got.stats if got is not None else None
        ref_desc = {"source": ref, "shape": list(ref_shape), "images_sha256": got and got.images_sha256,
                    "extractor": ext.name, "extractor_kind": ext.kind, "extractor_sha256": ext.sha256,
                    "feature_layer": ext.layer, "handling": ext.handling}
    return ref_stats, ref_desc


# ---------------------------------------------------------------------------------------------------
# The stats artifact


def save_stats(path: str, stats: Stats, description: dict, with_features: bool, result: Optional[dict] = None):
    """Write reference statistics as a `stats` artifact; `description` says what they are of (udiff.stats)."""
    from . import artifacts

    meta = {"udiff.stats": {**description, "n": stats.n, "ref_sha256": stats.sha256(),
                            "features": bool(with_features), "torch_fidelity_version": TORCH_FIDELITY_VERSION}}
    if result is not None:
        meta["udiff.result"] = result
    artifacts.save(path, stats.tensors(with_features), "stats", None, meta)


def load_stats(path: str) -> tuple[Stats, dict]:
    """Reference statistics from a `stats` artifact: (Stats, its udiff.stats description)."""
    from . import artifacts

    art = artifacts.load(path, "stats")
    mu, sigma = art.require("mu", "sigma")
    desc = art.json("udiff.stats", {})
    feats = art.tensors.get("features")
    n = int(desc.get("n", len(feats) if feats is not None else 0))
    return Stats(mu.numpy(), sigma.numpy(), n, feats), desc


def check_compatible(desc: dict, ext: Extractor, path: str):
    """A stats artifact is only comparable with features of the same extractor, weights and layer."""
    theirs = (desc.get("extractor_kind"), desc.get("extractor_sha256"), desc.get("feature_layer"))
    if theirs != (ext.kind, ext.sha256, ext.layer):
        raise ArtifactError(f"{path}: reference statistics of extractor {desc.get('extractor')!r} (weights sha256 "
                            f"{str(desc.get('extractor_sha256'))[:12]}..., layer {desc.get('feature_layer')}), not of "
                            f"{ext.name!r} ({ext.sha256[:12]}..., layer {ext.layer}); recompute them with this "
                            "extractor (--save-ref)")
