"""Inpainting: draw x given the known part of it, with any model, process and basis. Two methods:

replace   After every sampler step the known part of the state is replaced by a fresh draw of the forward
          process q(z_s | x_known) (Song et al. 2021; PSLD's inpainting sampler). The mixing happens in data
          layout (U^T S z per state slot), so the mask is a data-space mask (pixels) for every basis.
          `resample` R > 1 repeats each step R times, re-noising from s back to t in between (RePaint,
          Lugmayr et al. 2022, with jumps of one step); it needs a process with ancestral steps.
soft      GUD's soft conditioning: the known components are held at the schedule's lowest noise level
          (their gamma frozen at gamma(t_end), so every sampler leaves them in place) while the rest are
          generated; the denoiser sees them almost clean at every step. The mask marks components (pixels
          for the pixel basis, coefficients in the basis's layout otherwise). Exact with the exact Gaussian
          denoiser; a network must have been trained with gamma-map conditioning to see what is held.

Known data are pasted into the result exactly (pixels for replace, components for soft).
"""

from __future__ import annotations

import contextlib

import torch

from . import conversions as C
from .errors import UdiffError
from .registry import INPAINT_METHODS, MASKS, SAMPLERS
from .samplers import Plan, check_finite, in_batches
from .schedule import NoiseLevel

METHODS = INPAINT_METHODS.names()
_KNOWN_STREAM = 1 << 20  # noise streams for the known part, far from the sampler's own streams


def data_layout(model, z: torch.Tensor) -> torch.Tensor:
    """State (B, k, *event) in components → the same state in data layout, U^T (S z), slot by slot."""
    b, k = z.shape[:2]
    flat = z.reshape((b * k,) + model.event_shape)
    y = model.basis._inverse(flat * model.basis.scale.to(flat.dtype))
    return y.reshape(z.shape)


def component_layout(model, y: torch.Tensor) -> torch.Tensor:
    """Inverse of data_layout."""
    b, k = y.shape[:2]
    flat = model.basis._forward(y.reshape((b * k,) + model.event_shape))
    return (flat / model.basis.scale.to(flat.dtype)).reshape(y.shape)


class HeldModel:
    """A model whose `mask`ed components are held at the noise level of time t_hold (soft conditioning)."""

    def __init__(self, model, mask: torch.Tensor, t_hold: float):
        self.model, self.mask = model, mask
        self.process, self.schedule, self.event_shape = model.process, model.schedule, model.event_shape
        self.hold = model.level(torch.tensor([t_hold], dtype=torch.float64, device=mask.device))

    def level(self, t, **params) -> NoiseLevel:
        lvl = self.model.level(t, **params)
        m = self.mask.unsqueeze(1)  # (1 or B, 1, *event)
        gamma = torch.where(m, self.hold.gamma, lvl.gamma)
        dgamma = torch.where(m, torch.zeros((), dtype=lvl.dgamma.dtype, device=m.device), lvl.dgamma)
        return NoiseLevel(t=lvl.t, gamma=gamma, dgamma=dgamma)

    def eps(self, z, lvl):
        return self.model.eps(z, lvl)

    def decode(self, x0):
        return self.model.decode(x0)


