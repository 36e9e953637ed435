"""The model recipe: the sections of a diffusion model's experiment and the checks across them.

    [data]      where the training data comes from            (DataSpec)
    [basis]     the orthonormal basis the diffusion runs in   (kind = "pixel", ...)
    [prior]     the terminal distribution                     (kind = "standard", ...)
    [process]   the linear SDE per component                  (kind = "vp", ...)
    [schedule]  gamma(t) = -log SNR(t) per component           (kind = "vdm-linear" | "vp-linear" | "cosine", ...)
    [net]       the network                                   (kind = "unet" | "mlp" | "gaussian"; or "classifier")
    [train]     the optimisation loop                         (TrainSpec)
    [sample]    how `udiff sample` draws from the model       (SampleSpec)

Stdlib only: it must not import torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Optional

from .. import registry as REG
from ..errors import RecipeError
from .schema import (DEFAULT_KINDS, _build_section, _require, _suggest, _toml_value, opt, spec,
                     with_overrides)

KIND_SECTIONS = ("basis", "prior", "process", "schedule", "net")
PLAIN_SECTIONS = ("data", "train", "sample")
SECTIONS = ("data", "basis", "prior", "process", "schedule", "net", "train", "sample")


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
CLASSES_DOC = ("class-conditional with K classes (labels 0 ... K-1 from the data; K is the null class of [train] "
               "label_dropout); 0 = unconditional")


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
    classes: int = opt(0, doc=CLASSES_DOC, min=0)


@spec("net", "mlp")
class MLPSpec:
    """Residual MLP for vector data."""

    hidden: int = opt(256, doc="width of the hidden layers", min=1)
    depth: int = opt(4, doc="number of residual blocks", min=1)
    dropout: float = opt(0.0, doc="dropout probability", min=0.0, max=1.0)
    cond: str = opt("gamma", doc=COND_DOC, choices=NET_COND)
    precond: str = opt("auto", doc=PRECOND_DOC, choices=PRECONDS)
    sigma_data: float = opt(0.5, doc=SIGMA_DATA_DOC, min=0.0, min_open=True)
    classes: int = opt(0, doc=CLASSES_DOC, min=0)


@spec("net", "gaussian")
class GaussianNetSpec:
    """The exact denoiser for Gaussian data, fitted (mean, covariance) from the data, no gradient steps."""

    jitter: float = opt(0.0, doc="added to the covariance diagonal", min=0.0)
    classes: int = opt(0, doc="a Gaussian per class (the class-conditional exact denoiser; no label: their mixture); "
                              "0 = one Gaussian", min=0)


TEST_DOC = ('held-out labelled data for the test accuracy [default: the ":test" split of a ":train" source, else the '
            "last `holdout` fraction of the data]")
HOLDOUT_DOC = "fraction of the data held out when there is no test split"


@spec("net", "classifier")
class ClassifierSpec:
    """A small CNN classifier of clean labelled images, not a diffusion model: `udiff train` fits it by cross-entropy
    (AdamW, [train] steps, batch_size, lr with linear warm-up then cosine decay, weight_decay, grad_clip, seed;
    no EMA, no checkpoints) and writes a `classifier` artifact, whose penultimate features `udiff eval-fid
    --extractor classifier:PATH` compares."""

    channels: int = opt(32, doc="channels of the first of three stages (doubled at each 2x pooling)", min=1)
    features: int = opt(128, doc="width of the penultimate layer: the features eval-fid compares", min=2)
    dropout: float = opt(0.0, doc="dropout before the last layer", min=0.0, max=1.0)
    test: Optional[str] = opt(None, doc=TEST_DOC)
    holdout: float = opt(0.1, doc=HOLDOUT_DOC, min=0.0, max=0.5, min_open=True)


@spec("net", "noisy-classifier")
class NoisyClassifierSpec:
    """A noise-conditional classifier p(y | z_t) of the recipe's process and schedule, for classifier guidance
    (`udiff sample MODEL --classifier PATH --class K`): `udiff train` fits it by cross-entropy on noisy states of
    labelled data at random times ([train] steps, batch_size, lr with warm-up then cosine decay, weight_decay,
    grad_clip, seed; no EMA) and writes a `noisy-classifier` artifact with its accuracy per noise level."""

    channels: int = opt(32, doc="channels of the first resolution (the U-Net's residual blocks, no attention)", min=1)
    channel_mult: tuple[int, ...] = opt((1, 2, 2), doc="channel multiplier per resolution (2x down-sampling "
                                                       "between them)", min=1)
    num_blocks: int = opt(1, doc="residual blocks per resolution", min=1)
    dropout: float = opt(0.0, doc="dropout probability", min=0.0, max=1.0)
    test: Optional[str] = opt(None, doc=TEST_DOC)
    holdout: float = opt(0.1, doc=HOLDOUT_DOC, min=0.0, max=0.5, min_open=True)


WEIGHTINGS = REG.WEIGHTINGS.names()
PRECISIONS = ("auto", "fp32", "bf16")


@spec("train")
class TrainSpec:
    steps: int = opt(10000, doc="optimizer steps", min=0, max=10**9)
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
    log_every: int = opt(50, doc="one row of the training history (mean loss, lr, gradient norm, img/s) every N "
                                 "steps, stored in the checkpoint and the model (udiff plot history)", min=1)
    seed: int = opt(0, doc="seed of the run (data order, times, noise, dropout)", min=0, max=2**31 - 1)
    precision: str = opt("auto", doc="auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16",
                         choices=PRECISIONS)
    compile: Optional[bool] = opt(None, doc="torch.compile the network [default: on CUDA yes (the small "
                                            "networks are launch-bound without it), on the CPU no]")
    label_dropout: float = opt(0.0, doc="class-conditional nets: replace each label by the null class with this "
                                        "probability, so that the network is also unconditional (classifier-free "
                                        "guidance needs it; 0.1 is usual)", min=0.0, max=1.0)


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
        from . import from_dict as any_from_dict  # a target recipe goes through the same entry point

        d = self.to_dict()
        d[name].update({k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()})
        return any_from_dict(d, origin="recipe")

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


def model_from_dict(raw: dict, origin: str = "<recipe>", overrides=()) -> Recipe:
    """Validate a nested dict (parsed TOML or stored JSON) into a Recipe; errors name origin and key."""
    raw = with_overrides(raw, overrides, origin, _check_section_name)
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
    if getattr(sched, "kind", "") == "vdm-learned" and s["train"].weighting != "vlb" and net.kind != "gaussian":
        raise RecipeError("[train] weighting: a learned schedule ([schedule] kind = \"vdm-learned\") is trained "
                          f"by the bound; set weighting = \"vlb\" (got {s['train'].weighting!r})")
    if s["train"].label_dropout > 0 and not getattr(net, "classes", 0):
        raise RecipeError("[train] label_dropout: drops class labels, but the network is unconditional; set [net] "
                          "classes = K (the number of classes)")
    if s["train"].weighting == "vlb" and s["train"].times != "stratified":
        raise RecipeError("[train] times: the bound's estimator needs uniform times; set times = \"stratified\" "
                          "with weighting = \"vlb\"")


def _check_section_name(name: str, origin: str):
    if name not in SECTIONS:
        raise RecipeError(f"{origin}: [{name}]: unknown section{_suggest(name, SECTIONS)} "
                          f"(allowed: {', '.join(SECTIONS)})")


DEFAULT_KINDS.update({"basis": "pixel", "prior": "standard", "process": "vp", "schedule": "vdm-linear",
                 "net": "unet"})
