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

A target recipe (`udiff sample RECIPE`, no model: TargetRecipe) has only [target], a density known up to a
constant (kind = "gmm" | "grid" | "circle" | "separated" | "rings" | "funnel" | "fitted" | "python"), and [sample]
(TargetSampleSpec: dilation-path or baseline sampler and its budget). `load(path, target=True)` wants one.

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

from . import registry as REG
from .errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

KIND_SECTIONS = ("basis", "prior", "process", "schedule", "net")
PLAIN_SECTIONS = ("data", "train", "sample")
SECTIONS = ("data", "basis", "prior", "process", "schedule", "net", "train", "sample")

# A target recipe (`udiff sample RECIPE`: an unnormalized density, no model) has only these two sections;
# its [sample] is TargetSampleSpec. A [target] section is what makes a recipe a target recipe.
TARGET_SECTIONS = ("target", "sample")

_KINDS: dict[str, dict[str, type]] = {s: {} for s in KIND_SECTIONS + ("target",)}
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
    """Orthonormal multi-level 2-D Haar wavelet (periodization; sizes divisible by 2^levels)."""

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


@spec("process", "ve")
class VESpec:
    """Variance-exploding diffusion, k = 1: z_t = x + sigma_t eps, sigma^2 = e^gamma; the schedule's gamma range
    sets sigma_min and sigma_max (vdm-linear from 2 ln sigma_min to 2 ln sigma_max is SMLD's geometric sigma)."""


@spec("process", "sub-vp")
class SubVPSpec:
    """Sub-VP diffusion (Song et al. 2021), k = 1: VP's drift with less noise, sigma_t = 1 - e^{-B}."""


CLOCK_DOC = ("Phase-space processes run on the schedule's clock B(t) = int beta = softplus(gamma(t)); PSLD's "
             'constant beta = 8 is [schedule] kind = "vp-linear" with beta_min = beta_max = 8.')
KAPPA_DOC = "initial momentum variance in units of M (hybrid score matching; PSLD and CLD use 0.04)"


@spec("process", "psld")
class PSLDSpec:
    """Phase-space Langevin diffusion (PSLD), k = 2: position and momentum per component, friction on both."""

    gamma: float = opt(0.01, doc="Gamma, friction and noise on the position (0 is CLD)", min=0.0)
    nu: Optional[float] = opt(None, doc="nu, friction and noise on the momentum [default: Gamma + 2 sqrt(m_inv), "
                                        "critical damping]", min=0.0, min_open=True)
    m_inv: float = opt(4.0, doc="inverse mass M^-1 (the momentum's prior is N(0, M))", min=0.0, min_open=True)
    kappa: float = opt(0.04, doc=KAPPA_DOC, min=0.0)


@spec("process", "cld")
class CLDSpec:
    """Critically-damped Langevin diffusion (CLD) = PSLD with Gamma = 0: noise on the momentum only."""

    nu: Optional[float] = opt(None, doc="nu, friction and noise on the momentum [default: 2 sqrt(m_inv), "
                                        "critical damping]", min=0.0, min_open=True)
    m_inv: float = opt(4.0, doc="inverse mass M^-1 (the momentum's prior is N(0, M))", min=0.0, min_open=True)
    kappa: float = opt(0.04, doc=KAPPA_DOC, min=0.0)


