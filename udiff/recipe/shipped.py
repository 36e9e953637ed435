"""The recipes that ship with udiff, by name: `udiff train @digits` reads recipes/digits.toml.

The files live in the repository's top-level recipes/ folder; a non-editable install copies them into the
package as udiff/recipes/ (pyproject.toml maps that package directory onto recipes/). So the loader looks in
the installed package first and then beside the source tree, and a name means the same file either way.
"""

from __future__ import annotations

import os
import re

from ..errors import RecipeError

PREFIX = "@"


def folders() -> list[str]:
    """Where shipped recipes can be: the installed package's data, then the source checkout's recipes/."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../udiff
    root = os.path.dirname(pkg)
    checkout = os.path.isfile(os.path.join(root, "pyproject.toml"))  # not site-packages' neighbours
    return [d for d in (os.path.join(pkg, "recipes"), os.path.join(root, "recipes") if checkout else "")
            if d and os.path.isdir(d)]


def is_shipped_name(path: str) -> bool:
    return path.startswith(PREFIX) and len(path) > 1 and os.sep not in path


def catalogue() -> dict[str, str]:
    """Name → path of every shipped recipe (the first folder wins)."""
    out: dict[str, str] = {}
    for folder in folders():
        for entry in sorted(os.listdir(folder)):
            if entry.endswith(".toml"):
                out.setdefault(entry[:-len(".toml")], os.path.join(folder, entry))
    return dict(sorted(out.items()))


def resolve(path: str) -> str:
    """A recipe argument → a file path: `@NAME` is a shipped recipe, anything else is a path as given."""
    if not is_shipped_name(path):
        return path
    name = path[len(PREFIX):]
    name = name[:-len(".toml")] if name.endswith(".toml") else name
    found = catalogue()
    if name not in found:
        import difflib

        close = difflib.get_close_matches(name, list(found), n=1)
        hint = f"did you mean @{close[0]}? " if close else ""
        raise RecipeError(f"{path}: no shipped recipe of that name; {hint}(`udiff recipes` lists them)")
    return found[name]


def description(path: str, width: int = 90) -> str:
    """The first sentence of a recipe file's opening comment, at most `width` characters."""
    words = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            text = line.strip()
            if not text.startswith("#") or text.startswith("#   ") or text == "#":
                break
            words.append(text.lstrip("#").strip())
    text = " ".join(words)
    end = re.search(r"(?<!\bal)(?<!\be\.g)\.\s+(?=[A-Z(])", text)  # a full stop, not "et al." or "e.g."
    text = (text[:end.start()] if end else text).rstrip(":.")
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"
