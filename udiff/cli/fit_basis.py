"""`udiff fit-basis RECIPE -o BASIS`: fit the recipe's basis (mean, U, component variances) to data."""

from __future__ import annotations

import click

from .options import PATH, RECIPE_PATH, check_outputs, emit, json_option, override, set_option


@click.command("fit-basis", short_help="Fit a basis (pixel, PCA, DCT, Haar) to data.")
@click.argument("recipe_path", type=RECIPE_PATH, metavar="RECIPE")
@click.option("-o", "--out", required=True, type=PATH, metavar="BASIS", help="Basis artifact to write (safetensors).")
@click.option("--data", "data_source", metavar="SOURCE", help="Data source; overrides [data] source.")
@set_option
@json_option
def command(recipe_path, out, data_source, overrides, as_json):
    """Fit the recipe's [basis] to the data: the data mean, the orthonormal U (for pca) and the variance of
    every component, plus the ordering labels the basis offers (variance, frequency, level, row, column,
    rank), each laid out like one data item. `udiff train --basis BASIS` uses it; without --basis, train fits
    the same basis to its own training data.

    \b
    udiff fit-basis recipes/gud-haar-fashion.toml -o run/basis.safetensors
    udiff fit-basis @gud-pca-cifar10 --data cifar10:PATH/cifar-10-python.tar.gz:train -o run/pca.safetensors --json
    """
    from .. import artifacts
    from .. import data as D
    from .. import recipe as R
    from ..build import build_basis, fit_basis

    extra = list(overrides) + ([override("data", "source", data_source)] if data_source else [])
    rec = R.load(recipe_path, extra)
    check_outputs(out)
    ds = D.load(rec.data.source, rec.data.limit)
    info = ds.info()
    tensors = fit_basis(rec, ds.unit())
    basis = build_basis(rec, ds.shape)
    basis.load_fitted(tensors)
    for name, label in basis.labels().items():
        tensors[f"labels.{name}"] = label.float()
    var = tensors["variances"]
    meta = {"udiff.data": info, "udiff.basis": {"kind": rec.basis.kind, "shape": list(ds.shape),
                                                "labels": sorted(basis.labels())}}
    artifacts.save(out, tensors, "basis", rec.to_json(), meta)
    emit(as_json, {"out": out, "kind": rec.basis.kind, "n": len(ds), "components": var.numel(),
                   "variance_min": float(var.min()), "variance_max": float(var.max())},
         f"udiff fit-basis: wrote {out}: {rec.basis.kind} basis of {rec.data.source} ({len(ds)} items, "
         f"{var.numel()} components, variances {float(var.min()):.3g} to {float(var.max()):.3g})")


def load_basis(path: str, rec, shape) -> dict:
    """The fitted tensors of a basis artifact, checked against the recipe's basis kind and the data shape."""
    from .. import artifacts
    from ..errors import ArtifactError

    art = artifacts.load(path, "basis")
    info = art.json("udiff.basis", {})
    if info.get("kind") != rec.basis.kind:
        raise ArtifactError(f"{path}: a {info.get('kind')!r} basis, but the recipe's [basis] kind is "
                            f"{rec.basis.kind!r}; fit one with udiff fit-basis")
    if tuple(info.get("shape", ())) != tuple(shape):
        raise ArtifactError(f"{path}: fitted to items of shape {tuple(info.get('shape', ()))}, but the data "
                            f"have shape {tuple(shape)}")
    names = ["mean", "variances"] + (["U"] if rec.basis.kind == "pca" else [])
    return dict(zip(names, art.require(*names)))
