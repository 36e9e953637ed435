"""Bases: orthonormal to 1e-5, Haar equal to PyWavelets, PCA variances equal to numpy's eigenvalues."""

import numpy as np
import pytest
import pywt
import torch

from udiff.basis import BASES, DCTBasis, HaarBasis, PCABasis, PixelBasis, dct_matrix
from udiff.errors import RecipeError

SHAPE = (3, 8, 16)


def _data(n=500, shape=SHAPE, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = int(np.prod(shape))
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + 0.3).reshape((n,) + shape)


@pytest.mark.parametrize("kind", sorted(BASES))
@pytest.mark.parametrize("whiten", [False, True])
def test_orthonormal_round_trip_and_gram(kind, whiten):
    b = BASES[kind](SHAPE, whiten=whiten)
    x = _data()
    b.fit(x.float())
    d = int(np.prod(SHAPE))
    eye = torch.eye(d).reshape((d,) + SHAPE)
    gram = b._forward(eye).reshape(d, d)
    assert (gram @ gram.T - torch.eye(d)).abs().max() < 1e-5
    xs = x[:7].float()
    assert (b.decode(b.encode(xs)) - xs).abs().max() < 1e-5
    assert (b.from_net(b.to_net(xs)) - xs).abs().max() < 1e-5


def test_haar_equals_pywavelets():
    x = torch.randn(4, 3, 16, 32, dtype=torch.float64)
    for levels in (1, 2, 4):
        ours = HaarBasis((3, 16, 32), levels=levels).double()._forward(x)
        coeffs = pywt.wavedec2(x.numpy(), "haar", mode="periodization", level=levels, axes=(-2, -1))
        ref, _ = pywt.coeffs_to_array(coeffs, axes=(-2, -1))
        assert np.abs(ours.numpy() - ref).max() < 1e-12


def test_haar_on_sizes_that_are_not_powers_of_two():
    """28×28 (Fashion-MNIST) halves twice: 2 levels, equal to PyWavelets' periodized transform."""
    assert HaarBasis((1, 28, 28)).levels == 2
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    ours = HaarBasis((1, 28, 28)).double()._forward(x)
    ref, _ = pywt.coeffs_to_array(pywt.wavedec2(x.numpy(), "haar", mode="periodization", level=2, axes=(-2, -1)),
                                  axes=(-2, -1))
    assert np.abs(ours.numpy() - ref).max() < 1e-12
    b = HaarBasis((1, 28, 28)).double()
    assert (b._inverse(b._forward(x)) - x).abs().max() < 1e-12


def test_haar_rejects_bad_sizes():
    with pytest.raises(RecipeError, match="even image sizes"):
        HaarBasis((1, 27, 28))
    with pytest.raises(RecipeError, match="at most 2"):
        HaarBasis((1, 28, 28), levels=3)
    with pytest.raises(RecipeError, match="at most 3"):
        HaarBasis((1, 8, 8), levels=4)
    with pytest.raises(RecipeError, match="needs image data"):
        HaarBasis((16,))


def test_pca_variances_are_numpys_eigenvalues():
    x = _data(800, (1, 4, 5))
    b = PCABasis((1, 4, 5)).fit(x.float())
    flat = x.reshape(800, -1).numpy()
    evals = np.sort(np.linalg.eigvalsh(np.cov(flat.T)))[::-1]
    assert np.allclose(b.variances.numpy().ravel(), evals, rtol=1e-4, atol=1e-7)
    # components come out uncorrelated, in order of decreasing variance
    comps = b.encode(x.float()).reshape(800, -1).double()
    c = torch.cov(comps.T)
    assert (c - torch.diag(torch.diag(c))).abs().max() < 1e-4


def test_dct_matrix_is_scipys_orthonormal_dct():
    from scipy.fft import dct

    x = np.random.default_rng(0).normal(size=(5, 12))
    assert np.allclose((torch.from_numpy(x) @ dct_matrix(12).T).numpy(), dct(x, type=2, norm="ortho", axis=-1))


def test_whitening_gives_unit_variance_and_the_fitted_prior():
    x = _data(4000, (2, 4, 4))
    for cls in (PixelBasis, DCTBasis, HaarBasis, PCABasis):
        b = cls((2, 4, 4), whiten=True).fit(x.float())
        chi = b.encode(x.float()).double()
        assert torch.allclose(chi.mean(0), torch.zeros(2, 4, 4, dtype=torch.float64), atol=1e-4)
        assert torch.allclose(chi.var(0), torch.ones(2, 4, 4, dtype=torch.float64), rtol=1e-3)
        # N(0, I) on the components is N(mu, U^T Sigma U) in data space (Sigma diagonal in the basis); for
        # PCA, whose U diagonalizes the covariance, that is the data's own covariance
        prior = b.decode(torch.randn(40000, 2, 4, 4)).double().reshape(40000, -1)
        d = 32
        U = b._forward(torch.eye(d, dtype=torch.float64).reshape(d, 2, 4, 4)).reshape(d, d).T  # rows: basis vectors
        want = U.T @ torch.diag(b.variances.double().reshape(-1)) @ U
        assert torch.allclose(prior.mean(0), x.reshape(4000, -1).mean(0), atol=0.05)
        assert (torch.cov(prior.T) - want).norm() / want.norm() < 0.05
        if cls is PCABasis:
            data_cov = torch.cov(x.reshape(4000, -1).T)
            assert (want - data_cov).norm() / data_cov.norm() < 1e-3


def test_unwhitened_bases_keep_the_standard_prior():
    b = HaarBasis((1, 4, 4)).fit(_data(300, (1, 4, 4)).float())
    assert torch.equal(b.mean, torch.zeros(1, 4, 4)) and torch.equal(b.scale, torch.ones(1, 4, 4))


def test_labels_offered_by_each_basis():
    assert set(PixelBasis(SHAPE).labels()) == {"variance", "row", "column"}
    assert set(DCTBasis(SHAPE).labels()) == {"variance", "row", "column", "frequency"}
    assert set(HaarBasis(SHAPE).labels()) == {"variance", "row", "column", "level"}
    assert set(PCABasis((6,)).labels()) == {"variance", "rank"}
    lev = HaarBasis((1, 8, 8)).labels()["level"][0] * 3
    close = lambda a, b: abs(float(a) - b) < 1e-9  # noqa: E731 - computed labels: compare with a tolerance
    assert close(lev[0, 0], 0) and all(close(lev[i, j], 1) for i, j in ((0, 1), (1, 0), (1, 1)))
    assert close(lev[2, 3], 2) and close(lev[7, 7], 3)
    freq = DCTBasis((1, 4, 4)).labels()["frequency"][0]
    assert close(freq[0, 0], 0) and close(freq[3, 3], 1) and freq[0, 1] < freq[1, 1]
