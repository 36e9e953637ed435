"""Bases: the orthonormal representation the diffusion runs in (GUD, Gerdes et al. 2024, §3).

Components chi = S^-1 U (x - mu) (GUD eqs. 6-8: M = S^-1 U), with U orthonormal and S a per-component scale:

    pixel   U = I
    pca     U = eigenvectors of the data covariance, components in order of decreasing variance
    dct     orthonormal DCT-II over H and W (over d for vectors)
    haar    orthonormal multi-level 2-D Haar wavelet, periodization, sizes divisible by 2^levels (28×28: up to
            2 levels, 32×32: up to 5), coefficients laid out
            as PyWavelets' coeffs_to_array: approximation top-left, then (V | H | D) details per level

Every basis keeps the data's event shape for its components (PCA lays its d coefficients out in rank
order), so a component-wise schedule is a tensor shaped like one data item. Whitening (`whiten`) sets
S^2 = Sigma, the data variance of each component, and mu = the data mean: the process's stationary law
N(0, I) on chi is then N(mu, U^T Sigma U) in data space, GUD's variance-matching prior. Without whitening
S = 1 and mu = 0: the usual N(0, I) prior.

The network never sees components: it sees `to_net(chi)` = U^T chi (whitened data layout, where convolutions
keep their image prior) and its output returns through `from_net` = U. Noise is drawn directly in component
space: for a real orthonormal U, U eps ~ N(0, I) again.

`fit(x)` estimates mu, Sigma (and U for PCA); `labels()` gives the ordering labels each basis offers, in
generation order: a lower label is generated earlier (see schedule.SoftConditioning).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import RecipeError

VARIANCE_FLOOR = 1e-6  # relative to the mean variance: constant pixels (digit borders) must not divide by 0


class Basis(nn.Module):
    """Shared part: mean, scale and data variances as buffers; subclasses give U (`_forward`/`_inverse`)."""

    kind = "base"

    def __init__(self, event_shape: tuple[int, ...], whiten: bool = False):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.whiten = bool(whiten)
        self.register_buffer("mean", torch.zeros(self.event_shape))
        self.register_buffer("scale", torch.ones(self.event_shape))
        self.register_buffer("variances", torch.ones(self.event_shape))

    # --- the orthonormal transform U (subclasses) ---------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _inverse(self, c: torch.Tensor) -> torch.Tensor:
        return c

    # --- the four maps --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Data (N, *event) → components chi = S^-1 U (x - mu)."""
        return self._forward(x - self.mean.to(x.dtype)) / self.scale.to(x.dtype)

    def decode(self, chi: torch.Tensor) -> torch.Tensor:
        """Components (N, *event) → data x = mu + U^T S chi."""
        return self._inverse(chi * self.scale.to(chi.dtype)) + self.mean.to(chi.dtype)

    def to_net(self, chi: torch.Tensor) -> torch.Tensor:
        """Components → the network's view, U^T chi (whitened data layout)."""
        return self._inverse(chi)

    def from_net(self, y: torch.Tensor) -> torch.Tensor:
        """Network output in data layout → components, U y."""
        return self._forward(y)

    # --- fitting --------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> "Basis":
        """Estimate the data mean and the per-component variances (and U where the basis is fitted)."""
        x = x.to(torch.float64)
        mean = x.mean(0)
        self._fit_transform(x - mean)
        comps = self._forward(x - mean)
        self.set_fitted(mean, comps.var(0, unbiased=True))
        return self

    def _fit_transform(self, centred: torch.Tensor) -> None:
        """Fitted bases (PCA) estimate U here."""

    def set_fitted(self, mean: torch.Tensor, variances: torch.Tensor) -> None:
        """Install data mean and component variances; whitening follows from them."""
        self.variances.copy_(variances.to(self.variances.dtype))
        if self.whiten:
            self.mean.copy_(mean.to(self.mean.dtype))
            self.scale.copy_(self.floored_variances().sqrt().to(self.scale.dtype))
        else:
            self.mean.zero_()
            self.scale.fill_(1.0)

    def fitted_tensors(self, data_mean: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a basis artifact stores: the data mean, the component variances, and U where fitted."""
        return {"mean": data_mean.float(), "variances": self.variances.float()}

    def load_fitted(self, tensors: dict[str, torch.Tensor]) -> None:
        self.set_fitted(tensors["mean"].double(), tensors["variances"].double())

    def spread(self, device) -> torch.Tensor:
        """M[j, p] = (Uᵀ e_j)_p², (d, d) float64: how a component's variance spreads over the pixels (kept
        once computed: the basis is fixed)."""
        cache = self.__dict__.get("_spread")
        if cache is None or cache.device != torch.device(device):
            shape = tuple(self.event_shape)
            d = math.prod(shape)
            eye = torch.eye(d, dtype=torch.float64, device=device).reshape((d,) + shape)
            cache = self.to_net(eye).reshape(d, d).square()
            self.__dict__["_spread"] = cache
        return cache

    def floored_variances(self) -> torch.Tensor:
        """Component variances (float64), floored at VARIANCE_FLOOR × their mean (constant pixels)."""
        v = self.variances.double()
        return v.clamp_min(VARIANCE_FLOOR * float(v.mean()))

    def log_snr_offset(self) -> torch.Tensor:
        """log(Sigma_i / S_i^2): true log-SNR minus the process's -gamma (0 for whitened components)."""
        return torch.log(self.floored_variances()) - 2.0 * torch.log(self.scale.double())

    # --- ordering labels (generation order: lower = earlier) -------------------------------------------
    def labels(self) -> dict[str, torch.Tensor]:
        """Name → label per component (event shape). Spatial labels are in [0, 1]; variance in nats."""
        out = {"variance": -torch.log(self.floored_variances())}
        if len(self.event_shape) == 3:
            c, h, w = self.event_shape
            out["row"] = _ramp(h).reshape(1, h, 1).expand(c, h, w).clone()
            out["column"] = _ramp(w).reshape(1, 1, w).expand(c, h, w).clone()
        return out


