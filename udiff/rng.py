"""Randomness that belongs to each sample: counter-based noise, seed ranges, per-step training seeds.

Sample k of `udiff sample --seeds ...` draws all of its noise from its own seed, so it is the same image
whatever the batch size, batch order or number of processes. Instead of one torch.Generator per sample
(one kernel launch per sample per step), every normal variate is a pure function of
(seed, stream, element index): a 32-bit integer hash (Wellons' "lowbias32" mixer, chained over the three
counters) gives two uniforms, and Box-Muller turns them into two normals. It is vectorized over the whole
batch, bit-identical in its integer part on every device, and needs no state to save or restore.

Training uses torch's own generators, reseeded from (run seed, step) at every step, so a resumed run
draws exactly the numbers an uninterrupted one would (see `step_seed`).
"""

from __future__ import annotations

import math
import re

import torch

from .errors import UdiffError

_MASK = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 tensors holding values in [0, 2^32), without int64 overflow."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Wellons' lowbias32 integer hash on int64 tensors with values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix_int(x: int) -> int:
    """The same hash on a Python int (for per-step seeds)."""
    x &= _MASK
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """A 63-bit seed for torch generators at one training step, a pure function of (seed, step, salt)."""
    a = _mix_int(_mix_int(seed ^ 0x9E3779B9) ^ (step & _MASK))
    b = _mix_int(a ^ _mix_int((step >> 32) + 0x85EBCA6B + salt * 0x27D4EB2F))
    return ((a << 31) ^ b) & 0x7FFFFFFFFFFFFFFF


class NoiseSource:
    """Standard normal noise for a batch of samples, each drawing from its own seed.

    `noise(stream, shape)` returns a float32 tensor of shape (B, *shape) where row b depends only on
    (seeds[b], stream, shape). Samplers use stream 0 for the initial state and stream i + 1 for step i.
    """

    def __init__(self, seeds, device="cpu"):
        seeds = torch.as_tensor(seeds, dtype=torch.int64).reshape(-1)
        if seeds.numel() and (int(seeds.min()) < 0 or int(seeds.max()) > _MASK):
            raise UdiffError("seeds must lie in 0..4294967295")
        self.device = torch.device(device)
        self.seeds = seeds.to(self.device)
        self._keys = mix32(self.seeds ^ 0x9E3779B9)  # (B,)

    def __len__(self):
        return self.seeds.numel()

    def uniform_bits(self, stream: int, n: int) -> torch.Tensor:
        """(B, n) int64 tensor of 32-bit hashes for elements 0..n-1 of `stream`."""
        s = mix32(self._keys ^ mix32(torch.tensor(stream & _MASK, device=self.device) + 0x6A09E667))
        idx = torch.arange(n, device=self.device, dtype=torch.int64)
        return mix32(mix32(s[:, None] ^ idx[None, :]) + 0x3C6EF372)

    def __call__(self, stream: int, shape) -> torch.Tensor:
        shape = tuple(shape)
        n = math.prod(shape)
        pairs = (n + 1) // 2
        h = self.uniform_bits(stream, 2 * pairs).view(-1, pairs, 2)
        # 24-bit uniforms in (0, 1] and [0, 1): Box-Muller needs log(u1) finite.
        u1 = ((h[..., 0] >> 8).to(torch.float32) + 1.0) * (1.0 / 16777216.0)
        u2 = (h[..., 1] >> 8).to(torch.float32) * (1.0 / 16777216.0)
        r = torch.sqrt(-2.0 * torch.log(u1))
        theta = (2.0 * math.pi) * u2
        z = torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=-1).reshape(len(self), 2 * pairs)
        return z[:, :n].reshape((len(self),) + shape)


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_seeds(text: str) -> list[int]:
    """'0-63,100,200-201' → [0, 1, ..., 63, 100, 200, 201] (ranges are inclusive, order is kept)."""
    out: list[int] = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise UdiffError(f"--seeds {text}: expected comma-separated integers or ranges like 0-63")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise UdiffError(f"--seeds {text}: range {a}-{b} runs backwards; write {b}-{a}")
        out.extend(range(a, b + 1))
    if len(set(out)) != len(out):
        raise UdiffError(f"--seeds {text}: a seed appears twice; each sample needs its own seed")
    if out and out[-1] > _MASK:
        raise UdiffError(f"--seeds {text}: seeds must lie in 0..4294967295")
    return out
