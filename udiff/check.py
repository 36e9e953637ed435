"""`udiff check`: what a recipe's sampler and schedule cost, measured on the exact Gaussian denoiser (docs/check.md).

The recipe's data are replaced by the Gaussian with their mean and covariance (in the recipe's basis), for which
the denoiser E[x0 | z_t] is exact (nets/gaussian.py). Sampling that model with the recipe's sampler, steps and
grid therefore measures the discretization alone: the relative errors of the samples' mean and covariance
against the fitted Gaussian's, beside the same errors of as many exact Gaussian draws (the Monte-Carlo floor).
The variational bound of the exact model measures the schedule's endpoints: its diffusion term is exact, so what
the prior (t = 1) and reconstruction (t = 0) terms add is what the ends cost: for 8-bit images those two terms
(both vanish for ideal ends), for float data the bound's excess over the Gaussian's exact negative log-likelihood.

Pure torch: no click, no files, no printing.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .errors import UdiffError

MAX_DIMS = 1024  # the exact denoiser factors a d × d matrix per time step: beyond this, minutes on a CPU
SAMPLES = 4000
NLL_ITEMS = 512


def gaussian_recipe(rec):
    """The recipe with its [net] replaced by the exact Gaussian denoiser (every other section kept)."""
    from . import recipe as R

    raw = rec.to_dict()
    raw["net"] = {"kind": "gaussian"}
    raw.pop("train", None)
    return R.from_dict(raw, origin="udiff check")


def exact_model(rec, ds, max_dims: int = MAX_DIMS):
    """The recipe's process, schedule and basis with the exact denoiser of its data's fitted Gaussian."""
    from .build import build_model, fit_basis, resolve

    d = math.prod(ds.shape)
    if d > max_dims:
        raise UdiffError(f"udiff check: the data have {d} dimensions, more than --max-dims {max_dims}; the exact "
                         f"denoiser factors a {d}×{d} matrix per step (raise --max-dims to {d} to wait for it; a "
                         "subset of pixels or components would be another diffusion, see docs/check.md)")
    info = ds.info()
    grec = gaussian_recipe(resolve(rec, info))
    x = ds.unit()
    model = build_model(grec, info, fit_basis(grec, x))
    model.fit(x)
    return model, grec


def data_moments(ds):
    """The fitted Gaussian in data space: mean (d,) and covariance (d, d), float64."""
    from .nets.gaussian import moments

    return moments(ds.unit())


def moment_errors(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> dict:
    """Relative errors of samples' moments: |mean − m| / sqrt(tr C) and |cov − C|_F / |C|_F."""
    x = x.reshape(x.shape[0], -1).double()
    scale = float(torch.trace(cov).clamp_min(1e-300).sqrt())
    return {"mean_error": float((x.mean(0) - mean).norm()) / scale,
            "cov_error": float((torch.cov(x.T) - cov).norm() / cov.norm().clamp_min(1e-300))}


def exact_draws(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n exact draws of N(mean, cov) (a singular cov is fine: eigen-decomposition, negative eigenvalues cut)."""
    evals, evecs = torch.linalg.eigh(cov)
    root = evecs * evals.clamp_min(0).sqrt()
    g = torch.Generator().manual_seed(seed)
    return mean + torch.randn(n, mean.numel(), dtype=torch.float64, generator=g) @ root.T


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float | None:
    """-log N(x; m, C) of float items x (N, *event), averaged, in nats/dim; None when C is singular."""
    d = cov.shape[0]
    r = x.reshape(x.shape[0], -1).double() - mean
    sign, logdet = torch.linalg.slogdet(cov)
    if sign <= 0:
        return None
    quad = (torch.linalg.solve(cov, r.T).T * r).sum(1).mean()
    return 0.5 * (d * math.log(2 * math.pi) + float(logdet) + float(quad)) / d


@dataclasses.dataclass
class CheckResult:
    sampler: dict
    n: int
    dims: int
    errors: dict
    floor: dict
    bound: dict
    reference_nll: float | None
    units: str

    def as_dict(self) -> dict:
        """Everything, plus `endpoint_cost`: what the schedule's ends add to the bound. For 8-bit images the prior
        and reconstruction terms themselves (both vanish for ideal ends: the diffusion term alone is then
        -log2 P(x)); for float data the bound's excess over the Gaussian's exact NLL (the diffusion term of the
        exact model being exact, the excess is the ends')."""
        out = dataclasses.asdict(self)
        if self.units == "bits/dim":
            out["endpoint_cost"] = self.bound.get("prior", 0.0) + self.bound.get("recon", 0.0)
        else:
            out["endpoint_cost"] = None if self.reference_nll is None else self.bound["value"] - self.reference_nll
        return out


def check(rec, ds, plan, *, n: int = SAMPLES, seed: int = 0, batch_size: int = 1000, nll_items: int = NLL_ITEMS,
          max_dims: int = MAX_DIMS, device="cpu", progress=None) -> CheckResult:
    """Sample the exact Gaussian model of `rec` with `plan` (samplers.Plan) from seeds seed .. seed + n - 1, and
    compute its bound over the first `nll_items` data items."""
    from .likelihood import evaluate
    from .samplers import generate

    model, _ = exact_model(rec, ds, max_dims)
    model.prepare(torch.device(device))
    mean, cov = data_moments(ds)
    x, used = generate(model, list(range(seed, seed + n)), plan, batch_size=batch_size, device=device,
                       progress=progress)
    errors = moment_errors(x.cpu(), mean, cov)
    floor = moment_errors(exact_draws(mean, cov, n, seed), mean, cov)
    items = ds.tensor[:nll_items] if nll_items else ds.tensor
    est = evaluate(model, items, image8=ds.is_image8, method="vlb", seed=seed, device=device, max_repeats=16)
    bound = {"value": est.value, "stderr": est.stderr, **{f"{k}": v for k, v in est.terms.items()},
             "items": est.n, "bounds": est.bounds}
    return CheckResult(sampler=used, n=n, dims=math.prod(ds.shape), errors=errors, floor=floor, bound=bound,
                       reference_nll=None if ds.is_image8 else gaussian_nll(ds.unit()[:est.n], mean, cov),
                       units=est.units)