def _twos(n: int) -> int:
    """How many times n can be halved: the exponent of 2 in n."""
    k = 0
    while n > 0 and n % 2 == 0:
        n, k = n // 2, k + 1
    return k


def _ramp(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float64) / max(n - 1, 1)


class PixelBasis(Basis):
    """The identity: components are the pixels (or vector entries) themselves."""

    kind = "pixel"


class PCABasis(Basis):
    """Eigenvectors of the data covariance; component j (flat position j) has the j-th largest variance."""

    kind = "pca"

    def __init__(self, event_shape, whiten=False):
        super().__init__(event_shape, whiten)
        d = math.prod(self.event_shape)
        self.register_buffer("U", torch.eye(d))  # rows are eigenvectors

    def _forward(self, x):
        flat = x.reshape(x.shape[0], -1)
        return (flat @ self.U.to(flat.dtype).t()).reshape(x.shape)

    def _inverse(self, c):
        flat = c.reshape(c.shape[0], -1)
        return (flat @ self.U.to(flat.dtype)).reshape(c.shape)

    def _fit_transform(self, centred):
        flat = centred.reshape(centred.shape[0], -1)
        cov = flat.t() @ flat / max(flat.shape[0] - 1, 1)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(evals, descending=True)
        self.U.copy_(evecs[:, order].t().to(self.U.dtype))

    def fitted_tensors(self, data_mean):
        return {**super().fitted_tensors(data_mean), "U": self.U.float()}

    def load_fitted(self, tensors):
        self.U.copy_(tensors["U"].to(self.U.dtype))
        super().load_fitted(tensors)

    def labels(self):
        out = super().labels()
        d = math.prod(self.event_shape)
        out["rank"] = _ramp(d).reshape(self.event_shape)
        return out


