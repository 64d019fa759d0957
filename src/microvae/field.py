"""A stationary Gaussian random field over latent grids: the ``field`` prior of a ``conv`` VAE.

An i.i.d. N(0, I) prior on a spatial latent grid has no spatial correlation, so the decoder of
a fully convolutional VAE is shown grids it never saw in training (speckle). The ``field`` prior
is fitted after training to the encoded training grids (an ex-post prior, as ``aggregate`` is
for Table 1, but with the spatial statistics of the codes):

* the mean of each channel, and
* the cross-covariance function C_ab(dy, dx) = E[(z_a(y, x) - m_a)(z_b(y + dy, x + dx) - m_b)]
  for lags |dy|, |dx| <= ``max_lag`` cells, estimated with the overlap count of every lag
  (unbiased), from every grid at once by FFT with zero padding (no wrap-around).

Sampling embeds the tapered covariance in a periodic grid of the requested size, takes its
cross-spectral density (a C x C Hermitian matrix per frequency, made positive semi-definite by
clipping negative eigenvalues), and colours white noise with its matrix square root by FFT.
The draw is periodic by construction (opposite edges join); a non-periodic draw is the corner
of a periodic draw larger by ``max_lag`` cells on each axis, so no wrapped correlation remains.

``marginal="empirical"`` (the default) makes the field non-Gaussian in its values: each
channel is first mapped to normal scores through its empirical distribution function (Gaussian
anamorphosis), the Gaussian field is fitted to the scores, and a draw is mapped back through the
empirical quantile function. The codes of a conv VAE are far from Gaussian (a spike where a cell
holds only matrix, heavy tails, bimodal channels); a Gaussian field fills in the values between
the modes, which the decoder draws as speckle and fragmented islands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import MicrovaeError

MARGINALS = ("empirical", "gaussian")
# The empirical distribution of each channel is kept as this many quantiles.
QUANTILES = 1024


@dataclass
class FieldPrior:
    """Mean (C,) and cross-covariance (C, C, 2K + 1, 2K + 1) of the latent grids, lag (dy, dx)
    at index (K + dy, K + dx), K = ``max_lag``."""

    mean: np.ndarray
    covariance: np.ndarray
    max_lag: int
    n_grids: int
    quantiles: np.ndarray | None = None  # (C, QUANTILES): empirical marginals (None: Gaussian)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def describe(self) -> dict[str, float | int]:
        lag0 = np.diag(self.covariance[:, :, self.max_lag, self.max_lag])
        return {"channels": self.channels, "max_lag_cells": self.max_lag,
                "fitted_grids": self.n_grids, "mean_variance": float(lag0.mean()),
                "empirical_marginals": self.quantiles is not None}


def _levels() -> np.ndarray:
    return (np.arange(QUANTILES) + 0.5) / QUANTILES


def to_scores(grids: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Normal scores of latent grids (N, C, h, w) under the empirical marginals."""
    from scipy.special import ndtri

    levels = _levels()
    out = np.empty(grids.shape, np.float64)
    for c, q in enumerate(quantiles):
        out[:, c] = ndtri(np.interp(grids[:, c], q, levels))
    return out


