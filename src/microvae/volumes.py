"""Descriptors of binary two-phase volumes that sections do not show: connectivity through the
volume (percolation of each phase along each axis), the 3-D Euler characteristic, and the
two-point correlation along each axis (its anisotropy).

Conventions: one volume (D, H, W) of {0, 1}, axes 0 = z, 1 = y, 2 = x; lengths in voxels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

# Face-connected (6) or face-, edge- and corner-connected (26) voxels.
CONNECTIVITIES = (6, 26)


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be 6 or 26, got {connectivity}")
    return ndimage.generate_binary_structure(3, 1 if connectivity == 6 else 3)


def spanning_fraction(volume: np.ndarray, phase: int, axis: int,
                      connectivity: int = 6) -> float:
    """The fraction of ``phase``'s voxels that lie in a cluster touching both faces of the
    volume across ``axis`` (0 where none spans; nan where the phase is absent): the share of
    the phase that percolates in that direction."""
    mask = volume == phase
    total = int(mask.sum())
    if total == 0:
        return float("nan")
    labels, _ = ndimage.label(mask, _structure(connectivity))
    first = np.unique(np.take(labels, 0, axis=axis))
    last = np.unique(np.take(labels, -1, axis=axis))
    spanning = np.intersect1d(first[first > 0], last[last > 0])
    return float(np.isin(labels, spanning).sum() / total) if len(spanning) else 0.0


def euler_characteristic_3d(volume: np.ndarray, connectivity: int = 6) -> int:
    """Euler characteristic of phase 1 (components - tunnels + cavities), the volume surrounded
    by phase 0; phase 1 connected by ``connectivity`` (6: faces; 26: faces, edges, corners)."""
    from skimage.measure import euler_number

    _structure(connectivity)
    return int(euler_number(np.pad(volume.astype(bool), 1), 1 if connectivity == 6 else 3))


def s2_along_axes(volume: np.ndarray, r_max: int | None = None) -> np.ndarray:
    """Two-point correlation of phase 1 along each axis (3, r_max + 1): the probability that
    two voxels r apart along z, y or x both lie in phase 1 (pairs inside the volume)."""
    x = volume.astype(np.float64)
    r_max = min(volume.shape) // 2 if r_max is None else r_max
    out = np.empty((3, r_max + 1))
    for axis in range(3):
        n = volume.shape[axis]
        for r in range(r_max + 1):
            a = np.take(x, np.arange(0, n - r), axis=axis)
            b = np.take(x, np.arange(r, n), axis=axis)
            out[axis, r] = float((a * b).mean())
    return out


def correlation_length_of(s2: np.ndarray, phase_fraction: float, level: float = 1 / np.e
                          ) -> float:
    """The distance (voxels, linear between samples) at which the scaled autocovariance
    (S2(r) - phi^2) / (phi - phi^2) of one S2 curve first falls to ``level``; nan where it
    never does or the volume holds one phase."""
    variance = phase_fraction - phase_fraction**2
    if variance <= 0:
        return float("nan")
    scaled = (s2 - phase_fraction**2) / variance
    below = np.flatnonzero(scaled <= level)
    if not len(below) or below[0] == 0:
        return float("nan")
    r = below[0]
    return float(r - 1 + (scaled[r - 1] - level) / (scaled[r - 1] - scaled[r]))


def volume_descriptors(volume: np.ndarray, connectivity: int = 6) -> dict[str, Any]:
    """Phase fraction, per phase and axis the spanning fraction, the Euler characteristic of
    each phase per 1 000 voxels, and per axis the correlation length of S2 (their ratio
    max / min: 1 for an isotropic structure)."""
    if volume.ndim != 3:
        raise ValueError(f"a volume has 3 dimensions, got {volume.ndim}")
    volume = (volume > 0).astype(np.uint8)
    phi = float(volume.mean())
    lengths = [correlation_length_of(curve, phi) for curve in s2_along_axes(volume)]
    finite = [v for v in lengths if np.isfinite(v)]
    return {
        "shape": list(volume.shape),
        "phase_fraction": phi,
        "spanning_fraction": {f"phase_{phase}": {f"axis_{axis}": spanning_fraction(
            volume, phase, axis, connectivity) for axis in range(3)} for phase in (0, 1)},
        "euler_per_1000_voxels": {f"phase_{phase}": 1000 * euler_characteristic_3d(
            volume == phase, connectivity) / volume.size for phase in (0, 1)},
        "correlation_length": {f"axis_{axis}": lengths[axis] for axis in range(3)},
        "anisotropy": max(finite) / min(finite) if len(finite) == 3 and min(finite) > 0
        else float("nan"),
        "connectivity": connectivity,
    }


def sections(volume: np.ndarray, axis: int, spacing: int = 1) -> np.ndarray:
    """The sections normal to ``axis``, every ``spacing`` voxels from the first: images whose
    rows and columns run along the two other axes in their order (normal to z: rows y,
    columns x)."""
    return np.moveaxis(np.asarray(volume), axis, 0)[::spacing]


def section_windows(volumes: list[np.ndarray], axis: int, window: int, spacing: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``window`` x ``window`` windows of the sections normal to ``axis`` of
    each volume, sections ``spacing`` voxels apart; returns ``(windows, block)``, block the index
    of the volume each window was cut from (the independent blocks of a floor)."""
    from .crops import split_into_windows  # PyTorch: not at import

    images, blocks = [], []
    for index, volume in enumerate(volumes):
        stack = sections(volume, axis, spacing)
        if min(stack.shape[1:]) < window:
            raise ValueError(f"sections of {stack.shape[1]}x{stack.shape[2]} voxels hold no "
                             f"window of {window}")
        images.append(split_into_windows(stack, window))
        blocks.append(np.full(len(images[-1]), index))
    return np.concatenate(images), np.concatenate(blocks)