def dct_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n × n): row k is the k-th cosine, D D^T = I."""
    k = torch.arange(n, dtype=dtype)[:, None]
    i = torch.arange(n, dtype=dtype)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


class DCTBasis(Basis):
    """Orthonormal DCT-II over (H, W) of each channel, or over d for vectors; frequency (0, 0) top-left."""

    kind = "dct"

    def __init__(self, event_shape, whiten=False):
        super().__init__(event_shape, whiten)
        if len(self.event_shape) == 3:
            _, h, w = self.event_shape
            self.register_buffer("dh", dct_matrix(h), persistent=False)  # float64, cast per call
            self.register_buffer("dw", dct_matrix(w), persistent=False)
        else:
            self.register_buffer("dw", dct_matrix(math.prod(self.event_shape)), persistent=False)

    def _forward(self, x):
        if len(self.event_shape) == 3:
            return self.dh.to(x.dtype) @ x @ self.dw.to(x.dtype).t()
        return (x.reshape(x.shape[0], -1) @ self.dw.to(x.dtype).t()).reshape(x.shape)

    def _inverse(self, c):
        if len(self.event_shape) == 3:
            return self.dh.to(c.dtype).t() @ c @ self.dw.to(c.dtype)
        return (c.reshape(c.shape[0], -1) @ self.dw.to(c.dtype)).reshape(c.shape)

    def labels(self):
        out = super().labels()
        if len(self.event_shape) == 3:
            c, h, w = self.event_shape
            fy = torch.arange(h, dtype=torch.float64).reshape(h, 1)
            fx = torch.arange(w, dtype=torch.float64).reshape(1, w)
            radial = torch.sqrt((fy / max(h - 1, 1)) ** 2 + (fx / max(w - 1, 1)) ** 2) / math.sqrt(2.0)
            out["frequency"] = radial.expand(h, w).unsqueeze(0).expand(c, h, w).clone()
        else:
            out["frequency"] = _ramp(math.prod(self.event_shape)).reshape(self.event_shape)
        return out


class HaarBasis(Basis):
    """Orthonormal multi-level 2-D Haar (periodization), equal to PyWavelets' wavedec2(..., 'haar',
    mode='periodization') laid out by coeffs_to_array. One level on each 2×2 block [[a, b], [c, d]]:
    A = (a+b+c+d)/2 (top-left, recursed), V = (a-b+c-d)/2 (top-right), H = (a+b-c-d)/2 (bottom-left),
    D = (a-b-c+d)/2 (bottom-right)."""

    kind = "haar"

    def __init__(self, event_shape, whiten=False, levels: int = 0):
        super().__init__(event_shape, whiten)
        if len(self.event_shape) != 3:
            raise RecipeError(f"[basis] kind: 'haar' needs image data (C×H×W), got shape {self.event_shape}; "
                              "use pca or dct")
        _, h, w = self.event_shape
        max_levels = _twos(math.gcd(h, w))  # each level halves H and W: both must stay even
        if max_levels == 0:
            raise RecipeError(f"[basis] kind: 'haar' needs even image sizes, got {h}×{w}; use dct or pca")
        if levels > max_levels:
            raise RecipeError(f"[basis] levels: at most {max_levels} for {h}×{w} images (each level halves the "
                              f"size), got {levels}")
        self.levels = levels or max_levels

    def _forward(self, x):
        out = x.clone()
        h, w = x.shape[-2:]
        for _ in range(self.levels):
            blk = out[..., :h, :w]
            a, b = blk[..., 0::2, 0::2], blk[..., 0::2, 1::2]
            c, d = blk[..., 1::2, 0::2], blk[..., 1::2, 1::2]
            h2, w2 = h // 2, w // 2
            new = torch.empty_like(blk)
            new[..., :h2, :w2] = (a + b + c + d) / 2
            new[..., :h2, w2:] = (a - b + c - d) / 2
            new[..., h2:, :w2] = (a + b - c - d) / 2
            new[..., h2:, w2:] = (a - b - c + d) / 2
            out[..., :h, :w] = new
            h, w = h2, w2
        return out

    def _inverse(self, c):
        out = c.clone()
        h, w = (s >> self.levels for s in c.shape[-2:])
        for _ in range(self.levels):
            A, V = out[..., :h, :w], out[..., :h, w:2 * w]
            H, D = out[..., h:2 * h, :w], out[..., h:2 * h, w:2 * w]
            blk = torch.empty_like(out[..., :2 * h, :2 * w])
            blk[..., 0::2, 0::2] = (A + V + H + D) / 2
            blk[..., 0::2, 1::2] = (A - V + H - D) / 2
            blk[..., 1::2, 0::2] = (A + V - H - D) / 2
            blk[..., 1::2, 1::2] = (A - V - H + D) / 2
            out[..., :2 * h, :2 * w] = blk
            h, w = 2 * h, 2 * w
        return out

    def level_map(self) -> torch.Tensor:
        """Per coefficient: 0 for the approximation, j for the details of the j-th level from the coarsest."""
        c, h, w = self.event_shape
        lev = torch.full((h, w), float(self.levels), dtype=torch.float64)
        hh, ww = h, w
        for j in range(self.levels - 1, -1, -1):
            hh, ww = hh // 2, ww // 2
            lev[:hh, :ww] = j
        return lev.unsqueeze(0).expand(c, h, w).clone()

    def labels(self):
        out = super().labels()
        c, h, w = self.event_shape
        lev = self.level_map()
        out["level"] = lev / self.levels
        # Row/column of the image region a coefficient describes, in [0, 1]: position within its block.
        rows = torch.zeros(h, w, dtype=torch.float64)
        cols = torch.zeros(h, w, dtype=torch.float64)
        size_h, size_w = h >> self.levels, w >> self.levels
        regions = [(0, 0, size_h, size_w)]
        for _ in range(self.levels):
            regions += [(0, size_w, size_h, size_w), (size_h, 0, size_h, size_w), (size_h, size_w, size_h, size_w)]
            size_h, size_w = 2 * size_h, 2 * size_w
        for r0, c0, bh, bw in regions:
            rows[r0:r0 + bh, c0:c0 + bw] = _ramp(bh).reshape(bh, 1)
            cols[r0:r0 + bh, c0:c0 + bw] = _ramp(bw).reshape(1, bw)
        out["row"] = rows.unsqueeze(0).expand(c, h, w).clone()
        out["column"] = cols.unsqueeze(0).expand(c, h, w).clone()
        return out


BASES = {"pixel": PixelBasis, "pca": PCABasis, "dct": DCTBasis, "haar": HaarBasis}
