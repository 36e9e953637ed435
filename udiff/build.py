"""The one bridge from recipe specs to objects: a table per section, spec class → constructor.

Adding a basis, process, schedule or network is one spec class in recipe.py, one class in its math
module and one line in a table here. Math modules never see recipe dataclasses.
"""

from __future__ import annotations

import json
import math

from . import recipe as R
import torch

from .basis import BASES, PCABasis
from .errors import RecipeError
from .registry import PRECONDS, WEIGHTINGS
from .phase_space import CompleteRecipe, psld
from .process import VE, VP, SubVP
from .schedule import Cosine, SoftConditioning, VDMLearned, VDMLinear, VPLinear


def fields_of(spec) -> dict:
    """A spec's fields as keyword arguments."""
    import dataclasses

    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


PROCESSES = {  # [process] kind → constructor taking the spec's fields
    "vp": VP,
    "ve": VE,
    "sub-vp": SubVP,
    "psld": psld,
    "cld": lambda nu, m_inv, kappa: psld(0.0, nu, m_inv, kappa),
    "recipe": CompleteRecipe,
}

def _soft_conditioning(spec, basis):
    labels = basis.labels()
    missing = [o for o in spec.order if o not in labels]
    if missing:
        raise RecipeError(f"[schedule] order: {missing[0]!r} is not offered by basis {basis.kind!r} "
                          f"(allowed: {', '.join(sorted(labels))})")
    weights = spec.order_weights or (1.0,) * len(spec.order)
    label = sum(w * labels[o] for w, o in zip(weights, spec.order))
    return SoftConditioning(basis.log_snr_offset(), label, spec.softness, spec.gamma_denoise, spec.gamma_noise,
                            spec.clip, spec.softness_range)


SCHEDULES = {  # [schedule] kind → constructor (spec, basis): component-wise ones read the basis
    "vdm-linear": lambda spec, basis: VDMLinear(**fields_of(spec)),
    "vp-linear": lambda spec, basis: VPLinear(**fields_of(spec)),
    "cosine": lambda spec, basis: Cosine(**fields_of(spec)),
    "vdm-learned": lambda spec, basis: VDMLearned(**fields_of(spec)),
    "soft-conditioning": _soft_conditioning,
}


def _cond_channels(spec, shape) -> int:
    """Extra input channels (images) or entries (vectors) for gamma-map conditioning."""
    if spec.cond != "gamma-map":
        return 0
    return shape[0] if len(shape) == 3 else math.prod(shape)


def _unet(spec, shape, k_in, k_out):
    from .nets.unet import UNet

    if len(shape) != 3:
        raise RecipeError(f"[net] kind: 'unet' needs image data (C×H×W) but the data are vectors of shape "
                          f"{tuple(shape)}; use [net] kind = \"mlp\"")
    c, h, w = shape
    levels = len(spec.channel_mult)
    if h % (1 << (levels - 1)) or w % (1 << (levels - 1)):
        raise RecipeError(f"[net] channel_mult: {levels} resolutions need H and W divisible by "
                          f"{1 << (levels - 1)}, but the images are {h}×{w}; use fewer entries")
    resolutions = [h >> i for i in range(levels)]
    for r in spec.attn_resolutions:
        if r not in resolutions:
            raise RecipeError(f"[net] attn_resolutions: {r} is not a resolution of this network "
                              f"(allowed: {', '.join(map(str, resolutions))})")
    return UNet(k_in * c + _cond_channels(spec, shape), k_out * c, h, channels=spec.channels,
                channel_mult=spec.channel_mult, num_blocks=spec.num_blocks, attn_resolutions=spec.attn_resolutions,
                dropout=spec.dropout, fourier=spec.fourier_features, fourier_channels=k_in * c, classes=spec.classes)


def _mlp(spec, shape, k_in, k_out):
    from .nets.mlp import MLP

    d = math.prod(shape)
    return MLP(k_in * d + _cond_channels(spec, shape), k_out * d, hidden=spec.hidden, depth=spec.depth,
               dropout=spec.dropout, classes=spec.classes)


NETS = {"unet": _unet, "mlp": _mlp}


def resolve(recipe: R.Recipe, data_info: dict) -> R.Recipe:
    """Fill in what depends on the data or the process: the U-Net preset chosen by image size, preset values,
    and [net] precond = "auto" (EDM's preconditioning where the process has one number per component: an
    ε-network's errors grow like σ in x0 and make deterministic samplers noisy; docs/samplers.md)."""
    net = recipe.net
    if getattr(net, "precond", None) == "auto":
        chosen = "edm" if PRECONDS.entry("edm").requires <= build_process(recipe).traits else "eps"
        recipe = recipe.with_section("net", precond=chosen)
        net = recipe.net
    if isinstance(net, R.UNetSpec):
        from .nets.unet import PRESETS, auto_preset

        shape = data_info["shape"]
        preset = net.preset if net.preset != "auto" else auto_preset(shape[-1] if len(shape) == 3 else 0)
        values = {k: getattr(net, k) if getattr(net, k) is not None else v for k, v in PRESETS[preset].items()}
        recipe = recipe.with_section("net", preset=preset, **values)
    return recipe


