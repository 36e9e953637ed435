"""Recipes: TOML files turned into frozen dataclasses with every default filled in.

A recipe is the whole experiment, one section per part of the model (see the README's design notes):

    [data]      where the training data comes from            (DataSpec)
    [basis]     the orthonormal basis the diffusion runs in   (kind = "pixel", ...)
    [prior]     the terminal distribution                     (kind = "standard", ...)
    [process]   the linear SDE per component                  (kind = "vp", ...)
    [schedule]  gamma(t) = -log SNR(t) per component           (kind = "vdm-linear" | "vp-linear" | "cosine", ...)
    [net]       the epsilon-prediction network                (kind = "unet" | "mlp" | "gaussian")
    [train]     the optimisation loop                         (TrainSpec)
    [sample]    how `udiff sample` draws from the model       (SampleSpec)

Sections with a `kind` key are tables of small spec classes registered by name (`@spec("schedule",
"cosine")`); the other keys of such a section are the fields of the chosen class. Every value is checked
once, at load: unknown sections and keys, wrong types and out-of-range values raise `RecipeError` with a
message that names the file, section and key and says what is allowed. `--set section.key=value`
overrides are applied to the parsed TOML before that check, so they are validated the same way.

This module is stdlib-only (tomllib, or tomli before Python 3.11): it must not import torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from .errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

KIND_SECTIONS = ("basis", "prior", "process", "schedule", "net")
PLAIN_SECTIONS = ("data", "train", "sample")
SECTIONS = ("data", "basis", "prior", "process", "schedule", "net", "train", "sample")

_KINDS: dict[str, dict[str, type]] = {s: {} for s in KIND_SECTIONS}
_PLAIN: dict[str, type] = {}
_MISSING = dataclasses.MISSING


def opt(default=_MISSING, doc: str = "", **checks):
    """A recipe field: default, one-line documentation and checks (min, max, min_open, choices)."""
    meta = {"doc": doc, **checks}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta)


def spec(section: str, kind: Optional[str] = None):
    """Register a spec dataclass as `kind` of a kind-section, or as the class of a plain section."""

    def register(cls):
        cls = dataclass(frozen=True)(cls)
        if kind is None:
            _PLAIN[section] = cls
        else:
            _KINDS[section][kind] = cls
            cls.kind = kind
        cls.section = section
        return cls

    return register


def kinds(section: str) -> list[str]:
    """The registered kinds of a kind-section, sorted."""
    return sorted(_KINDS[section])


def spec_class(section: str, kind: Optional[str] = None) -> type:
    return _PLAIN[section] if kind is None else _KINDS[section][kind]


# ---------------------------------------------------------------------------------------------------
# Sections


@spec("data")
class DataSpec:
    source: str = opt(doc='data source: "digits", "fashion-mnist:train", "mnist:DIR:train", '
                          '"cifar10:TARBALL:train", "folder:DIR" or "tensors:FILE.safetensors"')
    hflip: bool = opt(False, doc="augment with random horizontal flips (images only)")
    limit: int = opt(0, doc="use only the first LIMIT items (0 = all)", min=0)


WHITEN_DOC = ("scale each component to unit data variance (S^2 = Sigma, mean removed): the prior becomes "
              "N(mu, U^T Sigma U); follows [prior] kind when left out")


@spec("basis", "pixel")
class PixelBasisSpec:
    """The identity basis: components are pixels (or vector entries)."""

    whiten: bool = opt(False, doc=WHITEN_DOC)


@spec("basis", "pca")
class PCABasisSpec:
    """Eigenvectors of the data covariance, in order of decreasing variance (fitted by fit-basis)."""

    whiten: bool = opt(False, doc=WHITEN_DOC)


@spec("basis", "dct")
class DCTBasisSpec:
    """Orthonormal DCT-II over height and width (over d for vectors)."""

    whiten: bool = opt(False, doc=WHITEN_DOC)


@spec("basis", "haar")
class HaarBasisSpec:
    """Orthonormal multi-level 2-D Haar wavelet (periodization; power-of-two image sizes)."""

    whiten: bool = opt(False, doc=WHITEN_DOC)
    levels: int = opt(0, doc="decomposition levels (0 = as many as the image size allows)", min=0)


@spec("prior", "standard")
class StandardPriorSpec:
    """N(0, I) in data space: unwhitened components, no mean removed."""


@spec("prior", "fitted")
class FittedPriorSpec:
    """N(mu, U^T Sigma U) in data space (GUD's variance-matching prior): whitened components."""


@spec("process", "vp")
class VPSpec:
    """Variance-preserving diffusion, k = 1: z_t = alpha_t x + sigma_t eps, alpha^2 + sigma^2 = 1."""


@spec("schedule", "vdm-linear")
class VDMLinearSpec:
    """VDM's fixed schedule: gamma(t) linear from gamma_min at t = 0 to gamma_max at t = 1."""

    gamma_min: float = opt(-13.3, doc="gamma = -log SNR at t = 0")
    gamma_max: float = opt(5.0, doc="gamma = -log SNR at t = 1")

    def __post_init__(self):
        _require(self.gamma_min < self.gamma_max, "schedule", "gamma_max",
                 f"must exceed gamma_min ({self.gamma_min}), got {self.gamma_max}")


@spec("schedule", "vp-linear")
class VPLinearSpec:
    """DDPM / VP-SDE linear beta(t) = beta_min + t (beta_max - beta_min); gamma = log expm1(int beta)."""

    beta_min: float = opt(0.1, doc="beta at t = 0", min=0.0)
    beta_max: float = opt(20.0, doc="beta at t = 1", min=0.0, min_open=True)
    t_min: float = opt(1e-5, doc="smallest t used in training and sampling (gamma(0) = -inf)",
                       min=0.0, max=0.5, min_open=True)

    def __post_init__(self):
        _require(self.beta_max >= self.beta_min, "schedule", "beta_max",
                 f"must be at least beta_min ({self.beta_min}), got {self.beta_max}")


@spec("schedule", "cosine")
class CosineSpec:
    """Cosine schedule (alpha = cos, sigma = sin of an angle linear in t), truncated to [gamma_min, gamma_max]."""

    gamma_min: float = opt(-15.0, doc="gamma = -log SNR at t = 0")
    gamma_max: float = opt(15.0, doc="gamma = -log SNR at t = 1")

    def __post_init__(self):
        _require(self.gamma_min < self.gamma_max, "schedule", "gamma_max",
                 f"must exceed gamma_min ({self.gamma_min}), got {self.gamma_max}")


@spec("schedule", "soft-conditioning")
class SoftConditioningSpec:
    """GUD's component-wise schedule: parallel log-SNR lines offset by an ordering label (GUD eq. 13)."""

    softness: float = opt(1.0, doc="1/a: 1 with order = variance is standard diffusion, smaller is more "
                                   "sequential, 0 is autoregressive in `order`", min=0.0)
    order: tuple[str, ...] = opt(("variance",), doc="ordering label(s), generation order (lower first): "
                                                     "variance, frequency, level, row, column, rank",
                                 choices=("variance", "frequency", "level", "row", "column", "rank"))
    order_weights: Optional[tuple[float, ...]] = opt(None, doc="weight of each label in `order` [default: 1 each]")
    gamma_denoise: float = opt(-13.3, doc="gamma of the last-generated component at t = 0")
    gamma_noise: float = opt(10.0, doc="gamma of the first-generated component at t = 1")
    clip: bool = opt(True, doc="hold every component between the two targets (frozen outside its window)")
    softness_range: Optional[tuple[float, ...]] = opt(None, doc="train over softness drawn uniformly from "
                                                                "[lo, hi] (needs [net] cond = \"gamma-map\")",
                                                      min=0.0, min_open=True, length=2)

    def __post_init__(self):
        _require(self.gamma_denoise < self.gamma_noise, "schedule", "gamma_noise",
                 f"must exceed gamma_denoise ({self.gamma_denoise}), got {self.gamma_noise}")
        _require(self.order_weights is None or len(self.order_weights) == len(self.order), "schedule",
                 "order_weights", f"needs one weight per order label ({len(self.order)})")
        _require(len(set(self.order)) == len(self.order), "schedule", "order", "lists a label twice")
        _require(self.softness_range is None or self.softness_range[0] <= self.softness_range[1], "schedule",
                 "softness_range", "must be [lo, hi] with lo <= hi")


NET_COND = ("gamma", "t", "gamma-map")
COND_DOC = "noise conditioning: gamma (mean -log SNR), t, or gamma-map (the whole gamma vector as input channels)"


@spec("net", "unet")
class UNetSpec:
    """DDPM++-shaped U-Net for images. Keys left out are taken from the preset."""

    preset: str = opt("auto", doc='"ddpmpp" (EDM\'s CIFAR-10 network), "small-28", "tiny-8", or "auto" '
                                   "(by image size)", choices=("auto", "ddpmpp", "small-28", "tiny-8"))
    channels: Optional[int] = opt(None, doc="base channel count", min=1)
    channel_mult: Optional[tuple[int, ...]] = opt(None, doc="channel multiplier per resolution", min=1)
    num_blocks: Optional[int] = opt(None, doc="residual blocks per resolution", min=1)
    attn_resolutions: Optional[tuple[int, ...]] = opt(None, doc="resolutions with self-attention", min=1)
    dropout: Optional[float] = opt(None, doc="dropout probability", min=0.0, max=1.0)
    cond: str = opt("gamma", doc=COND_DOC, choices=NET_COND)


@spec("net", "mlp")
class MLPSpec:
    """Residual MLP for vector data."""

    hidden: int = opt(256, doc="width of the hidden layers", min=1)
    depth: int = opt(4, doc="number of residual blocks", min=1)
    dropout: float = opt(0.0, doc="dropout probability", min=0.0, max=1.0)
    cond: str = opt("gamma", doc=COND_DOC, choices=NET_COND)


@spec("net", "gaussian")
class GaussianNetSpec:
    """The exact denoiser for Gaussian data, fitted (mean, covariance) from the data, no gradient steps."""

    jitter: float = opt(0.0, doc="added to the covariance diagonal", min=0.0)


WEIGHTINGS = ("uniform", "vlb", "min-snr")
PRECISIONS = ("auto", "fp32", "bf16")


@spec("train")
class TrainSpec:
    steps: int = opt(10000, doc="optimizer steps", min=0)
    batch_size: int = opt(128, doc="images per step", min=1)
    lr: float = opt(2e-4, doc="peak learning rate (AdamW)", min=0.0, min_open=True)
    weight_decay: float = opt(0.0, doc="AdamW weight decay", min=0.0)
    betas: tuple[float, ...] = opt((0.9, 0.999), doc="AdamW betas", min=0.0, max=1.0, length=2)
    adam_eps: float = opt(1e-8, doc="AdamW epsilon", min=0.0, min_open=True)
    warmup: int = opt(1000, doc="linear learning-rate warm-up, in steps", min=0)
    grad_clip: float = opt(1.0, doc="clip the gradient norm to this (0 = off)", min=0.0)
    ema: float = opt(0.9999, doc="EMA decay of the weights", min=0.0, max=1.0)
    ema_warmup: bool = opt(True, doc="EMA decay min(ema, (1+step)/(10+step)) early on")
    weighting: str = opt("uniform", doc="epsilon-MSE weighting: uniform, vlb (1/2 gamma'), min-snr "
                                       "(min(SNR, 5)/SNR)", choices=WEIGHTINGS)
    checkpoint_every: int = opt(1000, doc="write a resumable checkpoint every N steps (0 = only at the end)",
                                min=0)
    seed: int = opt(0, doc="seed of the run (data order, times, noise, dropout)", min=0, max=2**31 - 1)
    precision: str = opt("auto", doc="auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16",
                         choices=PRECISIONS)
    compile: bool = opt(False, doc="torch.compile the network")


SAMPLERS = ("ancestral", "ddim", "em", "heun")
GRIDS = ("uniform", "quadratic", "edm")


@spec("sample")
class SampleSpec:
    sampler: str = opt("ancestral", doc="ancestral (VDM), em (Euler-Maruyama), ddim, heun (PF-ODE)",
                       choices=SAMPLERS)
    steps: Optional[int] = opt(None, doc="steps from t = 1 to t_end [default: the sampler's]", min=1)
    grid: Optional[str] = opt(None, doc="time grid: uniform, quadratic or edm [default: the sampler's]",
                              choices=GRIDS)
    rho: float = opt(7.0, doc="exponent of the edm grid", min=0.0, min_open=True)
    eta: float = opt(0.0, doc="DDIM stochasticity (0 = deterministic, 1 = ancestral)", min=0.0, max=1.0)
    t_end: Optional[float] = opt(None, doc="last time before the final denoising step [default: the "
                                           "schedule's t_min]", min=0.0, max=1.0)
    denoise: bool = opt(True, doc="finish with a denoising step (one more network evaluation)")
    batch_size: int = opt(256, doc="samples per batch (does not change the samples)", min=1)
    ema: bool = opt(True, doc="use the EMA weights")
    softness: Optional[float] = opt(None, doc="soft-conditioning schedules: sample along this softness "
                                              "[default: the schedule's]", min=0.0)


def _require(ok: bool, section: str, key: str, msg: str):
    if not ok:
        raise RecipeError(f"[{section}] {key}: {msg}")


# ---------------------------------------------------------------------------------------------------
# The recipe


@dataclass(frozen=True)
class Recipe:
    data: DataSpec
    basis: Any
    prior: Any
    process: Any
    schedule: Any
    net: Any
    train: TrainSpec
    sample: SampleSpec

    def to_dict(self) -> dict:
        """Plain nested dict (kind sections carry their `kind`); the inverse of `from_dict`."""
        out = {}
        for name in SECTIONS:
            sec = getattr(self, name)
            d = {"kind": sec.kind} if name in KIND_SECTIONS else {}
            for f in fields(sec):
                v = getattr(sec, f.name)
                d[f.name] = list(v) if isinstance(v, tuple) else v
            out[name] = d
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): what artifacts store as `udiff.recipe`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def with_section(self, name: str, **changes) -> "Recipe":
        """A copy with fields of one section replaced (values are re-validated)."""
        d = self.to_dict()
        d[name].update({k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()})
        return from_dict(d, origin="recipe")

    def toml(self) -> str:
        """The recipe as TOML text (None-valued keys are left out: they mean 'the default')."""
        lines = []
        for name, sec in self.to_dict().items():
            lines.append(f"[{name}]")
            for k, v in sec.items():
                if v is not None:
                    lines.append(f"{k} = {_toml_value(v)}")
            lines.append("")
        return "\n".join(lines)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def load(path: str, overrides: tuple[str, ...] | list[str] = ()) -> Recipe:
    """Read a TOML recipe, apply `section.key=value` overrides, validate and fill in defaults."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except IsADirectoryError:
        raise RecipeError(f"{path}: is a directory, expected a TOML recipe file") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file; expected a TOML recipe") from None
    return from_dict(raw, origin=path, overrides=overrides)


def loads(text: str, overrides=(), origin: str = "<recipe>") -> Recipe:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{origin}: not valid TOML ({e})") from None
    return from_dict(raw, origin=origin, overrides=overrides)


def from_json(text: str, origin: str, overrides=()) -> Recipe:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecipeError(f"{origin}: recipe metadata is not valid JSON ({e})") from None
    return from_dict(raw, origin=origin, overrides=overrides)


def parse_override(item: str) -> tuple[str, str, Any]:
    """`section.key=value` → (section, key, value); the value is read as TOML, else taken as a string."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise RecipeError(f"--set {item}: expected section.key=value, e.g. --set train.steps=2000")
    lhs, text = item.split("=", 1)
    section, key = (s.strip() for s in lhs.split(".", 1))
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return section, key, value