def judge_sections(real: list[np.ndarray], generated: dict[str, tuple[list[np.ndarray], str]],
                   window: int, spacing: int, rng: np.random.Generator,
                   axes: tuple[int, ...] = (0, 1, 2)) -> dict[int, dict[str, Any]]:
    """Sections of generated volumes against sections of independent real volumes, per axis:
    for each axis normal to a section plane, the windows of the real volumes' sections are the
    reference (each volume a block of the floor) and each set of volumes (``generated``: name ->
    (volumes, role of :data:`microvae.evaluate.ROLES`)) is judged by
    :func:`microvae.evaluate.judge` on the windows of its own sections along that axis."""
    from .evaluate import Features, ScoredSet, judge

    if len(real) < 2:
        raise ValueError(f"the floor needs at least 2 independent real volumes, got {len(real)}")
    out = {}
    for axis in axes:
        images, blocks = section_windows(real, axis, window, spacing)
        sets = {name: ScoredSet(Features.of(section_windows(volumes, axis, window, spacing)[0]),
                                role) for name, (volumes, role) in generated.items()}
        out[axis] = judge(Features.of(images), blocks, sets, rng)
    return out


def blurred_noise(shape: tuple[int, int, int], blur: float, phase_fraction: float,
                  rng: np.random.Generator, periodic: bool = True) -> np.ndarray:
    """The trivial baseline of a volume generator: white noise blurred by a Gaussian of
    ``blur`` voxels (wrapped around where ``periodic``), cut at the quantile that gives
    ``phase_fraction``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), blur,
                                    mode="wrap" if periodic else "reflect")
    return (field > np.quantile(field, 1 - phase_fraction)).astype(np.uint8)


BLURS = tuple(np.arange(1.0, 8.01, 0.5))


def fitted_blur(volumes: list[np.ndarray], rng: np.random.Generator, r_max: int = 16,
                side: int = 64) -> float:
    """The blur of :func:`blurred_noise` (of :data:`BLURS`) whose S2 along the three axes (mean
    over the axes, lags up to ``r_max``) is nearest the mean of ``volumes``' own: the baseline
    gets the real two-point statistics as far as a blurred field can have them."""
    phase_fraction = float(np.mean([v.mean() for v in volumes]))
    target = np.mean([s2_along_axes(v, r_max).mean(0) for v in volumes], axis=0)

    def error(blur: float) -> float:
        noise = blurred_noise((side,) * 3, blur, phase_fraction, rng)
        return float(np.mean((s2_along_axes(noise, r_max).mean(0) - target) ** 2))

    return min(BLURS, key=error)


def halves(volume: np.ndarray) -> list[np.ndarray]:
    """A volume cut in two along its longest axis (two blocks of a floor where a split holds
    one volume only)."""
    axis = int(np.argmax(volume.shape))
    middle = volume.shape[axis] // 2
    return [np.take(volume, np.arange(0, middle), axis=axis),
            np.take(volume, np.arange(middle, volume.shape[axis]), axis=axis)]


def intensive_descriptors(descriptors: dict[str, Any]) -> dict[str, float]:
    """The descriptors of :func:`volume_descriptors` that do not depend on the volume's size
    (so that volumes of other shapes compare): phase fraction, Euler characteristic of each
    phase per 1 000 voxels, correlation length along each axis. (The spanning fraction grows
    as a volume shrinks: compare it between volumes of one shape only.)"""
    out = {"phase_fraction": descriptors["phase_fraction"]}
    for phase, value in descriptors["euler_per_1000_voxels"].items():
        out[f"euler_{phase}"] = value
    for axis, value in descriptors["correlation_length"].items():
        out[f"correlation_length_{axis}"] = value
    return out


def judge_volume_descriptors(real: list[dict[str, Any]],
                             generated: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The 3-D descriptors of sets of volumes against independent real volumes (each a
    :func:`volume_descriptors` dict). The floor of a descriptor: how far one real volume lies
    from the mean of the others (leave one out; its 95th percentile over the real volumes). A
    set's distance is that of its mean from the mean of all real volumes, stated as a multiple
    of the floor (within: at most 1). A crude floor where the real volumes are few: it says
    how many it rests on."""
    if len(real) < 2:
        raise ValueError(f"the floor needs at least 2 independent real volumes, got {len(real)}")
    values = [intensive_descriptors(d) for d in real]
    keys = list(values[0])
    table = np.array([[v[k] for k in keys] for v in values], np.float64)
    mean = np.nanmean(table, axis=0)
    others = (np.nansum(table, axis=0)[None] - table) / (len(table) - 1)
    floor = np.nanpercentile(np.abs(table - others), 95, axis=0)
    out: dict[str, Any] = {"n_real": len(real), "real_mean": dict(zip(keys, mean.tolist())),
                           "floor_p95": dict(zip(keys, floor.tolist())), "sets": {}}
    for name, descriptors in generated.items():
        own = np.nanmean([[intensive_descriptors(d)[k] for k in keys] for d in descriptors],
                         axis=0)
        multiple = np.abs(own - mean) / np.where(floor > 0, floor, np.nan)
        out["sets"][name] = {"mean": dict(zip(keys, own.tolist())),
                             "floor_multiple": dict(zip(keys, multiple.tolist())),
                             "n_within": int(np.sum(multiple <= 1)),
                             "n_judged": int(np.sum(np.isfinite(multiple)))}
    return out
