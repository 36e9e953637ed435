"""Figures for `udiff plot`: a schedule, a training history, a likelihood's terms, samples. matplotlib on Agg.

Each function takes plain tensors, dicts or a model and returns a matplotlib Figure; `save` writes it as PNG,
SVG or PDF by the file's suffix. Nothing here reads artifacts or knows the command line. The data drawn are the
data computed (tests read them back from the Line2D objects).
"""

from __future__ import annotations

import math

import torch

MAX_LINES = 64  # components drawn in a schedule plot: more lines are one grey band
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def shown_components(label: torch.Tensor | None, d: int, most: int = MAX_LINES) -> torch.Tensor:
    """Which components a schedule plot draws: all of them up to `most`, else `most` evenly spaced in label order
    (so every part of a component-wise schedule appears), as flat indices."""
    if d <= most:
        return torch.arange(d)
    order = torch.argsort(label.reshape(-1), stable=True) if label is not None else torch.arange(d)
    return order[torch.linspace(0, d - 1, most).round().long()]


def schedule_curves(model, n_times: int = 201) -> dict:
    """t, γ(t) per drawn component (T, m), their labels, and the process's kernel per component: α and σ for a
    scalar process, the position and momentum variances of the kernel for a phase-space one."""
    sched, proc = model.schedule, model.process
    t = torch.linspace(float(sched.t_min), 1.0, n_times, dtype=torch.float64)
    with torch.no_grad():
        lvl = model.level(t)
        gamma = lvl.gamma.reshape(n_times, -1)
        label = getattr(sched, "label", None)
        idx = shown_components(label, gamma.shape[1])
        out = {"t": t, "gamma": gamma[:, idx], "components": idx, "total": gamma.shape[1],
               "label": None if label is None else label.reshape(-1)[idx].double()}
        k, d = proc.k, gamma.shape[1]

        def per_component(a):  # (T or 1, ..., k, k) → (T, components drawn, k, k)
            a = a.reshape(a.shape[0], -1, k, k)
            return a.expand(n_times, d if a.shape[1] == 1 else a.shape[1], k, k)[:, idx]

        cov = per_component(proc.cov(lvl))
        if proc.k == 1:
            h = per_component(proc.mean_map(lvl))
            out["alpha"], out["sigma"] = h[..., 0, 0], cov[..., 0, 0].sqrt()
        else:
            out["position_var"], out["momentum_var"] = cov[..., 0, 0], cov[..., 1, 1]
    return out


def schedule_figure(model, title: str = ""):
    """Left: log-SNR = -γ(t) per component, coloured by the ordering label. Right: the kernel (α and σ, or the
    phase-space position and momentum variances), same colours."""
    plt = _plt()
    c = schedule_curves(model)
    t = c["t"].numpy()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), dpi=100, constrained_layout=True)
    m = c["gamma"].shape[1]
    if c["label"] is not None and m > 1:
        lab = c["label"]
        span = float(lab.max() - lab.min()) or 1.0
        colours = plt.cm.viridis(((lab - lab.min()) / span).numpy())
    else:
        colours = [plt.cm.viridis(0.3)] * m
    for i in range(m):
        ax.plot(t, (-c["gamma"][:, i]).numpy(), color=colours[i], lw=1.0)
    ax.set(xlabel="t", ylabel="log-SNR = −γ(t)", title="schedule" + (f" ({m} of {c['total']} components)"
                                                                   if m < c["total"] else ""))
    if c["label"] is not None and m > 1:
        sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(float(c["label"].min()),
                                                                      float(c["label"].max())))
        fig.colorbar(sm, ax=ax, label="ordering label (lower: generated first)")
    if "alpha" in c:
        for i in range(m):
            bx.plot(t, c["alpha"][:, i].numpy(), color=colours[i], lw=1.0, ls="-")
            bx.plot(t, c["sigma"][:, i].numpy(), color=colours[i], lw=1.0, ls="--")
        bx.set(xlabel="t", ylabel="α (solid), σ (dashed)", title=f"kernel of {model.process.name}")
    else:
        for i in range(m):
            bx.semilogy(t, c["position_var"][:, i].clamp_min(1e-30).numpy(), color=colours[i], lw=1.0, ls="-")
            bx.semilogy(t, c["momentum_var"][:, i].clamp_min(1e-30).numpy(), color=colours[i], lw=1.0, ls="--")
        bx.set(xlabel="t", ylabel="variance: position (solid), momentum (dashed)",
               title=f"phase-space kernel of {model.process.name}")
    if title:
        fig.suptitle(title)
    return fig


HISTORY_PANELS = (("loss", "loss (mean over the window)", True), ("lr", "learning rate", False),
                  ("grad_norm", "gradient norm (before clipping)", True), ("images_per_second", "img/s", False),
                  ("bits_per_dim", "bits/dim", False))


