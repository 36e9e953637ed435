"""Sample-quality metrics against exact samples of a target: mode weights, MMD, sliced Wasserstein-2.

    mode-weight error   max_k |f_k - f*_k|, f_k the fraction of samples assigned to mode k by the target's own
                        rule (largest responsibility; nearest ring) and f*_k the same fraction for exact
                        samples (so overlapping components are judged by the same rule); also the L1 sum
    MMD                 sqrt of the unbiased MMD^2 estimate (Gretton et al. 2012) with the RBF kernel
                        exp(-|x - y|^2 / (2 l^2)), l = the median pairwise distance of the pooled points (median
                        heuristic); at most `MMD_POINTS` points of each set
    sliced W2           sqrt(mean over random unit directions of W2^2 of the 1-D projections), 1-D W2 from sorted
                        projections (Rabin et al. 2011); `SW_DIRECTIONS` directions from a fixed seed

    log Z error         a sampler's log Z estimate minus the target's exact log Z, where both exist (dilation-smc;
                        the normalized targets), with the error in units of the estimate's standard error

Everything is float64 on the CPU and deterministic: the reference draws come from `REFERENCE_SEED`, the
directions from their own fixed seed, and subsets are evenly spaced over the samples (the same as the first points
for independent samples; SMC's particles are correlated within their block of seeds, so the first points would be
one or two blocks).
Rows of the samples that are not finite (a diverged chain) are counted and left out of the distances.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

MMD_POINTS = 2000
SW_POINTS = 10000
SW_DIRECTIONS = 256
REFERENCE_SEED = 20240614
MIN_REFERENCE = 20000


def mode_fractions(assign: torch.Tensor, modes: int) -> torch.Tensor:
    """(K,) fraction of points per mode from their mode indices."""
    return torch.bincount(assign.long(), minlength=modes).double() / max(len(assign), 1)


def median_bandwidth(z: torch.Tensor) -> float:
    """The median of the pairwise distances between distinct rows of z (the RBF median heuristic)."""
    d = torch.cdist(z, z)
    iu = torch.triu_indices(len(z), len(z), 1)
    med = float(d[iu[0], iu[1]].median()) if len(z) > 1 else 1.0
    return med if med > 0 else 1.0


def spread(x: torch.Tensor, points: int) -> torch.Tensor:
    """At most `points` rows of x, evenly spaced over it (all of them when there are fewer)."""
    if len(x) <= points:
        return x
    return x[torch.linspace(0, len(x) - 1, points, dtype=torch.float64).round().long()]


def mmd(x: torch.Tensor, y: torch.Tensor, points: int = MMD_POINTS) -> float:
    """sqrt(max(0, unbiased MMD^2)) between x (n, d) and y (m, d), RBF kernel with the median bandwidth."""
    x, y = spread(x, points).double(), spread(y, points).double()
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return math.nan
    ell = median_bandwidth(torch.cat([x, y]))
    # k(a, b) = exp(-|a - b|^2 / (2 l^2)): the RBF kernel (standard)
    k = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2) / (2 * ell * ell))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    # unbiased MMD^2 = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean k(x_i, y_j) (Gretton et al.)
    mmd2 = ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            - 2 * kxy.mean())
    return math.sqrt(max(float(mmd2), 0.0))


def sliced_w2(x: torch.Tensor, y: torch.Tensor, directions: int = SW_DIRECTIONS, points: int = SW_POINTS,
              seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between x and y (equal numbers of points are used: the smaller count)."""
    n = min(len(x), len(y), points)
    if n < 1:
        return math.nan
    x, y = spread(x, n).double(), spread(y, n).double()
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], directions, dtype=torch.float64, generator=g)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    # SW2^2 = mean_theta W2^2(theta#x, theta#y); 1-D W2^2 = mean (sorted difference)^2 (standard)
    return math.sqrt(float(((px - py) ** 2).mean()))


def evaluate(target, x: torch.Tensor, reference: Optional[torch.Tensor] = None) -> dict:
    """Metrics of samples x (N, d) against exact draws of `target` (drawn here when not given).

    Returns {} when the target has no exact sampler (only `nonfinite` is then reported).
    """
    target.to("cpu")
    x = x.detach().double().cpu()
    finite = torch.isfinite(x).all(1)
    out: dict = {"nonfinite": int((~finite).sum())}
    x = x[finite]
    if reference is None:
        if not target.has_exact_samples:
            return out
        g = torch.Generator().manual_seed(REFERENCE_SEED)
        reference = target.sample(max(MIN_REFERENCE, len(x)), g)
    reference = reference.double()
    if len(x) == 0:
        return {**out, "mmd": math.nan, "sw2": math.nan}
    out["mmd"] = mmd(x, reference)
    out["sw2"] = sliced_w2(x, reference)
    modes = len(target.mode_names)
    if modes:
        f = mode_fractions(target.assign(x.float()), modes)
        f_ref = mode_fractions(target.assign(reference.float()), modes)
        if out["nonfinite"]:  # a diverged particle belongs to no mode
            f = f * len(x) / (len(x) + out["nonfinite"])
        out["mode_weight_error"] = float((f - f_ref).abs().max())
        out["mode_weight_l1"] = float((f - f_ref).abs().sum())
        out["mode_weights"] = [round(float(v), 4) for v in f]
        out["mode_weights_exact"] = [round(float(v), 4) for v in f_ref]
    return out


def log_z_error(target, used: dict) -> dict:
    """{log_z_exact, log_z_error[, log_z_z]} when the sampler estimated log Z and the target knows it, else {}."""
    if used.get("log_z") is None or getattr(target, "log_z", None) is None:
        return {}
    err = float(used["log_z"]) - float(target.log_z)
    se = used.get("log_z_stderr")
    z = {"log_z_z": err / se} if se and math.isfinite(se) and se > 0 else {}
    return {"log_z_exact": float(target.log_z), "log_z_error": err, **z}