@spec("process", "recipe")
class CompleteRecipeSpec:
    """Any constant D (PSD) and Q (skew): dz = -beta (D + Q) Sigma_inf^-1 z dt + sqrt(2 beta D) dw, per component."""

    D: tuple[tuple[float, ...], ...] = opt(((0.005, 0.0), (0.0, 0.50125)),
                                           doc="1x1 or 2x2 diffusion matrix per unit beta, symmetric positive "
                                               "semi-definite (default: PSLD, Gamma = 0.01)")
    Q: tuple[tuple[float, ...], ...] = opt(((0.0, -0.5), (0.5, 0.0)),
                                           doc="skew-symmetric matrix of D's size (1x1: [[0.0]])")
    mass: float = opt(0.25, doc="M, the momentum's stationary variance (2x2 only)", min=0.0, min_open=True)
    kappa: float = opt(0.04, doc=KAPPA_DOC + " (2x2 only)", min=0.0)

    def __post_init__(self):
        D, Q = self.D, self.Q
        k = len(D)
        _require(k in (1, 2) and all(len(row) == k for row in D), "process", "D",
                 f"must be a 1x1 or 2x2 matrix (a list of rows), got {_matrix(D)}")
        _require(len(Q) == k and all(len(row) == k for row in Q), "process", "Q",
                 f"must be {k}x{k} like D, got {_matrix(Q)}")
        scale = max(1.0, max(abs(v) for row in D + Q for v in row))
        tol = 1e-12 * scale
        symmetric = k == 1 or abs(D[0][1] - D[1][0]) <= tol
        det = D[0][0] * D[-1][-1] - D[0][-1] * D[-1][0] if k == 2 else D[0][0]
        _require(symmetric and D[0][0] >= 0 and D[-1][-1] >= 0 and det >= -tol, "process", "D",
                 f"must be symmetric positive semi-definite, got {_matrix(D)}")
        _require(all(abs(Q[i][j] + Q[j][i]) <= tol for i in range(k) for j in range(k)), "process", "Q",
                 f"must be skew-symmetric (Q = -Q^T, zero diagonal), got {_matrix(Q)}")
        # F = -(D + Q) Sigma_inf^-1 must be stable (eigenvalues with negative real part) to reach the prior
        inv = (1.0, 1.0 / self.mass)[:k]
        F = [[-(D[i][j] + Q[i][j]) * inv[j] for j in range(k)] for i in range(k)]
        stable = F[0][0] < 0 if k == 1 else (F[0][0] + F[1][1] < 0 and F[0][0] * F[1][1] - F[0][1] * F[1][0] > 0)
        _require(stable, "process", "D", "with this Q the process never reaches its stationary law N(0, "
                 "diag(1, mass)); D needs a positive momentum entry (or, for 1x1, a positive entry)")


def _matrix(m) -> str:
    return "[" + ", ".join("[" + ", ".join(f"{v:g}" for v in row) + "]" for row in m) + "]"


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


@spec("schedule", "vdm-learned")
class VDMLearnedSpec:
    """VDM's learned schedule: trainable endpoints and a monotone network between them (trained by the bound)."""

    gamma_min: float = opt(-13.3, doc="initial gamma(0) = -log SNR_max (trained)")
    gamma_max: float = opt(5.0, doc="initial gamma(1) = -log SNR_min (trained)")
    features: int = opt(1024, doc="width of the monotone network (all weights through |.|); 0 = linear in t "
                                  "between the endpoints", min=0)
    minimize_variance: bool = opt(False, doc="train the network (not the endpoints) to minimize the variance "
                                             "of the diffusion loss instead (VDM App. I.2)")

    def __post_init__(self):
        _require(self.gamma_min < self.gamma_max, "schedule", "gamma_max",
                 f"must exceed gamma_min ({self.gamma_min}), got {self.gamma_max}")
        _require(not self.minimize_variance or self.features > 0, "schedule", "minimize_variance",
                 "needs the monotone network (features > 0): a linear schedule has no shape to train")


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


NET_COND = REG.NET_COND.names()
COND_DOC = "noise conditioning: " + REG.NET_COND.doc()
PRECONDS = ("auto",) + REG.PRECONDS.names()
PRECOND_DOC = ("what the network predicts: auto (edm for processes with one number per component, eps for "
               "phase-space ones), " + REG.PRECONDS.doc())
SIGMA_DATA_DOC = "edm preconditioning: the data's standard deviation sigma_data (EDM: 0.5)"


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
    precond: str = opt("auto", doc=PRECOND_DOC, choices=PRECONDS)
    sigma_data: float = opt(0.5, doc=SIGMA_DATA_DOC, min=0.0, min_open=True)
    fourier_features: tuple[int, ...] = opt((), doc="exponents n of extra input channels sin and cos(2^n 2 pi "
                                                    "z) per state channel (VDM: [6, 7]); [] = none", min=0, max=16)