def build_basis(recipe: R.Recipe, shape):
    return BASES[recipe.basis.kind](tuple(shape), **fields_of(recipe.basis))


def build_process(recipe: R.Recipe):
    return PROCESSES[recipe.process.kind](**fields_of(recipe.process))


def fit_basis(recipe: R.Recipe, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fit the recipe's basis to data items x (N, *event): the tensors a basis artifact stores."""
    basis = build_basis(recipe, x.shape[1:]).double()
    basis.fit(x)
    return basis.fitted_tensors(x.double().mean(0))


def build_model(recipe: R.Recipe, data_info: dict, fitted: dict | None = None):
    """A model (`model.Model`) for a resolved recipe and the data description stored with it.

    `fitted`: basis tensors (from fit_basis or a basis artifact). Without them the basis starts from unit
    variances; loading a model artifact then overwrites basis and schedule buffers with the trained ones.
    """
    from .model import GaussianModel, NetModel, NoisyClassifier

    shape = tuple(data_info["shape"])
    basis = build_basis(recipe, shape)
    if fitted is not None:
        basis.load_fitted(fitted)
    process = build_process(recipe)
    schedule = SCHEDULES[recipe.schedule.kind](recipe.schedule, basis)
    if isinstance(recipe.net, R.GaussianNetSpec):
        return GaussianModel(basis, process, schedule, shape, jitter=recipe.net.jitter, classes=recipe.net.classes)
    if isinstance(recipe.net, R.NoisyClassifierSpec):
        return NoisyClassifier(basis, process, schedule, shape, _noisy_classifier(recipe.net, shape, process.k,
                                                                                  data_info.get("classes", 0)))
    owner = f"[process] kind = {process.name!r}"
    if recipe.net.precond == "auto":
        recipe = resolve(recipe, data_info)
    PRECONDS.check(recipe.net.precond, process.traits, owner)
    WEIGHTINGS.check(recipe.train.weighting, process.traits, owner)
    net = NETS[recipe.net.kind](recipe.net, shape, process.k, process.predicted)
    precond = PRECONDS.get(recipe.net.precond)(sigma_data=recipe.net.sigma_data)
    return NetModel(basis, process, schedule, shape, net, cond=recipe.net.cond, precond=precond)


def _noisy_classifier(spec, shape, k: int, classes: int):
    from .nets.classifier import NoisyClassifier

    if len(shape) != 3:
        raise RecipeError(f"[net] kind: 'noisy-classifier' needs image data (C×H×W), got items of shape "
                          f"{tuple(shape)}")
    if classes < 2:
        raise RecipeError("[net] kind: 'noisy-classifier' needs labelled data with at least 2 classes")
    return NoisyClassifier(k * shape[0], classes, channels=spec.channels, channel_mult=spec.channel_mult,
                           num_blocks=spec.num_blocks, dropout=spec.dropout)


def build_classifier(spec: R.ClassifierSpec, shape, classes: int):
    """The image classifier of a [net] kind = "classifier" recipe, for images of `shape` (C, H, W)."""
    from .nets.classifier import Classifier

    if len(shape) != 3:
        raise RecipeError(f"[net] kind: 'classifier' needs image data (C×H×W), got items of shape {tuple(shape)}")
    return Classifier(shape[0], classes, channels=spec.channels, features=spec.features, dropout=spec.dropout)


def classifier_from_artifact(artifact):
    """Rebuild a trained classifier from a `classifier` artifact: (network in eval mode, udiff.classifier metadata)."""
    from .artifacts import ArtifactError

    rec = recipe_of(artifact)
    meta = artifact.json("udiff.classifier", {})
    if not isinstance(rec.net, R.ClassifierSpec) or "shape" not in meta or "classes" not in meta:
        raise ArtifactError(f"{artifact.path}: classifier artifact lacks its recipe or shape; re-train it")
    net = build_classifier(rec.net, meta["shape"], meta["classes"])
    state = {k[len("weights."):]: v for k, v in artifact.tensors.items() if k.startswith("weights.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ArtifactError(f"{artifact.path}: weights do not fit the recipe's classifier ({what}); the file "
                            "was edited or made by another udiff version")
    return net.eval(), meta


def apply_sample_settings(model, rec: R.Recipe):
    """[sample] keys that change the model's behaviour when sampling (a soft-conditioning softness)."""
    if rec.sample.softness is not None:
        if not hasattr(model.schedule, "softness"):
            raise RecipeError("[sample] softness: only soft-conditioning schedules have a softness")
        model.schedule.softness = rec.sample.softness
    return model


def recipe_of(artifact, overrides=()) -> R.Recipe:
    """The recipe stored in an artifact, with `--set` overrides applied and validated. Artifacts of format 1
    were made before [net] precond existed: their networks predict ε."""
    text = artifact.recipe_json
    if text is None:
        raise RecipeError(f"{artifact.path}: artifact holds no recipe; re-create it with udiff")
    if artifact.meta.get("udiff.format") == "1":
        raw = json.loads(text)
        if raw.get("net", {}).get("kind") in NETS and "precond" not in raw["net"]:
            raw["net"]["precond"] = "eps"
            text = json.dumps(raw)
    return R.from_json(text, origin=artifact.path, overrides=overrides)


def model_from_artifact(artifact, overrides=(), ema: bool = True):
    """Rebuild a trained model from a `model` artifact; EMA weights unless ema=False."""
    from .artifacts import ArtifactError

    rec = recipe_of(artifact, overrides)
    info = artifact.json("udiff.data")
    if not info or "shape" not in info:
        raise ArtifactError(f"{artifact.path}: model artifact lacks its data description; re-train it")
    model = build_model(rec, info)
    state = {k[len("weights."):]: v for k, v in artifact.tensors.items() if k.startswith("weights.")}
    if ema:  # EMA covers the parameters; buffers (basis, schedule) are the raw ones (checkpoints store no EMA of them)
        state.update({k[len("ema."):]: v for k, v in artifact.tensors.items() if k.startswith("ema.")})
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ArtifactError(f"{artifact.path}: weights do not fit the recipe's network ({what}); the file "
                            "was edited or made by another udiff version")
    model.eval()
    return apply_sample_settings(model, rec), rec, info


def section_changes(a: R.Recipe, b: R.Recipe, ignore: dict[str, tuple[str, ...]]) -> list[str]:
    """Human-readable differences between two recipes, skipping ignored keys ({section: keys})."""
    out = []
    da, db = a.to_dict(), b.to_dict()
    for sec in R.SECTIONS:
        if ignore.get(sec) == ("*",):
            continue
        for key in sorted(set(da[sec]) | set(db[sec])):
            if key in ignore.get(sec, ()):
                continue
            if da[sec].get(key) != db[sec].get(key):
                out.append(f"[{sec}] {key} {json.dumps(da[sec].get(key))} vs {json.dumps(db[sec].get(key))}")
    return out


# ---------------------------------------------------------------------------------------------------
# Target recipes (`udiff sample RECIPE`): [target] spec → targets.Target. Most kinds are targets.KINDS[kind]
# called with the spec's fields; `fitted` needs data (and maybe a basis artifact), `python` an import.


def build_target(spec, device="cpu"):
    """The target density of a target recipe's [target] section, its parameters on `device`."""
    import dataclasses

    from . import targets as T

    special = {R.FittedTargetSpec: _fitted_target, R.PythonTargetSpec: _python_target}
    if type(spec) in special:
        target = special[type(spec)](spec)
    else:
        target = T.KINDS[spec.kind](**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)})
    return target.to(device)


