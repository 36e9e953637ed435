"""An adaptive ODE integrator in pure torch: Dormand–Prince 5(4) with error control (no scipy, no host syncs
beyond one scalar per step).

    y1, nfe = dopri5(f, y0, t0, t1, rtol=1e-5, atol=1e-5)

integrates dy/dt = f(t, y) from t0 to t1 (t1 < t0 integrates backwards, as the probability-flow ODE does
from the prior to the data). `y0` is any tensor: a batch of states, or a state with extra columns such as a
log-density being accumulated. The step size is one scalar shared by the whole tensor, chosen so that every
item meets the tolerance: the error of each element is scaled by atol + rtol·max(|y|, |y_new|), the root
mean square is taken over each item (the first dimension indexes items when y has two or more dimensions;
otherwise the whole tensor is one item), and the step is accepted when the worst item's RMS is at most 1.

This is the classical method of Dormand & Prince (1980), "A family of embedded Runge–Kutta formulae",
with the first-same-as-last property (6 evaluations per accepted step), the starting-step heuristic of
Hairer, Nørsett & Wanner (Solving ODEs I, §II.4) and the usual controller h ← h·clip(0.9·err^(-1/5), 0.2, 10).
`nfe` counts every evaluation of f.
"""

from __future__ import annotations

import math

import torch

from .errors import SolverFailed, UdiffError

# Dormand–Prince 5(4) tableau: nodes C, stage coefficients A (row i gives stage i+1), 5th-order weights B5
# (= the last row of A: first same as last) and the error weights E = B5 - B4.
C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
B5 = A[6] + (0.0,)
B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
E = tuple(b5 - b4 for b5, b4 in zip(B5, B4))

SAFETY, MIN_FACTOR, MAX_FACTOR, ORDER = 0.9, 0.2, 10.0, 5


def _combine(y, h, coeffs, ks):
    """y + h Σ c_i k_i over the nonzero coefficients."""
    out = y
    for c, k in zip(coeffs, ks):
        if c != 0.0:
            out = out + (h * c) * k
    return out


def error_norm(err: torch.Tensor, y: torch.Tensor, y_new: torch.Tensor, rtol: float, atol: float) -> float:
    """Worst per-item RMS of err / (atol + rtol·max(|y|, |y_new|)) (items along dim 0 when ndim >= 2)."""
    scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
    r = (err / scale).double()
    if r.ndim >= 2:
        return float(r.square().flatten(1).mean(1).sqrt().max())
    return float(r.square().mean().sqrt())


def _initial_step(f, t0, y0, f0, direction, rtol, atol):
    """Hairer–Nørsett–Wanner's starting step (one extra evaluation of f)."""
    d0 = error_norm(y0, y0, y0, rtol, atol)
    d1 = error_norm(f0, y0, y0, rtol, atol)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    y1 = y0 + (direction * h0) * f0
    f1 = f(t0 + direction * h0, y1)
    d2 = error_norm(f1 - f0, y0, y0, rtol, atol) / h0
    big = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if big <= 1e-15 else (0.01 / big) ** (1.0 / ORDER)
    return min(100 * h0, h1)


def dopri5(f, y0: torch.Tensor, t0: float, t1: float, *, rtol: float = 1e-5, atol: float = 1e-5, h0=None,
           max_steps: int = 100_000):
    """Integrate dy/dt = f(t, y) from t0 to t1 with adaptive Dormand–Prince 5(4); returns (y(t1), nfe).

    f(t: float, y: Tensor) -> Tensor of y's shape; t0 > t1 integrates backwards in time. h0: first step
    size (its magnitude; chosen automatically when None). Raises SolverFailed (exit 1) when the step size underflows
    (a non-finite f, or an ODE too stiff for an explicit method) or after max_steps accepted and rejected steps.
    """
    t0, t1 = float(t0), float(t1)
    if t0 == t1:
        return y0, 0
    if not (rtol > 0 or atol > 0):
        raise UdiffError("rk45: rtol and atol cannot both be 0")
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    y = y0
    k1 = f(t0, y)
    nfe = 1
    if h0 is None:
        h = _initial_step(f, t0, y, k1, direction, rtol, atol)
        nfe += 1
    else:
        h = abs(float(h0))
    if not math.isfinite(h) or h <= 0:
        raise SolverFailed(f"rk45: no usable first step at t = {t0:.6g} (f is not finite there); check the model")
    h = min(h, span)
    t = t0
    for _ in range(max_steps):
        remaining = abs(t1 - t)
        last = h >= remaining * (1 - 1e-12)
        step = remaining if last else h
        hs = direction * step
        ks = [k1]
        for i in range(1, 7):
            yi = _combine(y, hs, A[i], ks)
            ks.append(f(t + C[i] * hs, yi))
        nfe += 6
        y_new = yi  # the 7th stage is evaluated at the 5th-order solution (first same as last)
        err = error_norm(_combine(torch.zeros_like(y), hs, E, ks), y, y_new, rtol, atol)
        if math.isfinite(err) and err <= 1.0:
            t = t1 if last else t + hs
            y, k1 = y_new, ks[6]
            if last:
                return y, nfe
            factor = MAX_FACTOR if err == 0 else min(MAX_FACTOR, max(MIN_FACTOR, SAFETY * err ** (-1 / ORDER)))
        else:
            factor = MIN_FACTOR if not math.isfinite(err) else max(MIN_FACTOR, SAFETY * err ** (-1 / ORDER))
            factor = min(factor, 1.0)
        h = step * factor
        if h < 1e-12 * max(1.0, abs(t)):
            raise SolverFailed(f"rk45: step size underflow at t = {t:.6g} (the ODE is stiff or f is not finite); "
                             "loosen [sample] rtol/atol or use another sampler")
    raise SolverFailed(f"rk45: no solution after {max_steps} steps (t = {t:.6g}); loosen [sample] rtol/atol")
