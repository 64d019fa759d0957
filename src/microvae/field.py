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
    at index (K + dy, K + dx), K = ``max_lag`` ((C, C, 2K + 1, 2K + 1, 2K + 1) for 3-D
    grids)."""

    mean: np.ndarray
    covariance: np.ndarray
    max_lag: int
    n_grids: int
    quantiles: np.ndarray | None = None  # (C, QUANTILES): empirical marginals (None: Gaussian)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def describe(self) -> dict[str, float | int]:
        centre = (self.max_lag,) * (self.covariance.ndim - 2)
        lag0 = np.diag(self.covariance[(slice(None), slice(None)) + centre])
        return {"channels": self.channels, "max_lag_cells": self.max_lag,
                "fitted_grids": self.n_grids, "mean_variance": float(lag0.mean()),
                "empirical_marginals": self.quantiles is not None}

    def state(self) -> dict:
        """Tensors and plain values (a model file's ``extra``, loadable with
        ``weights_only=True``)."""
        state = {"mean": torch.from_numpy(self.mean), "covariance": torch.from_numpy(
            self.covariance), "max_lag": self.max_lag, "n_grids": self.n_grids}
        if self.quantiles is not None:
            state["quantiles"] = torch.from_numpy(self.quantiles)
        return state

    @classmethod
    def from_state(cls, state: dict) -> FieldPrior:
        quantiles = state.get("quantiles")
        return cls(state["mean"].numpy(), state["covariance"].numpy(), int(state["max_lag"]),
                   int(state["n_grids"]), None if quantiles is None else quantiles.numpy())


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
    """Fit the field to latent grids (N, C, h, w), or (N, C, d, h, w) of a conv3d model (draws
    of the posterior of training windows or volumes).

    ``max_lag`` (cells) defaults to half the smallest grid side; lags beyond it count as 0.
    ``marginal``: ``empirical`` (a Gaussian field of the normal scores) or ``gaussian``."""
    if marginal not in MARGINALS:
        raise MicrovaeError(f"unknown marginal {marginal!r}; use one of {list(MARGINALS)}")
    grids = np.asarray(grids, np.float64)
    if grids.ndim not in (4, 5) or len(grids) < 1:
        raise MicrovaeError(f"a random field is fitted to latent grids (N, C, h, w) or (N, C, "
                            f"d, h, w), got shape {grids.shape}")
    n, channels, *sides = grids.shape
    spatial = tuple(range(2, grids.ndim))
    if max_lag is None:
        max_lag = min(sides) // 2
    if not 0 <= max_lag < min(sides):
        raise MicrovaeError(f"max_lag {max_lag} must be below the grid side "
                            f"({'x'.join(map(str, sides))} cells)")
    quantiles = None
    if marginal == "empirical":
        values = np.moveaxis(grids, 1, 0).reshape(channels, -1)
        quantiles = np.quantile(values, _levels(), axis=1).T.copy()
        grids = to_scores(grids, quantiles)
    mean = grids.mean((0, *spatial))
    centred = grids - mean.reshape(1, channels, *(1,) * len(sides))
    shape = tuple(2 * side for side in sides)  # zero padding: products never wrap around
    spectra = np.fft.rfftn(centred, s=shape, axes=spatial)
    cross = np.einsum("na...,nb...->ab...", spectra.conj(), spectra) / n
    sums = np.fft.irfftn(cross, s=shape, axes=spatial)  # sum_x z_a(x) z_b(x + lag), mod shape
    lags = np.arange(-max_lag, max_lag + 1)
    window = sums[(slice(None), slice(None)) + np.ix_(*(lags % side for side in shape))]
    counts = np.ones(())
    for side in sides:
        counts = np.multiply.outer(counts, side - np.abs(lags))
    return FieldPrior(mean, window / counts, max_lag, n, quantiles)


def taper(max_lag: int, dims: int = 2) -> np.ndarray:
    """(2K + 1,) * dims window: 1 up to lag K/2, a cosine down to 0 just past lag K (per axis,
    multiplied), so that the truncated covariance ends smoothly."""
    lags = np.abs(np.arange(-max_lag, max_lag + 1)).astype(np.float64)
    start = max_lag / 2
    ramp = np.clip((lags - start) / (max_lag + 1 - start), 0.0, 1.0)
    one_axis = 0.5 * (1.0 + np.cos(np.pi * ramp))
    window = np.ones(())
    for _ in range(dims):
        window = np.multiply.outer(window, one_axis)
    return window


def spectral_roots(prior: FieldPrior, *sides: int) -> np.ndarray:
    """Hermitian square roots (*sides, C, C) of the cross-spectral density of the field on a
    periodic grid of ``sides`` (lags beyond half the grid fold onto the lags they alias)."""
    k = prior.max_lag
    dims = prior.covariance.ndim - 2
    if len(sides) != dims:
        raise MicrovaeError(f"a field fitted to {dims}-D grids draws {dims}-D grids, asked for "
                            f"{'x'.join(map(str, sides))} cells")
    embedded = np.zeros((prior.channels, prior.channels, *sides))
    tapered = prior.covariance * taper(k, dims)
    lags = np.arange(-k, k + 1)
    for index in np.ndindex(*tapered.shape[2:]):
        target = tuple(lags[i] % side for i, side in zip(index, sides))
        embedded[(slice(None), slice(None)) + target] += tapered[(slice(None), slice(None))
                                                                 + index]
    # The draw z = ifft(R w^) has E[z^_a conj(z^_b)] = (R R^H)_ab, and the FFT of C_ab (lag
    # from a to b) is E[conj(z^_a) z^_b]: so the density matrix is the FFT of C transposed.
    spatial = tuple(range(2, 2 + dims))
    density = np.moveaxis(np.fft.fftn(embedded, axes=spatial), (0, 1), (-1, -2))
    density = 0.5 * (density + density.conj().swapaxes(-1, -2))
    values, vectors = np.linalg.eigh(density)
    roots = (vectors * np.sqrt(np.clip(values, 0.0, None))[..., None, :]) @ \
        vectors.conj().swapaxes(-1, -2)
    return roots


def sample_field(prior: FieldPrior, n: int, *sides: int, generator: torch.Generator,
                 periodic: bool = False) -> torch.Tensor:
    """``n`` latent grids (n, C, *sides) (float32) drawn from the field (2 sides for a conv
    model, 3 for conv3d); ``periodic``: the grids wrap around (their decoding with periodic
    padding tiles the plane or space)."""
    if not sides or min(sides) < 1:
        raise MicrovaeError(f"latent grid of {'x'.join(map(str, sides))} cells")
    pad = 0 if periodic else prior.max_lag
    big = tuple(side + pad for side in sides)
    roots = spectral_roots(prior, *big)
    dims = len(sides)
    spatial = tuple(range(2, 2 + dims))
    noise = torch.randn((n, prior.channels, *big), generator=generator,
                        dtype=torch.float64).numpy()
    spectrum = np.moveaxis(np.fft.fftn(noise, axes=spatial), 1, -1)[..., None]  # (n, *, C, 1)
    coloured = np.moveaxis((roots[None] @ spectrum)[..., 0], -1, 1)
    grids = np.fft.ifftn(coloured, axes=spatial).real
    grids = grids[(slice(None), slice(None)) + tuple(slice(0, side) for side in sides)]
    grids = grids + prior.mean.reshape(1, -1, *(1,) * dims)
    if prior.quantiles is not None:
        grids = from_scores(grids, prior.quantiles)
    return torch.from_numpy(np.ascontiguousarray(grids, np.float32))