def from_dict(raw: dict, origin: str = "<recipe>", overrides=()) -> Recipe:
    """Validate a nested dict (parsed TOML or stored JSON) into a Recipe; errors name origin and key."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{origin}: expected a table of sections")
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        section, key, value = parse_override(item)
        _check_section_name(section, f"--set {item}")
        raw.setdefault(section, {})[key] = value
    for name, sec in raw.items():
        _check_section_name(name, origin)
        if not isinstance(sec, dict):
            raise RecipeError(f"{origin}: [{name}] must be a table, got {sec!r}")
    try:
        _prior_follows_whitening(raw)
        built = {name: _build_section(name, raw.get(name, {}), origin) for name in SECTIONS}
        _cross_checks(built)
    except RecipeError as e:
        msg = str(e)
        raise RecipeError(msg if msg.startswith(origin + ":") else f"{origin}: {msg}") from None
    return Recipe(**built)


def _prior_follows_whitening(raw: dict) -> None:
    """[basis] whiten and [prior] kind say the same thing; either one alone sets both, and they must agree."""
    basis, prior = raw.setdefault("basis", {}), raw.setdefault("prior", {})
    has_whiten, has_prior = "whiten" in basis, "kind" in prior
    if has_prior and not has_whiten and prior["kind"] in ("standard", "fitted"):
        basis["whiten"] = prior["kind"] == "fitted"
    elif has_whiten and not has_prior and isinstance(basis["whiten"], bool):
        prior["kind"] = "fitted" if basis["whiten"] else "standard"
    elif has_whiten and has_prior and isinstance(basis["whiten"], bool) and prior["kind"] in ("standard", "fitted"):
        if basis["whiten"] != (prior["kind"] == "fitted"):
            raise RecipeError(f"[prior] kind: {prior['kind']!r} contradicts [basis] whiten = "
                              f"{str(basis['whiten']).lower()} (a fitted prior means whitened components); "
                              "give only one of them")


def _cross_checks(s: dict) -> None:
    sched, net = s["schedule"], s["net"]
    if getattr(sched, "softness_range", None) and getattr(net, "cond", "gamma-map") != "gamma-map":
        raise RecipeError("[schedule] softness_range: one network for several schedules must see the schedule; "
                          "set [net] cond = \"gamma-map\"")


def _check_section_name(name: str, origin: str):
    if name not in SECTIONS:
        raise RecipeError(f"{origin}: [{name}]: unknown section{_suggest(name, SECTIONS)} "
                          f"(allowed: {', '.join(SECTIONS)})")


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _build_section(name: str, table: dict, origin: str):
    table = dict(table)
    if name in KIND_SECTIONS:
        registry = _KINDS[name]
        default_kind = DEFAULT_KINDS[name]
        kind = table.pop("kind", default_kind)
        if not isinstance(kind, str) or kind not in registry:
            raise RecipeError(f"[{name}] kind: unknown kind {kind!r}{_suggest(str(kind), registry)} "
                              f"(allowed: {', '.join(sorted(registry))})")
        cls = registry[kind]
        label = f"[{name}] (kind {kind!r})"
    else:
        cls = _PLAIN[name]
        label = f"[{name}]"
    allowed = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in allowed:
            what = f"not a key of {label}" if allowed else f"{label} takes no keys"
            raise RecipeError(f"[{name}] {key}: {what}{_suggest(key, allowed)}"
                              + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
        f = next(f for f in fields(cls) if f.name == key)
        kwargs[key] = _coerce(value, f, name)
    for f in fields(cls):
        if f.name not in kwargs and f.default is _MISSING:
            raise RecipeError(f"[{name}] {f.name}: missing; it is required ({f.metadata.get('doc', '')})")
    return cls(**kwargs)


def _coerce(value, f, section: str):
    where = f"[{section}] {f.name}"
    tp = f.type if not isinstance(f.type, str) else eval(f.type, vars(typing), {**globals(), "Optional": Optional})
    optional = False
    origin_tp = typing.get_origin(tp)
    if origin_tp in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    if value is None:
        if optional:
            return None
        raise RecipeError(f"{where}: a value is required")
    meta = f.metadata
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            value = [value]  # a single value where a list is expected
        n = meta.get("length")
        if n is not None and len(value) != n:
            raise RecipeError(f"{where}: expected {n} values, got {len(value)}")
        return tuple(_check(_scalar(v, inner, where), meta, where) for v in value)
    return _check(_scalar(value, tp, where), meta, where)


def _tname(tp) -> str:
    return {float: "a number", int: "an integer", bool: "a boolean (true/false)", str: "a string"}.get(tp, str(tp))


def _scalar(v, tp, where):
    bad = RecipeError(f"{where}: expected {_tname(tp)}, got {v!r}")
    if tp is bool:
        if isinstance(v, bool):
            return v
        raise bad
    if isinstance(v, bool):
        raise bad
    if tp is float:
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
        raise bad
    if tp is int:
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise bad
    if tp is str:
        if isinstance(v, str):
            return v
        raise bad
    raise TypeError(f"unsupported recipe field type {tp}")  # pragma: no cover - a programming error


def _check(v, meta, where):
    choices = meta.get("choices")
    if choices is not None and v not in choices:
        raise RecipeError(f"{where}: {v!r} is not allowed{_suggest(str(v), choices)} "
                          f"(allowed: {', '.join(map(str, choices))})")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (v < lo or (meta.get("min_open") and v == lo)):
        raise RecipeError(f"{where}: must be {'>' if meta.get('min_open') else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise RecipeError(f"{where}: must be <= {hi}, got {v}")
    return v


DEFAULT_KINDS = {"basis": "pixel", "prior": "standard", "process": "vp", "schedule": "vdm-linear",
                 "net": "unet"}


def reference() -> str:
    """Every section, kind and key with its default and documentation (for man pages and `--help`)."""
    out = []
    for name in SECTIONS:
        classes = ([(k, _KINDS[name][k]) for k in kinds(name)] if name in KIND_SECTIONS
                   else [(None, _PLAIN[name])])
        for kind, cls in classes:
            head = f"[{name}]" + (f" kind = \"{kind}\"" if kind else "")
            if kind and kind == DEFAULT_KINDS[name]:
                head += "  (default)"
            out.append(head)
            if cls.__doc__ and kind:
                out.append(f"    {cls.__doc__.strip().splitlines()[0]}")
            for f in fields(cls):
                default = "required" if f.default is _MISSING else (
                    "varies" if f.default is None else _toml_value(f.default))
                out.append(f"    {f.name} = {default}  # {f.metadata.get('doc', '')}")
            out.append("")
    return "\n".join(out)
