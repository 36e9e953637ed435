"""What the bits-back coder chooses (udiff/coding.py): its settings and the sizes of its coding batches.

Stdlib only, so that `udiff compress --help` shows the defaults without importing torch. docs/compression.md
says how each default was measured."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """What the encoder chose; the container stores all of it, so the decoder needs only the model."""

    steps: int = 100           # T
    cells: int = 2             # grid cells per standard deviation (at least; the grid is a power of two)
    window: int = 8            # half-width of every Gaussian's support, in its standard deviations
    batch: int = 64            # items per call of the coder, once enough has been coded
    growth: int = 4            # a batch holds at most 1/growth of the items coded before it
    seed: int = 0              # of the initial bits
    sheppard: bool = True      # lower q's variances by delta^2 / 12


def batch_plan(n: int, batch: int, growth: int) -> list[int]:
    """Sizes of the coding batches: 1, then at most 1/growth of the items before, at most `batch`."""
    sizes, done = [], 0
    while done < n:
        s = min(batch, max(1, done // growth), n - done)
        sizes.append(s)
        done += s
    return sizes
