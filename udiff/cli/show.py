"""`udiff show ARTIFACT`: what an artifact is and how it was made."""

from __future__ import annotations

import json

import click

from .options import PATH


@click.command("show", short_help="Describe an artifact: kind, recipe, tensors.")
@click.argument("path", type=PATH, metavar="ARTIFACT")
@click.option("--recipe", "recipe_only", is_flag=True, help="Print only the recipe, as TOML.")
@click.option("--json", "as_json", is_flag=True, help="Print kind, metadata and tensor shapes as JSON.")
def command(path, recipe_only, as_json):
    """Print an artifact's kind, the recipe that made it, its metadata and its tensors.

    \b
    udiff show run/model.safetensors
    udiff show run/model.safetensors --recipe > same-again.toml
    """
    from .. import artifacts
    from .. import recipe as R

    art = artifacts.load(path)
    rec = R.from_json(art.recipe_json, origin=path) if art.recipe_json else None
    if recipe_only:
        if rec is None:
            raise click.UsageError(f"{path}: this {art.kind} artifact holds no recipe")
        click.echo(rec.toml(), nl=False)
        return
    meta = {k: _maybe_json(v) for k, v in art.meta.items() if k not in ("udiff.recipe",)}
    tensors = {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in art.tensors.items()}
    if as_json:
        click.echo(json.dumps({"kind": art.kind, "meta": meta, "recipe": rec.to_dict() if rec else None,
                               "tensors": tensors}, sort_keys=True))
        return
    click.echo(f"{path}: udiff {art.kind} artifact")
    for k in sorted(meta):
        click.echo(f"  {k}: {json.dumps(meta[k]) if not isinstance(meta[k], str) else meta[k]}")
    n = sum(v.numel() for v in art.tensors.values())
    click.echo(f"  tensors: {len(tensors)} ({n:,} numbers)")
    groups: dict[str, int] = {}
    for k, v in art.tensors.items():
        groups[k.split(".")[0]] = groups.get(k.split(".")[0], 0) + v.numel()
    for g, count in sorted(groups.items()):
        click.echo(f"    {g}.*: {count:,}")
    if rec is not None:
        click.echo("recipe:")
        click.echo("\n".join("  " + line if line else "" for line in rec.toml().splitlines()))


def _maybe_json(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v
