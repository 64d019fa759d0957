"""The random-field prior of conv models: fitting and sampling checked by Monte Carlo against
a field of known cross-covariance, the periodic draw, the empirical marginals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from microvae.errors import MicrovaeError
from microvae.field import fit_field, sample_field, taper


def correlated_grids(n=200, size=32, seed=0):
    """Two channels: a smooth field, and the same field shifted by (2, 1) cells plus noise and
    an offset: the cross-covariance peaks at lag (+2, +1) from channel 0 to channel 1."""
    rng = np.random.default_rng(seed)
    base = np.stack([gaussian_filter(rng.standard_normal((size, size)), 2, mode="wrap")
                     for _ in range(n)]) * 3
    shifted = np.roll(base, (2, 1), axis=(1, 2)) * 0.8 + 0.3 * rng.standard_normal(base.shape)
    return np.stack([base, shifted + 1.0], 1)


def test_fit_recovers_mean_variance_and_the_direction_of_the_cross_covariance():
    grids = correlated_grids()
    fit = fit_field(grids, max_lag=8, marginal="gaussian")
    assert fit.mean == pytest.approx([0.0, 1.0], abs=0.02)
    lag0 = fit.covariance[:, :, 8, 8]
    empirical = np.cov(grids.transpose(1, 0, 2, 3).reshape(2, -1))
    assert lag0 == pytest.approx(empirical, rel=0.01, abs=1e-3)
    peak = np.unravel_index(fit.covariance[0, 1].argmax(), (17, 17))
    assert peak == (8 + 2, 8 + 1)  # z_1(x + (2, 1)) follows z_0(x)


@pytest.mark.parametrize("periodic,size", [(False, 40), (True, 32)])
def test_draws_have_the_fitted_covariance(periodic, size):
    fit = fit_field(correlated_grids(), max_lag=8, marginal="gaussian")
    draws = sample_field(fit, 400, size, size, generator=torch.Generator().manual_seed(1), periodic=periodic)
    assert draws.shape == (400, 2, size, size) and draws.dtype == torch.float32
    again = fit_field(draws.numpy().astype(np.float64), max_lag=8, marginal="gaussian")
    target = fit.covariance * taper(8)
    assert np.abs(again.covariance - target).max() < 0.05 * np.abs(target).max()
    assert again.mean == pytest.approx(fit.mean, abs=0.02)


def test_periodic_draws_wrap_around():
    """Opposite edges of a periodic draw are neighbours: the covariance across the wrap (last
    column to first) equals the lag-1 covariance inside, where a non-periodic draw has none
    (its edges lie a whole grid apart)."""
    fit = fit_field(correlated_grids(), max_lag=8, marginal="gaussian")
    generator = torch.Generator().manual_seed(2)
    for periodic, expected in ((True, fit.covariance[0, 0, 8, 9]), (False, 0.0)):
        z = sample_field(fit, 2000, 24, 24, generator=generator, periodic=periodic).numpy()[:, 0]
        across = np.mean(z[:, :, -1] * z[:, :, 0]) - z.mean() ** 2
        assert across == pytest.approx(expected, abs=0.02)


def test_the_empirical_marginal_is_kept():
    """A bimodal channel stays bimodal: the draws' quantiles equal the fitted ones, where a
    Gaussian field fills the gap between the modes."""
    rng = np.random.default_rng(3)
    smooth = np.stack([gaussian_filter(rng.standard_normal((32, 32)), 1.5, mode="wrap")
                       for _ in range(100)])
    bimodal = np.where(smooth > 0, 2.0, -1.0) + 0.05 * rng.standard_normal(smooth.shape)
    grids = bimodal[:, None]
    generator = torch.Generator().manual_seed(4)
    levels = [0.1, 0.25, 0.5, 0.75, 0.9]
    fitted = np.quantile(grids, levels)
    empirical = sample_field(fit_field(grids), 200, 32, 32, generator=generator).numpy()
    gaussian = sample_field(fit_field(grids, marginal="gaussian"), 200, 32, 32, generator=generator).numpy()
    assert np.quantile(empirical, levels) == pytest.approx(fitted, abs=0.1)
    in_gap = lambda z: np.mean((z > -0.5) & (z < 1.5))  # noqa: E731
    assert in_gap(empirical) < 0.02 < 0.2 < in_gap(gaussian)


def test_bad_input_is_refused():
    with pytest.raises(MicrovaeError, match="latent grids"):
        fit_field(np.zeros((4, 8)))
    with pytest.raises(MicrovaeError, match="max_lag"):
        fit_field(np.zeros((4, 2, 8, 8)), max_lag=8)
    with pytest.raises(MicrovaeError, match="marginal"):
        fit_field(np.zeros((4, 2, 8, 8)), marginal="student")


def test_a_field_over_3d_grids_has_the_fitted_covariance_and_wraps_around():
    """The same Monte-Carlo check in three dimensions (the field prior of a conv3d model): a
    field shifted by (1, 2, 0) cells from channel 0 to channel 1 is found at that lag, draws
    have the fitted covariance, and a periodic draw wraps around along every axis."""
    rng = np.random.default_rng(5)
    base = np.stack([gaussian_filter(rng.standard_normal((16, 16, 16)), 1.0, mode="wrap")
                     for _ in range(60)]) * 4
    shifted = np.roll(base, (1, 2, 0), axis=(1, 2, 3)) + 0.3 * rng.standard_normal(base.shape)
    grids = np.stack([base, shifted], 1)
    fit = fit_field(grids, max_lag=4, marginal="gaussian")
    assert fit.covariance.shape == (2, 2, 9, 9, 9)
    assert np.unravel_index(fit.covariance[0, 1].argmax(), (9, 9, 9)) == (4 + 1, 4 + 2, 4)
    generator = torch.Generator().manual_seed(6)
    draws = sample_field(fit, 120, 16, 16, 16, generator=generator, periodic=True)
    assert draws.shape == (120, 2, 16, 16, 16)
    again = fit_field(draws.numpy().astype(np.float64), max_lag=4, marginal="gaussian")
    target = fit.covariance * taper(4, 3)
    assert np.abs(again.covariance - target).max() < 0.06 * np.abs(target).max()
    z = draws.numpy()[:, 0]
    for axis in range(3):
        across = np.mean(np.take(z, -1, axis + 1) * np.take(z, 0, axis + 1))
        index = [4, 4, 4]
        index[axis] += 1
        assert across == pytest.approx(fit.covariance[(0, 0, *index)],
                                       abs=0.15 * fit.covariance[0, 0, 4, 4, 4])
    with pytest.raises(MicrovaeError, match="3-D grids"):
        sample_field(fit, 1, 8, 8, generator=generator)
