"""Recipes: TOML files turned into frozen dataclasses with every default filled in.

A recipe is the whole experiment, one section per part of the model:

    [data]      where the training data comes from
    [basis]     the orthonormal basis the diffusion runs in   (kind = "pixel" | "pca" | "dct" | "haar")
    [prior]     the terminal distribution                     (kind = "standard" | "fitted")
    [process]   the linear SDE per component                  (kind = "vp" | "ve" | "sub-vp" | "psld" | "cld" | ...)
    [schedule]  gamma(t) = -log SNR(t) per component           (kind = "vdm-linear" | "vp-linear" | "cosine" | ...)
    [net]       the network                                   (kind = "unet" | "mlp" | "gaussian"; or "classifier")
    [train]     the optimisation loop
    [sample]    how `udiff sample` draws from the model

A target recipe (`udiff sample RECIPE`, no model) has only [target], a density known up to a constant (kind =
"gmm" | "grid" | "circle" | "separated" | "rings" | "funnel" | "fitted" | "python"), and [sample] (the sampler
and its budget).

A recipe argument is a path to a TOML file, or `@NAME` for a recipe shipped with udiff (`udiff recipes` lists
them; after a non-editable install they live in the package's data).

A [target] kind = "python" recipe runs code: its `function` (and `exact`) "module:function" is imported from the
current directory first, then PYTHONPATH (as `python -m` does), and called. That key is the only way a recipe
imports anything, and only *.toml files (or @NAME) are read as recipes.

Sections with a `kind` key take the keys of the chosen kind. Every value is checked once, at load: unknown
sections and keys, wrong types and out-of-range values are refused with a message that names the file,
section and key and says what is allowed. `--set section.key=value` overrides are applied before that check,
so they are validated the same way.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Optional

from ..errors import RecipeError
from .model import *  # noqa: F401,F403 - the model recipe's specs and names
from .model import KIND_SECTIONS, PLAIN_SECTIONS, SECTIONS, Recipe, model_from_dict  # noqa: F401
from .schema import (_KINDS, _MISSING, _PLAIN, DEFAULT_KINDS, kinds, opt, parse_override, spec,  # noqa: F401
                     spec_class, tomllib, _toml_value)
from .target import *  # noqa: F401,F403 - the target recipe's specs and names
from .target import TARGET_SECTIONS, TargetRecipe, TargetSampleSpec, target_from_dict  # noqa: F401
from . import shipped
from .shipped import is_shipped_name  # noqa: F401


def from_dict(raw: dict, origin: str = "<recipe>", overrides=()):
    """Validate a nested dict (parsed TOML or stored JSON) into a Recipe, or a TargetRecipe when it has
    [target]; errors name origin and key."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{origin}: expected a table of sections")
    if "target" in raw:
        return target_from_dict(raw, origin, overrides)
    return model_from_dict(raw, origin, overrides)


def load(path: str, overrides: tuple[str, ...] | list[str] = (), target: Optional[bool] = False) -> Recipe:
    """Read a TOML recipe, apply `section.key=value` overrides, validate and fill in defaults.

    `target`: False (the default) wants a model recipe, True a target recipe (with [target]; returns a
    TargetRecipe), None either.
    """
    origin, path = path, shipped.resolve(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        hint = (f"; did you mean @{origin} (a shipped recipe)?"
                if not shipped.is_shipped_name(origin) and origin in shipped.catalogue() else "")
        raise RecipeError(f"{origin}: no such recipe file{hint}") from None
    except IsADirectoryError:
        raise RecipeError(f"{origin}: is a directory, expected a TOML recipe file") from None
    except PermissionError:
        raise RecipeError(f"{origin}: permission denied; make the recipe readable (chmod +r)") from None
    except OSError as e:
        raise RecipeError(f"{origin}: cannot read the recipe ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{origin}: not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{origin}: not a text file; expected a TOML recipe") from None
    if target is not None and isinstance(raw, dict) and ("target" in raw) != target:
        if target:
            raise RecipeError(f"{origin}: has no [target] section; `udiff sample` takes a model artifact (from udiff "
                              "train) or a target recipe whose [target] gives the density to sample")
        raise RecipeError(f"{origin}: is a target recipe ([target]: a density to sample, no model); run "
                          f"`udiff sample {origin} -n N -o SAMPLES`")
    return from_dict(raw, origin=origin, overrides=overrides)


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
            out += _key_lines(cls, unset="varies")
    out += ["Target recipes (udiff sample RECIPE): a [target] section instead of a model; only [target] and "
            "[sample] are allowed.", ""]
    for kind, cls in [(k, _KINDS["target"][k]) for k in kinds("target")] + [(None, TargetSampleSpec)]:
        out.append(f'[target] kind = "{kind}"' if kind else "[sample]  (of a target recipe)")
        out.append(f"    {cls.__doc__.strip().splitlines()[0]}")
        out += _key_lines(cls, unset="none")
    return "\n".join(out)


def _key_lines(cls, unset: str) -> list[str]:
    """`key = default  # doc` for each key of a section class (`unset` for a None default), then a blank."""
    lines = []
    for f in fields(cls):
        default = "required" if f.default is _MISSING else (unset if f.default is None else _toml_value(f.default))
        lines.append(f"    {f.name} = {default}  # {f.metadata.get('doc', '')}")
    return lines + [""]