@spec("net", "mlp")
class MLPSpec:
    """Residual MLP for vector data."""

    hidden: int = opt(256, doc="width of the hidden layers", min=1)
    depth: int = opt(4, doc="number of residual blocks", min=1)
    dropout: float = opt(0.0, doc="dropout probability", min=0.0, max=1.0)
    cond: str = opt("gamma", doc=COND_DOC, choices=NET_COND)
    precond: str = opt("auto", doc=PRECOND_DOC, choices=PRECONDS)
    sigma_data: float = opt(0.5, doc=SIGMA_DATA_DOC, min=0.0, min_open=True)


@spec("net", "gaussian")
class GaussianNetSpec:
    """The exact denoiser for Gaussian data, fitted (mean, covariance) from the data, no gradient steps."""

    jitter: float = opt(0.0, doc="added to the covariance diagonal", min=0.0)


WEIGHTINGS = REG.WEIGHTINGS.names()
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
    weighting: str = opt("uniform", doc="epsilon-MSE weighting: " + REG.WEIGHTINGS.doc(), choices=WEIGHTINGS)
    times: str = opt("stratified", doc="training noise levels: " + REG.TIMES.doc(), choices=REG.TIMES.names())
    p_mean: float = opt(-1.2, doc="log-normal times: mean of ln sigma (EDM: -1.2)")
    p_std: float = opt(1.2, doc="log-normal times: standard deviation of ln sigma (EDM: 1.2)", min=0.0,
                       min_open=True)
    checkpoint_every: int = opt(1000, doc="write a resumable checkpoint every N steps (0 = only at the end)",
                                min=0)
    seed: int = opt(0, doc="seed of the run (data order, times, noise, dropout)", min=0, max=2**31 - 1)
    precision: str = opt("auto", doc="auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16",
                         choices=PRECISIONS)
    compile: Optional[bool] = opt(None, doc="torch.compile the network [default: on CUDA yes (the small "
                                            "networks are launch-bound without it), on the CPU no]")


SAMPLERS = REG.SAMPLERS.names()
GRIDS = REG.GRIDS.names()


@spec("sample")
class SampleSpec:
    sampler: Optional[str] = opt(None, doc="sampler [default: measured per process and schedule, see udiff "
                                           "sample --help]: " + REG.SAMPLERS.doc(), choices=SAMPLERS)
    steps: Optional[int] = opt(None, doc="steps from t = 1 to t_end [default: the sampler's, measured per "
                                         "process and schedule]", min=1)
    grid: Optional[str] = opt(None, doc="time grid [default: the sampler's]: " + REG.GRIDS.doc(), choices=GRIDS)
    rho: float = opt(7.0, doc="exponent of the edm grid", min=0.0, min_open=True)
    eta: float = opt(0.0, doc="DDIM stochasticity (0 = deterministic, 1 = ancestral)", min=0.0, max=1.0)
    t_end: Optional[float] = opt(None, doc="last time before the final denoising step [default: the "
                                           "schedule's t_min]", min=0.0, max=1.0)
    denoise: bool = opt(True, doc="finish with a denoising step (one more network evaluation)")
    rtol: float = opt(1e-5, doc="rk45: relative tolerance of the adaptive solver", min=0.0, min_open=True)
    atol: float = opt(1e-5, doc="rk45: absolute tolerance of the adaptive solver", min=0.0, min_open=True)
    sscs_score_time: str = opt("start", doc="sscs: evaluate the score at the step's start (as the CLD/PSLD code) "
                                            "or its midpoint", choices=REG.SSCS_SCORE_TIMES)
    s_churn: float = opt(0.0, doc="edm sampler: EDM's S_churn, the stochasticity (0 = deterministic Heun)", min=0.0)
    s_tmin: float = opt(0.0, doc="edm sampler: churn only where sigma/alpha >= s_tmin", min=0.0)
    s_tmax: Optional[float] = opt(None, doc="edm sampler: churn only where sigma/alpha <= s_tmax [default: no "
                                            "limit]", min=0.0)
    s_noise: float = opt(1.0, doc="edm sampler: scale of the noise added back (EDM's S_noise)", min=0.0)
    batch_size: int = opt(256, doc="samples per batch (does not change the samples)", min=1)
    ema: bool = opt(True, doc="use the EMA weights")
    softness: Optional[float] = opt(None, doc="soft-conditioning schedules: sample along this softness "
                                              "[default: the schedule's]", min=0.0)


