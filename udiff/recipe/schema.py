"""The recipe schema engine: spec dataclasses registered by section and kind, and one validator for all.

Sections with a `kind` key are tables of small spec classes registered by name (`@spec("schedule",
"cosine")`); the other keys of such a section are the fields of the chosen class. Every value is checked once,
at load: unknown sections and keys, wrong types and out-of-range values raise `RecipeError` with a message that
names the section and key and says what is allowed. Stdlib only: it must not import torch.
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

from ..errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_KINDS: dict[str, dict[str, type]] = {}
_PLAIN: dict[str, type] = {}
DEFAULT_KINDS: dict[str, str] = {}  # section → the kind taken when a recipe names none (filled by the schemas)
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
            _KINDS.setdefault(section, {})[kind] = cls
            cls.kind = kind
        cls.section = section
        return cls

    return register


def kinds(section: str) -> list[str]:
    """The registered kinds of a kind-section, sorted."""
    return sorted(_KINDS.get(section, {}))


def spec_class(section: str, kind: Optional[str] = None) -> type:
    return _PLAIN[section] if kind is None else _KINDS[section][kind]


def _require(ok: bool, section: str, key: str, msg: str):
    if not ok:
        raise RecipeError(f"[{section}] {key}: {msg}")


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


def with_overrides(raw: dict, overrides, origin: str, check_section) -> dict:
    """A copy of the parsed tables with each `--set section.key=value` applied, every section name checked
    by check_section(name, where) and every section a table."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        section, key, value = parse_override(item)
        check_section(section, f"--set {item}")
        raw.setdefault(section, {})[key] = value
    for name, sec in raw.items():
        check_section(name, origin)
        if not isinstance(sec, dict):
            raise RecipeError(f"{origin}: [{name}] must be a table, got {sec!r}")
    return raw


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
            if not -2**63 <= v < 2**63:
                raise RecipeError(f"{where}: {v} is out of range (TOML integers are 64-bit)")
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
