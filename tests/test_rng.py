"""Per-sample noise: a pure function of (seed, stream, index), normal, independent across seeds and streams."""

import pytest
import torch

from udiff.errors import UdiffError
from udiff.rng import NoiseSource, parse_seeds, step_seed


def test_row_depends_only_on_its_seed():
    a = NoiseSource([3, 5, 7])(4, (2, 3))
    b = NoiseSource([7, 3])(4, (2, 3))
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(NoiseSource([3])(4, (6,)), NoiseSource([3])(5, (6,)))


def test_moments_of_the_noise():
    z = NoiseSource(range(64))(1, (20_000,)).double()
    assert abs(z.mean()) < 0.005 and abs(z.std() - 1) < 0.005
    assert abs((z ** 4).mean() - 3) < 0.03
    c = torch.corrcoef(z)
    assert (c - torch.eye(64)).abs().max() < 0.04  # independent seeds
    x = NoiseSource([1])(2, (100_000,))[0].double()
    y = NoiseSource([1])(3, (100_000,))[0].double()
    assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1]) < 0.015  # independent streams
    assert abs(torch.corrcoef(torch.stack([x[:-1], x[1:]]))[0, 1]) < 0.015  # no lag correlation


def test_odd_sizes_and_empty():
    assert NoiseSource([1, 2])(0, (3,)).shape == (2, 3)
    assert torch.equal(NoiseSource([1])(0, (3,))[0], NoiseSource([1])(0, (4,))[0, :3])
    assert NoiseSource([])(0, (3,)).shape == (0, 3)


def test_parse_seeds():
    assert parse_seeds("0-3,10,12-13") == [0, 1, 2, 3, 10, 12, 13]
    for bad in ("a", "3-1", "1,1", "1-", ""):
        with pytest.raises(UdiffError):
            parse_seeds(bad)


def test_step_seed_is_a_function_of_its_arguments():
    assert step_seed(0, 5) == step_seed(0, 5)
    assert len({step_seed(s, k) for s in range(4) for k in range(100)}) == 400
    assert 0 <= step_seed(2**31 - 1, 10**9) < 2**63