# ---------------------------------------------------------------------------------------------------
# Target recipes (`udiff sample RECIPE`): [target] is a density known up to a constant, [sample] its sampler.
# The math is in targets.py and dilation.py; build.build_target maps these specs onto it.

UNEQUAL_DOC = "[default: proportional to 1, 2, ..., K: unequal on purpose]"


@spec("target", "gmm")
class GMMTargetSpec:
    """Gaussian mixture given in full: means (K x d), weights (K), and stds (K, isotropic) or covs (K x d x d)."""

    means: tuple[tuple[float, ...], ...] = opt(doc="component means: K lists of d numbers")
    weights: Optional[tuple[float, ...]] = opt(None, doc="component weights, normalized [default: equal]",
                                               min=0.0, min_open=True)
    stds: Optional[tuple[float, ...]] = opt(None, doc="isotropic standard deviation of each component "
                                                      "[default: 1 each]", min=0.0, min_open=True)
    covs: Optional[tuple[tuple[tuple[float, ...], ...], ...]] = opt(
        None, doc="full covariance of each component: K symmetric positive definite d x d matrices (instead of stds)")

    def __post_init__(self):
        k = len(self.means)
        d = len(self.means[0]) if k else 0
        _require(k >= 1 and d >= 1 and all(len(m) == d for m in self.means), "target", "means",
                 "must be K lists of d numbers each, e.g. [[0.0, 0.0], [4.0, 4.0]]")
        for key in ("weights", "stds"):
            v = getattr(self, key)
            _require(v is None or len(v) == k, "target", key, f"needs one value per mean ({k}), got {len(v or ())}")
        _require(self.stds is None or self.covs is None, "target", "covs", "give either stds or covs, not both")
        _require(self.covs is None or (len(self.covs) == k and all(len(c) == d and all(len(r) == d for r in c)
                                                                   for c in self.covs)),
                 "target", "covs", f"needs {k} matrices of {d}x{d}, one per mean")


@spec("target", "grid")
class GridTargetSpec:
    """2-D grid of size x size Gaussian modes centred on the origin, unequally weighted (a hard case)."""

    size: int = opt(3, doc="modes per side", min=1, max=100)
    spacing: float = opt(4.0, doc="distance between neighbouring modes", min=0.0, min_open=True)
    std: float = opt(0.5, doc="standard deviation of every mode", min=0.0, min_open=True)
    weights: Optional[tuple[float, ...]] = opt(None, doc="one weight per mode, row by row " + UNEQUAL_DOC,
                                               min=0.0, min_open=True)

    def __post_init__(self):
        _require(self.weights is None or len(self.weights) == self.size ** 2, "target", "weights",
                 f"a {self.size}x{self.size} grid has {self.size ** 2} modes; give one weight each")


@spec("target", "circle")
class CircleTargetSpec:
    """2-D Gaussian modes equally spaced on a circle around the origin, unequally weighted (a hard case)."""

    modes: int = opt(9, doc="number of modes", min=1, max=1000)
    radius: float = opt(5.0, doc="distance of every mode from the origin", min=0.0, min_open=True)
    std: float = opt(0.5, doc="standard deviation of every mode", min=0.0, min_open=True)
    weights: Optional[tuple[float, ...]] = opt(None, doc="one weight per mode, counter-clockwise from the positive "
                                                         "x axis " + UNEQUAL_DOC, min=0.0, min_open=True)

    def __post_init__(self):
        _require(self.weights is None or len(self.weights) == self.modes, "target", "weights",
                 f"needs one weight per mode ({self.modes})")


@spec("target", "separated")
class SeparatedTargetSpec:
    """d-dimensional mixture of far-apart Gaussian modes, at +-distance along the first coordinate axes."""

    dim: int = opt(10, doc="dimension d", min=1)
    modes: int = opt(4, doc="number of modes (at most 2 d)", min=1)
    distance: float = opt(8.0, doc="distance of every mode from the origin (modes are >= distance * sqrt(2) apart)",
                          min=0.0, min_open=True)
    std: float = opt(1.0, doc="standard deviation of every mode", min=0.0, min_open=True)
    weights: Optional[tuple[float, ...]] = opt(None, doc="one weight per mode " + UNEQUAL_DOC, min=0.0,
                                               min_open=True)

    def __post_init__(self):
        _require(self.modes <= 2 * self.dim, "target", "modes",
                 f"at most 2 * dim = {2 * self.dim} modes fit on the axes; raise dim or lower modes")
        _require(self.weights is None or len(self.weights) == self.modes, "target", "weights",
                 f"needs one weight per mode ({self.modes})")