def from_scores(scores: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Latent values of normal scores: the inverse of :func:`to_scores`."""
    from scipy.special import ndtr

    levels = _levels()
    out = np.empty(scores.shape, np.float64)
    for c, q in enumerate(quantiles):
        out[:, c] = np.interp(ndtr(scores[:, c]), levels, q)
    return out


def fit_field(grids: np.ndarray, max_lag: int | None = None,
              marginal: str = "empirical") -> FieldPrior:
    """Fit the field to latent grids (N, C, h, w) (draws of the posterior of training windows).

    ``max_lag`` (cells) defaults to half the smaller grid side; lags beyond it count as 0.
    ``marginal``: ``empirical`` (a Gaussian field of the normal scores) or ``gaussian``."""
    if marginal not in MARGINALS:
        raise MicrovaeError(f"unknown marginal {marginal!r}; use one of {list(MARGINALS)}")
    grids = np.asarray(grids, np.float64)
    if grids.ndim != 4 or len(grids) < 1:
        raise MicrovaeError(f"a random field is fitted to latent grids (N, C, h, w), got shape "
                            f"{grids.shape}")
    n, channels, height, width = grids.shape
    if max_lag is None:
        max_lag = min(height, width) // 2
    if not 0 <= max_lag < min(height, width):
        raise MicrovaeError(f"max_lag {max_lag} must be below the grid side "
                            f"({height}x{width} cells)")
    quantiles = None
    if marginal == "empirical":
        values = grids.transpose(1, 0, 2, 3).reshape(channels, -1)
        quantiles = np.quantile(values, _levels(), axis=1).T.copy()
        grids = to_scores(grids, quantiles)
    mean = grids.mean((0, 2, 3))
    centred = grids - mean[None, :, None, None]
    shape = (2 * height, 2 * width)  # zero padding: products never wrap around
    spectra = np.fft.rfft2(centred, s=shape)  # (N, C, 2h, w + 1)
    cross = np.einsum("nafg,nbfg->abfg", spectra.conj(), spectra) / n
    sums = np.fft.irfft2(cross, s=shape)  # sum_x z_a(x) z_b(x + lag), lag at index mod shape
    lags_y = np.arange(-max_lag, max_lag + 1)
    lags_x = np.arange(-max_lag, max_lag + 1)
    window = sums[:, :, lags_y % shape[0]][:, :, :, lags_x % shape[1]]
    counts = np.outer(height - np.abs(lags_y), width - np.abs(lags_x))
    return FieldPrior(mean, window / counts, max_lag, n, quantiles)


def taper(max_lag: int) -> np.ndarray:
    """(2K + 1, 2K + 1) window: 1 up to lag K/2, a cosine down to 0 just past lag K (per axis,
    multiplied), so that the truncated covariance ends smoothly."""
    lags = np.abs(np.arange(-max_lag, max_lag + 1)).astype(np.float64)
    start = max_lag / 2
    ramp = np.clip((lags - start) / (max_lag + 1 - start), 0.0, 1.0)
    one_axis = 0.5 * (1.0 + np.cos(np.pi * ramp))
    return np.outer(one_axis, one_axis)


def spectral_roots(prior: FieldPrior, height: int, width: int) -> np.ndarray:
    """Hermitian square roots (h, w, C, C) of the cross-spectral density of the field on a
    periodic h x w grid (lags beyond half the grid fold onto the lags they alias)."""
    k = prior.max_lag
    embedded = np.zeros((prior.channels, prior.channels, height, width))
    tapered = prior.covariance * taper(k)
    lags = np.arange(-k, k + 1)
    for i, dy in enumerate(lags):
        for j, dx in enumerate(lags):
            embedded[:, :, dy % height, dx % width] += tapered[:, :, i, j]
    # The draw z = ifft(R w^) has E[z^_a conj(z^_b)] = (R R^H)_ab, and the FFT of C_ab (lag
    # from a to b) is E[conj(z^_a) z^_b]: so the density matrix is the FFT of C transposed.
    density = np.fft.fft2(embedded).transpose(2, 3, 1, 0)
    density = 0.5 * (density + density.conj().swapaxes(-1, -2))
    values, vectors = np.linalg.eigh(density)
    roots = (vectors * np.sqrt(np.clip(values, 0.0, None))[..., None, :]) @ \
        vectors.conj().swapaxes(-1, -2)
    return roots


def sample_field(prior: FieldPrior, n: int, height: int, width: int,
                 generator: torch.Generator, periodic: bool = False) -> torch.Tensor:
    """``n`` latent grids (n, C, height, width) (float32) drawn from the field; ``periodic``:
    the grids wrap around (their decoding with periodic padding tiles the plane)."""
    if height < 1 or width < 1:
        raise MicrovaeError(f"latent grid of {height}x{width} cells")
    pad = 0 if periodic else prior.max_lag
    big_h, big_w = height + pad, width + pad
    roots = spectral_roots(prior, big_h, big_w)
    noise = torch.randn((n, prior.channels, big_h, big_w), generator=generator,
                        dtype=torch.float64).numpy()
    spectrum = np.fft.fft2(noise).transpose(0, 2, 3, 1)[..., None]  # (n, h, w, C, 1)
    coloured = (roots[None] @ spectrum)[..., 0].transpose(0, 3, 1, 2)
    grids = np.fft.ifft2(coloured).real[:, :, :height, :width]
    grids = grids + prior.mean[None, :, None, None]
    if prior.quantiles is not None:
        grids = from_scores(grids, prior.quantiles)
    return torch.from_numpy(np.ascontiguousarray(grids, np.float32))
