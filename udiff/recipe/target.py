"""The target recipe (`udiff sample RECIPE`, no model): [target], a density known up to a constant (kind =
"gmm" | "grid" | "circle" | "separated" | "rings" | "funnel" | "fitted" | "python"), and [sample]
(TargetSampleSpec: the sampler and its budget). The math is in targets.py and dilation.py; build.build_target
maps these specs onto it. Stdlib only: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

from .. import registry as REG
from ..errors import RecipeError
from .model import SECTIONS, Recipe
from .schema import _build_section, _plain, _require, _suggest, opt, spec, with_overrides

# A target recipe has only these two sections; its [sample] is TargetSampleSpec. A [target] section is what
# makes a recipe a target recipe.
TARGET_SECTIONS = ("target", "sample")


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


def target_from_dict(raw: dict, origin: str, overrides=()) -> TargetRecipe:
    """A recipe with [target]: only [target] and [sample] (TargetSampleSpec) are allowed."""
    raw = with_overrides(raw, overrides, origin, _check_target_section)
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