@spec("target", "rings")
class RingsTargetSpec:
    """2-D concentric rings: |x| ~ N(radius, std^2) on each ring, angle uniform."""

    radii: tuple[float, ...] = opt((2.0, 4.0, 6.0), doc="ring radii", min=0.0, min_open=True)
    std: float = opt(0.2, doc="radial standard deviation of every ring", min=0.0, min_open=True)
    weights: Optional[tuple[float, ...]] = opt(None, doc="one weight per ring " + UNEQUAL_DOC, min=0.0,
                                               min_open=True)

    def __post_init__(self):
        _require(self.weights is None or len(self.weights) == len(self.radii), "target", "weights",
                 f"needs one weight per radius ({len(self.radii)})")


@spec("target", "funnel")
class FunnelTargetSpec:
    """Neal's funnel: v ~ N(0, scale^2), the other d - 1 coordinates ~ N(0, e^v)."""

    dim: int = opt(10, doc="dimension d (v and d - 1 others)", min=2)
    scale: float = opt(3.0, doc="standard deviation of v", min=0.0, min_open=True)


@spec("target", "fitted")
class FittedTargetSpec:
    """Gaussian mixture fitted by EM to a data set, on its `dims` leading components, centred (exact samples)."""

    data: str = opt(doc='data source, as in [data] source: "digits", "fashion-mnist:train", "tensors:FILE", ...')
    components: int = opt(8, doc="mixture components", min=1)
    dims: int = opt(8, doc="coordinates: the DIMS highest-variance components (PCA, or of `basis`)", min=1)
    basis: Optional[str] = opt(None, doc="basis artifact from udiff fit-basis to take the components from "
                                         "[default: PCA of the data]")
    covariance: str = opt("full", doc="covariance of each component: full or diag", choices=("full", "diag"))
    iterations: int = opt(100, doc="EM iterations", min=0)
    seed: int = opt(0, doc="seed of the k-means++ initialization of EM", min=0)
    limit: int = opt(0, doc="use only the first LIMIT items (0 = all)", min=0)


@spec("target", "python")
class PythonTargetSpec:
    """Any log-density: a Python function returning log pi(x) (up to a constant) for a batch x of shape (N, dim)."""

    function: str = opt(doc='"module:function", importable from the current directory or PYTHONPATH')
    dim: int = opt(doc="dimension d of x", min=1)
    exact: Optional[str] = opt(None, doc='"module:function" f(n, generator) -> (n, dim) tensor of exact draws, '
                                         "for the metrics [default: none]")

    def __post_init__(self):
        for key in ("function", "exact"):
            v = getattr(self, key)
            mod, _, name = (v or "m:f").partition(":")
            _require(bool(mod and name), "target", key, f'expected "module:function", got {v!r}')


TARGET_SAMPLERS = REG.TARGET_SAMPLERS.names()
LAMBDA_GRIDS = REG.LAMBDA_GRIDS.names()


