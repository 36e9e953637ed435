"""`udiff recipes [NAME]`: the recipes shipped with udiff, by name (for `udiff train @NAME`)."""

from __future__ import annotations

import click

from .options import json_option


@click.command("recipes", short_help="List the recipes shipped with udiff, or print one.")
@click.argument("name", required=False, metavar="[NAME]")
@click.option("--path", "show_path", is_flag=True, help="Print the file path of NAME instead of its text.")
@json_option
def command(name, show_path, as_json):
    """List the recipes that ship with udiff, each with its one-line description; with NAME, print that
    recipe's TOML (to copy and edit) or, with --path, where it is.

    Any command that takes a RECIPE takes @NAME for a shipped recipe, also after a non-editable
    `pip install`:

    \b
    udiff recipes
    udiff train @digits -o run/model.safetensors
    udiff recipes digits > my-digits.toml
    """
    import json

    from ..recipe import shipped

    found = shipped.catalogue()
    if name is None:
        if as_json:
            click.echo(json.dumps({n: {"path": p, "description": shipped.description(p)} for n, p in found.items()},
                                  sort_keys=True))
            return
        width = max(map(len, found), default=0) + 1
        for n, p in found.items():
            click.echo(f"@{n:<{width}} {shipped.description(p)}")
        return
    path = shipped.resolve(name if name.startswith(shipped.PREFIX) else shipped.PREFIX + name)
    if as_json:
        click.echo(json.dumps({"name": name.lstrip(shipped.PREFIX), "path": path,
                               "description": shipped.description(path)}, sort_keys=True))
    elif show_path:
        click.echo(path)
    else:
        with open(path, encoding="utf-8") as fh:
            click.echo(fh.read(), nl=False)
