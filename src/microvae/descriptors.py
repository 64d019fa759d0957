"""Statistical descriptors of binary two-phase images.

Conventions: stacks (N, H, W) of {0, 1}, 1 = the phase of interest; lengths in pixels
(multiply by the pixel size for physical units). Each function treats the images of a stack
separately and is vectorised over the stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage


def phase_fraction(images: np.ndarray) -> np.ndarray:
    """Fraction of phase-1 pixels of each image, (N,) float64."""
    return images.reshape(len(images), -1).mean(axis=1, dtype=np.float64)


@dataclass(frozen=True)
class S2Plan:
    """What the S2 estimator of one image shape needs, computed once per shape."""

    shape: tuple[int, int]
    r_max: int
    padded: tuple[int, int]
    window_y: torch.Tensor  # row indices of lags |dy| <= r_max in the padded correlation
    window_x: torch.Tensor
    inverse_overlap: torch.Tensor  # (2 r_max + 1)^2: 1 / number of pixel pairs at each lag
    radial_weights: torch.Tensor  # ((2 r_max + 1)^2, r_max + 1): bin averaging matrix


@lru_cache(maxsize=8)
def s2_plan(height: int, width: int) -> S2Plan:
    """Padding, overlap counts and radial bins for images of ``height`` x ``width``.

    Lags up to r_max = min(H, W) // 2 are kept. Zero-padding each axis by r_max (not by the
    full image size) is enough for those lags to be free of wrap-around.
    """
    r_max = min(height, width) // 2
    padded = (height + r_max, width + r_max)
    lags = np.arange(-r_max, r_max + 1)
    dy, dx = np.meshgrid(lags, lags, indexing="ij")
    overlap = (height - np.abs(dy)) * (width - np.abs(dx))
    distance = np.sqrt(dy**2 + dx**2).ravel()
    bins = np.floor(distance).astype(int)  # bin r holds lags with r <= |d| < r + 1
    weights = np.zeros((distance.size, r_max + 1))
    inside = bins <= r_max
    weights[np.flatnonzero(inside), bins[inside]] = 1.0
    weights /= weights.sum(axis=0, keepdims=True)
    return S2Plan(
        shape=(height, width), r_max=r_max, padded=padded,
        window_y=torch.from_numpy(lags % padded[0]), window_x=torch.from_numpy(lags % padded[1]),
        inverse_overlap=torch.from_numpy(1.0 / overlap).float().reshape(-1),
        radial_weights=torch.from_numpy(weights).float(),
    )


@dataclass
class S2Curves:
    """S2 of a stack. ``r``: lags 0..r_max (px); curves (N, r_max + 1)."""

    r: np.ndarray
    radial: np.ndarray
    x: np.ndarray
    y: np.ndarray


def two_point_correlation(images: np.ndarray, batch_size: int = 256) -> S2Curves:
    """Non-periodic two-point correlation S2 of each image of a stack.

    S2(d) = (1 / n(d)) * sum_p I(p) I(p + d), with n(d) = (H - |dy|)(W - |dx|) the number of
    pixel pairs at lag d inside the image, computed by a zero-padded FFT. ``radial``: the mean
    of S2 over all lags with r <= |d| < r + 1 (the bins of porespy's two_point_correlation);
    ``x`` and ``y``: S2 at lags (0, r) and (r, 0). S2(0) is the phase fraction.
    """
    images = np.asarray(images)
    n, height, width = images.shape
    plan = s2_plan(height, width)
    size = 2 * plan.r_max + 1
    radial, along_x, along_y = [], [], []
    for start in range(0, n, batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).float()
        spectrum = torch.fft.rfft2(x, s=plan.padded)
        correlation = torch.fft.irfft2(spectrum.real.square() + spectrum.imag.square(),
                                       s=plan.padded)
        window = correlation[:, plan.window_y][:, :, plan.window_x].reshape(len(x), -1)
        s2 = window * plan.inverse_overlap
        radial.append((s2.double() @ plan.radial_weights.double()).numpy())
        grid = s2.reshape(len(x), size, size)
        along_x.append(grid[:, plan.r_max, plan.r_max:].double().numpy())
        along_y.append(grid[:, plan.r_max:, plan.r_max].double().numpy())
    return S2Curves(np.arange(plan.r_max + 1), np.concatenate(radial), np.concatenate(along_x),
                    np.concatenate(along_y))


def chord_lengths(images: np.ndarray, phase: int, axis: str) -> np.ndarray:
    """Lengths (px) of all chords of ``phase`` along ``axis`` ('x' = rows, 'y' = columns),
    pooled over the stack. Chords that touch the image border are left out (their true length
    is unknown)."""
    stack = images if axis == "x" else np.swapaxes(images, 1, 2)
    rows = (stack.reshape(-1, stack.shape[-1]) == phase).astype(np.int8)
    padded = np.pad(rows, ((0, 0), (1, 1)), constant_values=-1)  # -1 marks the border
    flat = padded.ravel()
    change = np.flatnonzero(np.diff(flat) != 0) + 1
    starts, ends = change[:-1], change[1:]
    values = flat[starts]
    lengths = ends - starts
    width = padded.shape[1]
    touches = (flat[starts - 1] == -1) | (flat[np.minimum(ends, flat.size - 1)] == -1) | \
        (ends % width == 0)
    keep = (values == 1) & ~touches
    return lengths[keep]


def specific_perimeter(images: np.ndarray) -> np.ndarray:
    """Interface length per unit area (1/px) of each image, by Crofton's formula from the
    phase changes along x and y: L_A = (pi / 2) * mean(P_L,x, P_L,y), where P_L is the number
    of phase changes per unit length of test line (exact in the mean for isotropic structures)."""
    images = images.astype(np.int8)
    n, height, width = images.shape
    changes_x = np.count_nonzero(np.diff(images, axis=2), axis=(1, 2)) / (height * (width - 1))
    changes_y = np.count_nonzero(np.diff(images, axis=1), axis=(1, 2)) / ((height - 1) * width)
    return np.pi / 2.0 * 0.5 * (changes_x + changes_y)


_CROSS_PER_IMAGE = np.zeros((3, 3, 3), bool)
_CROSS_PER_IMAGE[1] = ndimage.generate_binary_structure(2, 1)


def islands(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected regions of phase 1 (4-connectivity) in each image.

    Returns ``(count per image (N,), area in px of every island, pooled)``.
    """
    labels, total = ndimage.label(images.astype(bool), structure=_CROSS_PER_IMAGE)
    if total == 0:
        return np.zeros(len(images), int), np.zeros(0, int)
    areas = np.bincount(labels.ravel())[1:]
    counts = np.array([np.unique(image[image > 0]).size for image in labels])
    return counts, areas