@dataclass(frozen=True)
class TargetSampleSpec:
    """Which sampler draws from the target, and its budget of target-gradient evaluations per sample."""

    sampler: str = opt("dilation-smc", doc=REG.TARGET_SAMPLERS.doc(), choices=TARGET_SAMPLERS)
    steps: int = opt(1000, doc="target-gradient evaluations per sample: the same budget for every sampler", min=1)
    levels: int = opt(100, doc="lambda levels from lambda_min to 1 (dilation, convolution-mc)", min=1)
    lambda_min: float = opt(1e-4, doc="first lambda of the path (lambda = 0 is a Dirac at the origin); any "
                                      "float > 0, 1e-300 included (convolution-mc starts at 1e-6 at least)",
                            min=0.0, max=1.0, min_open=True)
    lambda_grid: str = opt("geometric", doc="spacing of the levels in t from 0 to 1: " + REG.LAMBDA_GRIDS.doc(),
                           choices=LAMBDA_GRIDS)
    step_size: float = opt(0.05, doc="Langevin step h at lambda = 1; at level lambda of the dilation path the "
                                     "step is h * lambda", min=0.0, min_open=True)
    mala: bool = opt(False, doc="Metropolis-adjust every annealing step of the dilation path (MALA)")
    target_accept: Optional[float] = opt(None, doc="adapt each sample's step towards this MALA acceptance rate, "
                                                   "e.g. 0.574 [default: fixed step]", min=0.0, max=1.0,
                                         min_open=True)
    final_steps: int = opt(0, doc="MALA steps at lambda = 1 after the annealing (counted in steps)", min=0)
    mc_samples: int = opt(16, doc="importance samples per score estimate (convolution-mc)", min=1)
    cess: float = opt(0.5, doc="dilation-smc: the pilot's levels lower the tilt c as far as keeps this "
                               "conditional effective sample size of their weights (bisection); the other "
                               "populations re-space that path into as many levels as steps pays for",
                      min=0.0, max=1.0, min_open=True)
    moves: int = opt(2, doc="dilation-smc: MALA moves per level (their step adapts to target_accept [default "
                            "0.574])", min=1)
    resample_ess: float = opt(0.5, doc="dilation-smc: resample (systematic) a population whose effective sample "
                                       "size falls below this fraction", min=0.0, max=1.0)
    populations: int = opt(10, doc="dilation-smc: blocks of seeds, each an SMC run; the first (the pilot) adapts "
                                   "the path, the spread of the others' log Z gives its standard error", min=1)
    c0: Optional[float] = opt(None, doc="dilation-smc: the first level's tilt c (y ~ N(0, I/c0)) [default: the "
                                        "smallest 4^k, k from 0, whose first weights keep an ESS of 0.1]",
                              min=0.0, min_open=True)
    batch_size: int = opt(100000, doc="samples per batch (does not change the samples); dilation-smc: particles "
                                      "per target evaluation", min=1)

    section = "sample"

    def __post_init__(self):
        _require(self.target_accept is None or self.target_accept < 1.0, "sample", "target_accept",
                 f"must be < 1, got {self.target_accept}")
        _require(self.cess < 1.0, "sample", "cess", f"must be < 1 (1 would never lower the tilt), got {self.cess}")


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


def _plain(v):
    """Tuples (nested too) → lists, for dicts and JSON."""
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


@dataclass(frozen=True)
class TargetRecipe:
    """A target recipe: [target] (a density known up to a constant) and [sample] (TargetSampleSpec), no model."""

    target: Any
    sample: TargetSampleSpec

    def to_dict(self) -> dict:
        out = {name: {f.name: _plain(getattr(getattr(self, name), f.name)) for f in fields(getattr(self, name))}
               for name in TARGET_SECTIONS}
        return {"target": {"kind": self.target.kind, **out["target"]}, "sample": out["sample"]}

    # JSON, TOML and with_section only go through to_dict / from_dict, which dispatch on [target]
    to_json = Recipe.to_json
    with_section = Recipe.with_section
    toml = Recipe.toml


def load(path: str, overrides: tuple[str, ...] | list[str] = (), target: Optional[bool] = False) -> Recipe:
    """Read a TOML recipe, apply `section.key=value` overrides, validate and fill in defaults.

    `target`: False (the default) wants a model recipe, True a target recipe (with [target]; returns a
    TargetRecipe), None either.
    """
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
    if target is not None and isinstance(raw, dict) and ("target" in raw) != target:
        if target:
            raise RecipeError(f"{path}: has no [target] section; `udiff sample` takes a model artifact (from udiff "
                              "train) or a target recipe whose [target] gives the density to sample")
        raise RecipeError(f"{path}: is a target recipe ([target]: a density to sample, no model); run "
                          f"`udiff sample {path} -n N -o SAMPLES`")
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
    if "target" in raw:
        return _target_from_dict(raw, origin, overrides)
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