def _fitted_target(spec):
    """EM fit on the data's `dims` highest-variance components: of a PCA of the data, or of a basis artifact."""
    from . import data as D
    from . import targets as T
    from .artifacts import ArtifactError, load

    ds = D.load(spec.data, spec.limit)
    x = ds.unit().double()
    if spec.basis:
        art = load(spec.basis, "basis")
        shape = tuple(art.json("udiff.basis", {}).get("shape", ()))
        if shape != ds.shape:
            raise ArtifactError(f"{spec.basis}: fitted to items of shape {shape}, but {spec.data} has items of "
                                f"shape {ds.shape}; fit a basis to this data with udiff fit-basis")
        brec = recipe_of(art)
        basis = build_basis(brec, shape).double()
        names = ["mean", "variances"] + (["U"] if brec.basis.kind == "pca" else [])
        basis.load_fitted(dict(zip(names, art.require(*names))))
        kind = brec.basis.kind
    else:
        basis, kind = PCABasis(ds.shape).double().fit(x), "pca"
    total = basis.variances.numel()
    if spec.dims > total:
        raise RecipeError(f"[target] dims: {spec.dims} is more than the {total} components of {spec.data}; "
                          f"use at most {total}")
    order = torch.argsort(basis.variances.reshape(-1), descending=True)[:spec.dims]
    coords = basis.encode(x).reshape(len(x), -1)[:, order]
    coords = coords - coords.mean(0)  # centred: the dilation path contracts towards the origin (our choice)
    target = T.fitted(coords, spec.components, spec.covariance, spec.iterations, spec.seed)
    target.extra = {"data": spec.data, "data_sha256": ds.sha256(), "n": len(ds), "basis": kind,
                    "basis_artifact": spec.basis, "components": order.tolist()}
    return target


def _python_target(spec):
    from . import targets as T

    fn = _import_function(spec.function, "function")
    exact = _import_function(spec.exact, "exact") if spec.exact else None
    return T.python(fn, spec.dim, spec.function, exact)


def _import_function(ref: str, key: str):
    """`module:function` → the function; the current directory is searched first, as `python -m` does."""
    import importlib
    import os
    import sys

    mod, _, name = ref.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod)
    except Exception as e:  # ImportError, or anything the module raises while importing
        detail = str(e).splitlines()[0] if str(e) else ""
        raise RecipeError(f"[target] {key}: cannot import module {mod!r} ({type(e).__name__}: {detail}); put it "
                          "in the current directory or on PYTHONPATH") from None
    finally:
        if added:
            sys.path.remove(cwd)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise RecipeError(f"[target] {key}: module {mod!r} has no function {name!r}")
    return fn

