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


def _signed(c: int) -> int:
    """A 32-bit constant as the int32 with the same bits."""
    return c - (1 << 32) if c >= 1 << 31 else c


_M1, _M2 = _signed(0x7FEB352D), _signed(0x846CA68B)


def mix32(x: torch.Tensor, carry=None) -> torch.Tensor:
    """Wellons' lowbias32 integer hash on int32 tensors (the bits of unsigned 32-bit values).

    Products wrap modulo 2^32 and right shifts are masked to be logical, so the bits are those of the
    unsigned hash on every device, at a few int32 operations per element. `carry` (bool tensor): the input
    had a 33rd bit (a sum that overflowed), which the first shift brings down to bit 16."""
    x = x ^ ((x >> 16) & 0xFFFF)
    if carry is not None:
        x = x ^ (carry.to(torch.int32) << 16)
    x = x * _M1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _M2
    return x ^ ((x >> 16) & 0xFFFF)


def _mix_sum(x: torch.Tensor, c: int) -> torch.Tensor:
    """mix32 of the unsigned sum x + c (x int32 bits, 0 <= c < 2^32) with its carry, as the generator defines it."""
    flip = _signed(1 << 31)
    carry = (x ^ flip) >= _signed((((1 << 32) - c) & _MASK) ^ (1 << 31))  # unsigned x >= 2^32 - c
    return mix32(x + _signed(c), carry)


def _as_i32(v) -> torch.Tensor:
    """Values in [0, 2^32) (int64 tensor) → int32 with the same low 32 bits."""
    v = torch.as_tensor(v, dtype=torch.int64)
    return torch.where(v >= 1 << 31, v - (1 << 32), v).to(torch.int32)


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
        self._keys = mix32(_as_i32(self.seeds).to(self.device) ^ _signed(0x9E3779B9))  # (B,) int32

    def __len__(self):
        return self.seeds.numel()

    def _bits(self, stream: int, n: int) -> torch.Tensor:
        """(B, n) int32 tensor holding the 32-bit hashes of elements 0..n-1 of `stream`."""
        salt = _mix_sum(torch.tensor(_signed(stream & _MASK), dtype=torch.int32, device=self.device), 0x6A09E667)
        s = mix32(self._keys ^ salt)
        idx = torch.arange(n, device=self.device, dtype=torch.int32)
        return _mix_sum(mix32(s[:, None] ^ idx[None, :]), 0x3C6EF372)

    def uniform_bits(self, stream: int, n: int) -> torch.Tensor:
        """(B, n) int64 tensor of the 32-bit hashes (0 .. 2^32 - 1) of elements 0..n-1 of `stream`."""
        return self._bits(stream, n).to(torch.int64) & _MASK

    def uniform(self, stream: int, shape, offset: float = 0.5, dtype=torch.float64) -> torch.Tensor:
        """(B, *shape) uniforms on the 24-bit grid (k + offset)/2^24, k = 0 .. 2^24 - 1 (offset 0.5: in (0, 1))."""
        shape = tuple(shape)
        return unit24(self._bits(stream, math.prod(shape)), offset, dtype).reshape((len(self),) + shape)

    def __call__(self, stream: int, shape) -> torch.Tensor:
        shape = tuple(shape)
        n = math.prod(shape)
        pairs = (n + 1) // 2
        h = self._bits(stream, 2 * pairs).view(-1, pairs, 2)
        # 24-bit uniforms in (0, 1] and [0, 1): Box-Muller needs log(u1) finite.
        u1 = unit24(h[..., 0], 1.0, torch.float32)
        u2 = unit24(h[..., 1], 0.0, torch.float32)
        r = torch.sqrt(-2.0 * torch.log(u1))
        theta = (2.0 * math.pi) * u2
        z = torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=-1).reshape(len(self), 2 * pairs)
        return z[:, :n].reshape((len(self),) + shape)


def lattice(u0: torch.Tensor, n: int) -> torch.Tensor:
    """Low-discrepancy uniforms (u0 + i/n) mod 1, i = 0 .. n-1 (VDM's times): u0 (...) → (..., n), float64."""
    i = torch.arange(n, dtype=torch.float64, device=u0.device) / n
    return torch.remainder(u0.double().unsqueeze(-1) + i, 1.0)


def unit24(bits: torch.Tensor, offset: float, dtype) -> torch.Tensor:
    """The top 24 bits of 32-bit hashes (int32 or int64 tensors) as (k + offset) / 2^24."""
    return (((bits >> 8) & 0xFFFFFF).to(dtype) + offset) * (1.0 / 16777216.0)


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


MAX_SEEDS = 10_000_000  # samples per command: beyond, the seed list alone takes gigabytes


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
        if b > _MASK:
            raise UdiffError(f"--seeds {text}: seeds must lie in 0..4294967295")
        if len(out) + b - a + 1 > MAX_SEEDS:
            raise UdiffError(f"--seeds {text}: more than {MAX_SEEDS:,} seeds in one command; split the run into "
                             "several commands with disjoint seed ranges")
        out.extend(range(a, b + 1))
    if len(set(out)) != len(out):
        raise UdiffError(f"--seeds {text}: a seed appears twice; each sample needs its own seed")
    if out and out[-1] > _MASK:
        raise UdiffError(f"--seeds {text}: seeds must lie in 0..4294967295")
    return out
