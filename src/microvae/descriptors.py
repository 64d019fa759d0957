"""Statistical descriptors of binary two-phase images.

Conventions: stacks (N, H, W) of {0, 1}, 1 = the phase of interest; lengths in pixels
(multiply by the pixel size for physical units). Each function treats the images of a stack
separately and is vectorised over the stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    import torch


def phase_fraction(images: np.ndarray) -> np.ndarray:
    """Fraction of phase-1 pixels of each image, (N,) float64."""
    return images.reshape(len(images), -1).mean(axis=1, dtype=np.float64)


def iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Intersection over union of phase 1, per image (N,); 1 where both images lack phase 1."""
    p = predicted.reshape(predicted.shape[0], -1).astype(bool)
    t = truth.reshape(truth.shape[0], -1).astype(bool)
    inter = np.count_nonzero(p & t, axis=1)
    union = np.count_nonzero(p | t, axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def pooled_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of phase 1 over all pixels of all images together."""
    p, t = predicted.astype(bool), truth.astype(bool)
    return float(np.count_nonzero(p & t) / max(np.count_nonzero(p | t), 1))


@dataclass(frozen=True)
class S2Plan:
    """What the S2 estimator of one image shape needs, computed once per shape.

    S2 is symmetric, S2(-d) = S2(d), so only lags with dy >= 0 are computed: rows
    dy = 0..r_max, columns dx = -r_max..r_max of the correlation.
    """

    shape: tuple[int, int]
    r_max: int
    padded: tuple[int, int]
    columns: torch.Tensor  # column indices of dx = -r_max..r_max in the padded correlation
    inverse_overlap: torch.Tensor  # (r_max + 1, 2 r_max + 1): 1 / number of pixel pairs per lag
    radial_lags: torch.Tensor  # flat indices (into the half window) of lags with |d| < r_max + 1
    radial_bin: torch.Tensor  # radial bin of each of those lags
    radial_weight: torch.Tensor  # 1 on the row dy = 0, 2 elsewhere (for the mirrored lag -d)
    radial_count: torch.Tensor  # number of lags of the full window in each bin


@lru_cache(maxsize=8)
def s2_plan(height: int, width: int, periodic: bool = False) -> S2Plan:
    """Padding, overlap counts and radial bins for images of ``height`` x ``width``.

    Lags up to r_max = min(H, W) // 2 are kept. Zero-padding each axis by r_max (not by the
    full image size) is enough for those lags to be free of wrap-around. ``periodic``: no
    padding, every lag has H * W pixel pairs (the image wraps around).
    """
    import torch  # here, not at import: the data stages use this module without torch

    r_max = min(height, width) // 2
    padded = (height, width) if periodic else (height + r_max, width + r_max)
    dx_lags = np.arange(-r_max, r_max + 1)
    dy, dx = np.meshgrid(np.arange(r_max + 1), dx_lags, indexing="ij")
    overlap = np.full(dy.shape, height * width) if periodic else \
        (height - dy) * (width - np.abs(dx))
    bins = np.floor(np.sqrt(dy**2 + dx**2)).astype(int).ravel()  # bin r: r <= |d| < r + 1
    weight = np.where(dy == 0, 1.0, 2.0).ravel()
    inside = np.flatnonzero(bins <= r_max)
    return S2Plan(
        shape=(height, width), r_max=r_max, padded=padded,
        columns=torch.from_numpy(dx_lags % padded[1]),
        inverse_overlap=torch.from_numpy(1.0 / overlap).float(),
        radial_lags=torch.from_numpy(inside),
        radial_bin=torch.from_numpy(bins[inside]),
        radial_weight=torch.from_numpy(weight[inside]),
        radial_count=torch.from_numpy(np.bincount(bins[inside], weights=weight[inside],
                                                  minlength=r_max + 1)),
    )


@dataclass
class S2Curves:
    """S2 of a stack. ``r``: lags 0..r_max (px); curves (N, r_max + 1)."""

    r: np.ndarray
    radial: np.ndarray
    x: np.ndarray
    y: np.ndarray


def two_point_correlation(images: np.ndarray, batch_size: int = 256,
                          periodic: bool = False) -> S2Curves:
    """Non-periodic two-point correlation S2 of each image of a stack.

    S2(d) = (1 / n(d)) * sum_p I(p) I(p + d), with n(d) = (H - |dy|)(W - |dx|) the number of
    pixel pairs at lag d inside the image, computed by a zero-padded FFT. ``radial``: the mean
    of S2 over all lags with r <= |d| < r + 1 (the bins of porespy's two_point_correlation);
    ``x`` and ``y``: S2 at lags (0, r) and (r, 0). S2(0) is the phase fraction. ``periodic``:
    the image wraps around (pairs across opposite edges count; for periodic microstructures).
    """
    import torch

    images = np.asarray(images)
    n, height, width = images.shape
    plan = s2_plan(height, width, periodic)
    r_max = plan.r_max
    radial, along_x, along_y = [], [], []
    for start in range(0, n, batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).float()
        spectrum = torch.fft.rfft2(x, s=plan.padded)
        power = spectrum.real.square() + spectrum.imag.square()
        # inverse transform along y, keep the rows dy = 0..r_max, then along x
        rows = torch.fft.ifft(power, dim=1)[:, :r_max + 1]
        correlation = torch.fft.irfft(rows, n=plan.padded[1], dim=2)
        s2 = correlation[:, :, plan.columns] * plan.inverse_overlap  # (B, r_max+1, 2 r_max+1)
        flat = s2.reshape(len(x), -1)
        sums = torch.zeros((len(x), r_max + 1), dtype=torch.float64)
        sums.index_add_(1, plan.radial_bin, flat[:, plan.radial_lags].double() * plan.radial_weight)
        radial.append((sums / plan.radial_count).numpy())
        along_x.append(s2[:, 0, r_max:].double().numpy())
        along_y.append(s2[:, :, r_max].double().numpy())
    return S2Curves(np.arange(r_max + 1), np.concatenate(radial), np.concatenate(along_x),
                    np.concatenate(along_y))


def chord_lengths(images: np.ndarray, phase: int, axis: str, with_owner: bool = False):
    """Lengths (px) of all chords of ``phase`` along ``axis`` ('x' = rows, 'y' = columns),
    pooled over the stack. Chords that touch the image border are left out (their true length
    is unknown). ``with_owner``: also the index of the image each chord lies in."""
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
    if not with_owner:
        return lengths[keep]
    owner = starts[keep] // width // stack.shape[1]
    return lengths[keep], owner


def feature_size(images: np.ndarray) -> dict[int, float]:
    """The structure's feature size: the mean chord length (px) of each phase (0 and 1), pooled
    over x and y; chords that touch the image border are left out, so features larger than
    the images are not measured (nan where a phase has no inner chord)."""
    sizes = {}
    for phase in (0, 1):
        chords = np.concatenate([chord_lengths(images, phase, axis) for axis in ("x", "y")])
        sizes[phase] = float(chords.mean()) if len(chords) else float("nan")
    return sizes


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


def islands(images: np.ndarray, with_owner: bool = False):
    """Connected regions of phase 1 (4-connectivity) in each image.

    Returns ``(count per image (N,), area in px of every island, pooled)``, and with
    ``with_owner`` the index of the image of every island.
    """
    labels, total = ndimage.label(images.astype(bool), structure=_CROSS_PER_IMAGE)
    if total == 0:
        empty = (np.zeros(len(images), int), np.zeros(0, int))
        return (*empty, np.zeros(0, int)) if with_owner else empty
    areas = np.bincount(labels.ravel())[1:]
    # labels are numbered in scan order, so every image holds one contiguous range of them
    last_label = np.maximum.accumulate(labels.reshape(len(images), -1).max(axis=1))
    counts = np.diff(np.concatenate([[0], last_label]))
    if not with_owner:
        return counts, areas
    return counts, areas, np.searchsorted(last_label, np.arange(1, total + 1))


def _runs(images: np.ndarray, axis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every run of equal pixels along ``axis`` ('x' = rows, 'y' = columns) of a stack:
    ``(length, value, image, touches the border)``, one entry per run."""
    stack = images if axis == "x" else np.swapaxes(images, 1, 2)
    rows = stack.reshape(-1, stack.shape[-1]).astype(np.int8)
    padded = np.pad(rows, ((0, 0), (1, 1)), constant_values=-1)  # -1 marks the border
    flat = padded.ravel()
    change = np.flatnonzero(np.diff(flat) != 0) + 1
    starts, ends = change[:-1], change[1:]
    values = flat[starts]
    inside = values >= 0  # the border markers are runs of their own
    starts, ends, values = starts[inside], ends[inside], values[inside]
    width = padded.shape[1]
    touches = (flat[starts - 1] == -1) | (flat[ends] == -1)
    owner = starts // width // stack.shape[1]
    return ends - starts, values, owner, touches


def lineal_path(images: np.ndarray, phase: int = 1, axis: str = "x") -> np.ndarray:
    """Lineal path function L(r) of ``phase`` along ``axis`` for each image, (N, r_max + 1)
    with r_max = min(H, W) // 2: the probability that a segment of r + 1 pixels, p to p + r,
    placed at random inside the image lies wholly in the phase (L(0) = the phase fraction).

    A run of l pixels of the phase along a line holds max(0, l - r) such segments, so L is
    computed from the run lengths (those touching the border included); the number of places
    for the segment is H (W - r) along x, (H - r) W along y."""
    n, height, width = images.shape
    r_max = min(height, width) // 2
    length, value, owner, _ = _runs(images, axis)
    line = width if axis == "x" else height
    keep = value == phase
    counts = np.bincount(owner[keep] * (line + 1) + length[keep],
                         minlength=n * (line + 1)).reshape(n, line + 1).astype(np.float64)
    r = np.arange(r_max + 1)
    segments = np.maximum(0, np.arange(line + 1)[:, None] - r[None, :])  # (l, r)
    places = (height * width) - r * (height if axis == "x" else width)
    return counts @ segments / places


_CROSS = ndimage.generate_binary_structure(2, 1)


def cluster_labels(images: np.ndarray) -> np.ndarray:
    """Labels of the islands of phase 1 (4-connectivity) of each image, (N, H, W), 0 = phase 0;
    numbered across the stack, so that no two images share a label."""
    labels, _ = ndimage.label(images.astype(bool), structure=_CROSS_PER_IMAGE)
    return labels


def two_point_cluster(images: np.ndarray, axis: str = "x",
                      labels: np.ndarray | None = None) -> np.ndarray:
    """Two-point cluster function C2(r) along ``axis`` for each image, (N, r_max + 1): the
    probability that two pixels r apart (pairs inside the image, as for S2) both lie in the
    same island of phase 1 (4-connectivity). C2(0) = the phase fraction and C2 <= S2; the
    ratio C2 / S2 tells connected structures from fragmented ones of the same S2 (Torquato).
    ``labels``: :func:`cluster_labels` of the images, where already computed."""
    labels = cluster_labels(images) if labels is None else labels
    n, height, width = labels.shape
    r_max = min(height, width) // 2
    stack = labels if axis == "x" else np.swapaxes(labels, 1, 2)
    line = stack.shape[2]
    out = np.empty((n, r_max + 1))
    for r in range(r_max + 1):
        left, right = stack[:, :, :line - r], stack[:, :, r:]
        same = (left == right) & (left > 0)
        out[:, r] = np.count_nonzero(same, axis=(1, 2)) / same[0].size
    return out


def euler_characteristic(images: np.ndarray, connectivity: int = 4) -> np.ndarray:
    """Euler characteristic of phase 1 of each image (N,): islands minus holes, islands
    connected by ``connectivity`` 4 (edges, as :func:`islands`) or 8 (edges and corners), the
    image surrounded by phase 0. Counted from the 2x2 pixel quads of the zero-padded image
    (Gray 1971): chi = (n1 - n3 +- 2 n_diagonal) / 4, + for 4-, - for 8-connectivity."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    padded = np.pad(images.astype(np.int8), ((0, 0), (1, 1), (1, 1)))
    a, b = padded[:, :-1, :-1], padded[:, :-1, 1:]
    c, e = padded[:, 1:, :-1], padded[:, 1:, 1:]
    ones = a + b + c + e
    n1 = np.count_nonzero(ones == 1, axis=(1, 2))
    n3 = np.count_nonzero(ones == 3, axis=(1, 2))
    diagonal = np.count_nonzero((ones == 2) & (a == e), axis=(1, 2))
    sign = 1 if connectivity == 4 else -1
    return (n1 - n3 + sign * 2 * diagonal) // 4


def scaled_autocovariance(s2: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """(S2(r) - phi^2) / (phi - phi^2) of each curve (N, R) with its phase fraction (N,): 1 at
    r = 0, 0 where the phases are uncorrelated, the same for a structure and for a level cut of
    it at another phase fraction to first order. NaN for an image of one phase."""
    phi = np.asarray(phi, np.float64)[:, None]
    variance = phi - phi**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(variance > 0, (s2 - phi**2) / variance, np.nan)


def correlation_length(scaled: np.ndarray, level: float = 0.1) -> int | None:
    """The first lag r >= 1 (px) at which a scaled autocovariance curve (1 at r = 0) falls
    below ``level``: beyond it two points are nearly uncorrelated. None if it never does
    within the curve."""
    below = np.flatnonzero(np.asarray(scaled)[1:] < level)
    return int(below[0]) + 1 if below.size else None