def _target_from_dict(raw: dict, origin: str, overrides=()) -> TargetRecipe:
    """A recipe with [target]: only [target] and [sample] (TargetSampleSpec) are allowed."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        section, key, value = parse_override(item)
        _check_target_section(section, f"--set {item}")
        raw.setdefault(section, {})[key] = value
    for name, sec in raw.items():
        _check_target_section(name, origin)
        if not isinstance(sec, dict):
            raise RecipeError(f"{origin}: [{name}] must be a table, got {sec!r}")
    try:
        target = _build_section("target", raw["target"], origin)
        sample = _build_section("sample", raw.get("sample", {}), origin, cls=TargetSampleSpec)
    except RecipeError as e:
        msg = str(e)
        raise RecipeError(msg if msg.startswith(origin + ":") else f"{origin}: {msg}") from None
    return TargetRecipe(target, sample)


def _check_target_section(name: str, origin: str):
    if name not in TARGET_SECTIONS:
        why = "; a target recipe describes a density, not a model" if name in SECTIONS else ""
        raise RecipeError(f"{origin}: [{name}]: not a section of a target recipe{_suggest(name, TARGET_SECTIONS)}"
                          f"{why} (allowed: {', '.join(TARGET_SECTIONS)})")


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
    if getattr(sched, "kind", "") == "vdm-learned" and s["train"].weighting != "vlb" and net.kind != "gaussian":
        raise RecipeError("[train] weighting: a learned schedule ([schedule] kind = \"vdm-learned\") is trained "
                          f"by the bound; set weighting = \"vlb\" (got {s['train'].weighting!r})")
    if s["train"].weighting == "vlb" and s["train"].times != "stratified":
        raise RecipeError("[train] times: the bound's estimator needs uniform times; set times = \"stratified\" "
                          "with weighting = \"vlb\"")


def _check_section_name(name: str, origin: str):
    if name not in SECTIONS:
        raise RecipeError(f"{origin}: [{name}]: unknown section{_suggest(name, SECTIONS)} "
                          f"(allowed: {', '.join(SECTIONS)})")


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _build_section(name: str, table: dict, origin: str, cls: Optional[type] = None):
    table = dict(table)
    if name in _KINDS:
        registry = _KINDS[name]
        default_kind = DEFAULT_KINDS.get(name)  # [target] has no default kind
        kind = table.pop("kind", default_kind)
        if kind is None:
            raise RecipeError(f"[{name}] kind: missing; say which {name} (allowed: {', '.join(sorted(registry))})")
        if not isinstance(kind, str) or kind not in registry:
            raise RecipeError(f"[{name}] kind: unknown kind {kind!r}{_suggest(str(kind), registry)} "
                              f"(allowed: {', '.join(sorted(registry))})")
        cls = registry[kind]
        label = f"[{name}] (kind {kind!r})"
    else:
        cls = cls or _PLAIN[name]
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
        return _rows(value, inner, meta, where)
    return _check(_scalar(value, tp, where), meta, where)


def _rows(value, inner, meta, where):
    """The entries of a list whose items have type `inner`: scalars, or rows again (matrices, lists of matrices)."""
    if typing.get_origin(inner) is tuple:  # a matrix: a list of rows
        if not all(isinstance(row, (list, tuple)) for row in value):
            raise RecipeError(f"{where}: expected a list of rows, e.g. [[1.0, 0.0], [0.0, 1.0]], got {value!r}")
        return tuple(_rows(row, typing.get_args(inner)[0], meta, where) for row in value)
    return tuple(_check(_scalar(v, inner, where), meta, where) for v in value)


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
    out += ["Target recipes (udiff sample RECIPE): a [target] section instead of a model; only [target] and "
            "[sample] are allowed.", ""]
    for kind, cls in [(k, _KINDS["target"][k]) for k in kinds("target")] + [(None, TargetSampleSpec)]:
        out.append(f'[target] kind = "{kind}"' if kind else "[sample]  (of a target recipe)")
        out.append(f"    {cls.__doc__.strip().splitlines()[0]}")
        for f in fields(cls):
            default = "required" if f.default is _MISSING else (
                "none" if f.default is None else _toml_value(f.default))
            out.append(f"    {f.name} = {default}  # {f.metadata.get('doc', '')}")
        out.append("")
    return "\n".join(out)