def history_figure(rows: list[dict], title: str = ""):
    """Every logged quantity of a training history against the step, one panel each."""
    plt = _plt()
    panels = [p for p in HISTORY_PANELS if any(p[0] in r and r[p[0]] is not None for r in rows)]
    cols = 2
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(10, 3 * nrows), dpi=100, squeeze=False, constrained_layout=True)
    for ax, (key, name, log) in zip(axes.flat, panels):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None, lw=1.2)
        if log and pts and min(p[1] for p in pts) > 0 and max(p[1] for p in pts) > 10 * min(p[1] for p in pts):
            ax.set_yscale("log")  # only when the values span more than a decade
        ax.set(xlabel="step", ylabel=name)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def nll_figure(record: dict, title: str = ""):
    """The bound's terms (a bar each, with the total and its standard error) of an `eval-nll --json` record, and
    beside them, when the record has one (the vlb method), the diffusion term's density over t."""
    plt = _plt()
    terms = record.get("terms") or {}
    names, values = list(terms), [terms[k] for k in terms]
    dens = record.get("diffusion_density")
    if dens:
        fig, (ax, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100, constrained_layout=True)
        density_panel(right, dens, record.get("units", ""))
    else:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100, constrained_layout=True)
    ax.bar(names + ["total"], values + [record["value"]], color=["C0"] * len(names) + ["C3"],
           yerr=[0] * len(names) + [record.get("stderr") or 0], capsize=4)
    for i, v in enumerate(values + [record["value"]]):
        ax.annotate(f"{v:.4f}", (i, v), ha="center", va="bottom", fontsize=8)
    se = f" ± {record['stderr']:.4f}" if record.get("stderr") else ""
    ax.set(ylabel=record.get("units", ""),
           title=title or f"{record.get('method', '')}: {record['value']:.4f}{se} {record.get('units', '')}"
                          f" over {record.get('n', '?')} items of {record.get('data', '?')}")
    import textwrap

    fig.text(0.5, 0.005, "\n".join(textwrap.wrap(record.get("bounds", ""), 90)), ha="center", va="bottom",
             fontsize=7, color="0.35")
    fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
    return fig


def density_panel(ax, dens: dict, units: str):
    """The diffusion term's density over t (eval-nll's `diffusion_density`) as steps; the bins are equal steps
    of the mean log-SNR, so t is on a log axis when their widths in t span more than a decade (VP-SDE's clock)."""
    t, density, share = dens["t"], dens["density"], dens["share"]
    ax.stairs(density, t, fill=True, alpha=0.35, color="C0")
    ax.stairs(density, t, color="C0", lw=1.2)
    widths = [b - a for a, b in zip(t, t[1:])]
    if t[0] > 0 and max(widths) > 10 * min(widths):
        ax.set_xscale("log")
    if min(density) > 0 and max(density) > 10 * min(density):
        ax.set_yscale("log")
    top = max(range(len(share)), key=lambda i: share[i])
    ax.set(xlabel="t", ylabel=f"{units} per unit of t",
           title=f"diffusion term over t (most from t in [{t[top]:.2g}, {t[top + 1]:.2g}]: "
                 f"{share[top] / max(sum(share), 1e-300):.0%})")


def image_grid_figure(grid_array, title: str = ""):
    """An (H, W, C) uint8 grid of images (images.grid), shown at one screen pixel per image pixel or more."""
    plt = _plt()
    h, w = grid_array.shape[:2]
    scale = max(1, math.ceil(256 / max(h, w)))
    fig = plt.figure(figsize=(w * scale / 100, h * scale / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(grid_array[..., 0] if grid_array.shape[2] == 1 else grid_array, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return fig


def scatter_figure(x: torch.Tensor, dims=(0, 1), exact: torch.Tensor | None = None, title: str = ""):
    """Samples' coordinates `dims` against exact samples of the target (when there are any), side by side."""
    plt = _plt()
    i, j = dims
    panels = [("samples", x)] + ([("exact samples", exact)] if exact is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), dpi=100, squeeze=False,
                             sharex=True, sharey=True, constrained_layout=True)
    for ax, (name, pts) in zip(axes.flat, panels):
        ax.scatter(pts[:, i].numpy(), pts[:, j].numpy(), s=2, alpha=0.4, lw=0)
        ax.set(xlabel=f"x[{i}]", ylabel=f"x[{j}]", title=f"{name} ({len(pts)})", aspect="equal")
    if title:
        fig.suptitle(title)
    return fig


def save(fig, path: str, fmt: str = "png"):
    """Write a figure to `path` in `fmt` (png, svg or pdf) and free it."""
    fig.savefig(path, format=fmt)
    _plt().close(fig)