def inpaint(model, x_known: torch.Tensor, mask: torch.Tensor, seeds, plan: Plan | None = None, *,
            method: str = "replace", resample: int = 1, batch_size: int = 256, device="cpu", autocast=None,
            progress=None, cond=None):
    """Inpaint items x_known (N, *event, data space) where `mask` (event shape or (N, *event), bool) is known.

    Item k uses seed k (and label k of `cond`, a guidance.Conditioning). Returns (x, used): the completed items
    (N, *event) and what was run.
    """
    if cond is not None:
        cond.check(model)
    if method not in INPAINT_METHODS:
        raise UdiffError(f"unknown inpainting method {method!r} (allowed: {', '.join(METHODS)})")
    plan = (plan or Plan()).resolve(model)
    if resample > 1 and (method != "replace" or plan.sampler != "ancestral"):
        raise UdiffError("--resample needs --method replace with the ancestral sampler (RePaint)")
    if method == "replace" and SAMPLERS.entry(plan.sampler).info.get("adaptive"):
        raise UdiffError(f"sampler {plan.sampler!r} takes its own steps, so it cannot replace known pixels at "
                         "each step; use heun, em or ancestral for inpainting")
    ts = plan.grid_times(model)
    fn = SAMPLERS.get(plan.sampler)
    shape = (model.process.k,) + model.event_shape
    mask = mask.to(device=device, dtype=torch.bool)
    if mask.shape == model.event_shape:
        mask = mask.unsqueeze(0)
    lvl1 = model.level(torch.ones(1, dtype=torch.float64, device=device))

    def body(batch, start, noise):
        sl = slice(start, start + len(batch))
        run = model if cond is None else cond.bind(model, start, len(batch))
        xk = x_known[sl].to(device=device, dtype=torch.float64)
        m = mask if mask.shape[0] == 1 else mask[sl]
        x0k = model.encode(xk)  # (b, 1, *event) components
        z = C.prior_sample(model.process, noise(0, shape).double(), lvl1)
        with autocast or contextlib.nullcontext():
            if method == "soft":
                held = HeldModel(run, m, plan.t_end)
                known = C.perturb(model.process, x0k, noise(_KNOWN_STREAM, shape).double(), held.hold)
                z = torch.where(m.unsqueeze(1), known, z)
                x0, nfe = fn(held, z, ts, noise, **plan.options())
                x0 = torch.where(m.unsqueeze(1), x0k, x0)
                return model.decode(x0.float()).double(), nfe

            def replace(i, z, lvl):
                zk = C.perturb(model.process, x0k, noise(_KNOWN_STREAM + 1 + i, shape).to(z), lvl)
                y = torch.where(m.unsqueeze(1), data_layout(model, zk), data_layout(model, z))
                return component_layout(model, y)

            if resample > 1:
                x0, nfe = _repaint(run, z, ts, noise, replace, resample)
            else:
                z = replace(-1, z, model.level(ts[:1].to(device)))
                x0, nfe = fn(run, z, ts, noise, callback=replace, **plan.options())
            return torch.where(m, xk, model.decode(x0.float()).double()), nfe

    x, nfe = in_batches(seeds, batch_size, device, body, progress)
    if x is None:
        x = torch.zeros((0,) + model.event_shape)
    check_finite(x, f"udiff inpaint ({plan.sampler}, {plan.steps} steps)")
    return x, {"method": method, **plan.described(nfe), "resample": resample,
               **(cond.described() if cond is not None else {})}


def _repaint(model, z, ts, noise, replace, resample: int):
    """Ancestral steps with replacement, each repeated `resample` times with re-noising (RePaint)."""
    proc = model.process
    lv = [model.level(t.reshape(1).to(z.device)) for t in ts]
    shape = tuple(z.shape[1:])
    z = replace(-1, z, lv[0])
    nfe = 0
    for i in range(len(ts) - 1):
        for r in range(resample):
            stream = 1 + (i * resample + r) * 2
            eps = model.eps(z, lv[i]).to(z.dtype)
            z = C.ancestral_step(proc, z, eps, lv[i], lv[i + 1], noise(stream, shape).to(z))
            z = replace(i * resample + r, z, lv[i + 1])
            nfe += 1
            if r < resample - 1:
                z = C.forward_step(proc, z, lv[i + 1], lv[i], noise(stream + 1, shape).to(z))
    x0 = C.x0_from_eps(proc, z, model.eps(z, lv[-1]).to(z.dtype), lv[-1])
    return x0, nfe + 1


# Named masks: the KNOWN region of an image (C, H, W) as a slice of what is unknown ('lower-half': the lower
# half is missing).
for _name, _unknown in (("lower-half", lambda h, w: (slice(h // 2, None), slice(None))),
                        ("upper-half", lambda h, w: (slice(None, h // 2), slice(None))),
                        ("left-half", lambda h, w: (slice(None), slice(None, w // 2))),
                        ("right-half", lambda h, w: (slice(None), slice(w // 2, None))),
                        ("center", lambda h, w: (slice(h // 4, h - h // 4), slice(w // 4, w - w // 4)))):
    MASKS.implements(_name)(_unknown)


def named_mask(name: str, shape) -> torch.Tensor:
    """A built-in KNOWN mask for images (C, H, W)."""
    if len(shape) != 3:
        raise UdiffError(f"--mask {name}: named masks are for images; give a mask file for vector data")
    if name not in MASKS:
        raise UdiffError(f"--mask {name}: unknown named mask (allowed: {', '.join(MASKS.names())}, or a PNG or "
                         "safetensors file)")
    c, h, w = shape
    known = torch.ones(shape, dtype=torch.bool)
    rows, cols = MASKS.get(name)(h, w)
    known[:, rows, cols] = False
    return known
