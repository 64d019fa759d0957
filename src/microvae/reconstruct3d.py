"""3-D volumes from 2-D micrographs by matching their descriptors: a differentiable
reconstruction in the manner of MCRpy (Seibert et al.), the baseline any learned 3-D generator
must beat.

A volume (D, H, W) of soft phase values x = sigmoid(G * theta) is optimised (Adam on theta; G a
Gaussian of one voxel, periodic) so that
its sections perpendicular to each axis have the 2-D statistics of the micrographs
(:class:`PlaneStatistics`): the S2 map of phase 1 over the in-plane lags |dy|, |dx| <= r_max,
and the lineal path of each phase along each in-plane direction at a few lags (what S2 alone
misses: the chord lengths). The S2 maps of all three section planes are slices of one 3-D
autocorrelation (one FFT of the volume); the soft lineal path is exp of a windowed sum of
log x along a line. Every term wraps around, so the volume tiles space: it joins on all six
faces. The statistics are always those of the volume cut at 0.5, the gradient passing straight
through the cut to x (no cut that forces the phase fraction): a soft volume's statistics are
not those of the binary volume it ends as, and matching them instead left 6x the loss on the
binary volume (measured on the default recipe, 64^3). The Gaussian G matters too: Adam moves
every voxel at about the same rate whatever the size of its gradient, and on a bare theta it
leaves specks of single voxels behind (8x the loss, islands 2-6x too many); through G it moves
smooth patches.

Conventions: volumes (z, y, x) = axes 0, 1, 2; the section normal to axis a is an image whose
rows run along the first of the two other axes and whose columns along the second
(:data:`PLANES`): normal to z, rows y and columns x (the micrograph of an xy plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import descriptors as d
from .errors import MicrovaeError

# axis normal to the section -> (axis of its rows, axis of its columns)
PLANES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
LINEAL_LAGS = (1, 2, 3, 4, 6, 8, 11, 16, 22, 30)
_EPS = 1e-6


@dataclass(frozen=True)
class PlaneStatistics:
    """What the sections of one plane orientation must show: ``s2`` (2 r + 1, 2 r + 1) the S2
    map of phase 1 at lags (row, column) -r..r; ``lineal`` (2, 2, len(lags)) the lineal path
    L(r) of phase [0, 1] along [rows, columns] (the probability that r + 1 consecutive pixels
    all lie in the phase) at ``lags``."""

    phase_fraction: float
    s2: np.ndarray
    lineal: np.ndarray
    lags: tuple[int, ...]

    @property
    def r_max(self) -> int:
        return (self.s2.shape[0] - 1) // 2


def s2_map(images: np.ndarray, r_max: int) -> np.ndarray:
    """The S2 map of phase 1 of a stack of binary images (not periodic): for each lag
    (dy, dx), |dy|, |dx| <= r_max, the share of pixel pairs at that lag inside an image that
    both lie in phase 1, pooled over the stack."""
    import torch

    images = np.asarray(images)
    n, height, width = images.shape
    if r_max >= min(height, width):
        raise MicrovaeError(f"lags up to {r_max} px need images larger than {r_max} px, got "
                            f"{height}x{width}")
    padded = (height + r_max, width + r_max)
    total = torch.zeros(padded, dtype=torch.float64)
    for start in range(0, n, 256):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + 256] > 0.5)).double()
        spectrum = torch.fft.rfft2(x, s=padded)
        total += torch.fft.irfft2(spectrum.real**2 + spectrum.imag**2, s=padded).sum(0)
    lags = np.arange(-r_max, r_max + 1)
    correlation = total.numpy()[np.ix_(lags % padded[0], lags % padded[1])]
    overlap = (height - np.abs(lags))[:, None] * (width - np.abs(lags))[None, :]
    return correlation / (n * overlap)


def plane_statistics(images: np.ndarray, r_max: int = 24, lags: tuple[int, ...] = LINEAL_LAGS,
                     isotropic: bool = False) -> PlaneStatistics:
    """The statistics of a stack of binary micrographs of one plane orientation.
    ``isotropic``: averaged over the 8 symmetries of the square (rows and columns alike), for a
    structure whose every section shows the same statistics, so that one micrograph serves all
    three section planes without contradiction."""
    images = (np.asarray(images) > 0.5).astype(np.uint8)
    if images.ndim != 3 or not len(images):
        raise MicrovaeError(f"micrographs must be a stack of 2-D images, got {images.shape}")
    longest = min(images.shape[1:]) // 2
    if max(lags) > longest:
        raise MicrovaeError(f"the lineal path at {max(lags)} px needs images of at least "
                            f"{2 * max(lags)} px, got {images.shape[1]}x{images.shape[2]}")
    s2 = s2_map(images, r_max)
    lineal = np.empty((2, 2, len(lags)))
    for phase in (0, 1):
        for direction, axis in enumerate("yx"):
            lineal[phase, direction] = d.lineal_path(images, phase, axis).mean(0)[list(lags)]
    if isotropic:
        symmetric = [s2, s2.T]
        symmetric += [m[::-1] for m in symmetric]
        symmetric += [m[:, ::-1] for m in symmetric]
        s2 = np.mean(symmetric, axis=0)
        lineal = np.repeat(lineal.mean(1, keepdims=True), 2, axis=1)
    return PlaneStatistics(float(images.mean()), s2, lineal, tuple(lags))


def _autocorrelation(x):
    import torch

    spectrum = torch.fft.rfftn(x)
    return torch.fft.irfftn(spectrum.real**2 + spectrum.imag**2, s=x.shape) / x.numel()


def section_s2(x, axis: int, r_max: int, autocorrelation=None):
    """The S2 map (2 r + 1, 2 r + 1) of the sections normal to ``axis`` of a soft periodic
    volume (the mean over all sections), from its 3-D autocorrelation."""
    import torch

    a = _autocorrelation(x) if autocorrelation is None else autocorrelation
    rows, columns = PLANES[axis]
    plane = a.select(axis, 0)  # the remaining axes keep their order
    lags = torch.arange(-r_max, r_max + 1)
    plane = plane.index_select(0, lags % x.shape[rows])
    return plane.index_select(1, lags % x.shape[columns])


def soft_lineal_path(u, axis: int, lags: tuple[int, ...]):
    """The lineal path of a soft periodic indicator ``u`` (values in [0, 1]) along ``axis`` at
    ``lags``: the mean over the volume of the product of u over r + 1 consecutive voxels
    (exp of a windowed sum of log u)."""
    import torch

    logs = torch.log(u.clamp_min(_EPS))
    n, longest = u.shape[axis], max(lags)
    extended = torch.cat([logs, logs.narrow(axis, 0, longest + 1)], dim=axis)
    zero = torch.zeros_like(logs.narrow(axis, 0, 1))
    running = torch.cat([zero, torch.cumsum(extended, dim=axis)], dim=axis)
    return torch.stack([torch.exp(running.narrow(axis, r + 1, n) - running.narrow(axis, 0, n)
                                  ).mean() for r in lags])


def statistics_loss(x, targets: dict[int, PlaneStatistics]):
    """Squared differences between the sections' statistics and the targets (one per section
    plane), each term scaled by the target's variance: S2 by (phi - phi^2)^2, the lineal path
    of a phase by its fraction squared, the phase fraction by (phi - phi^2)^2."""
    import torch

    autocorrelation = _autocorrelation(x)
    loss = x.new_zeros(())
    lineal_paths = {}  # (phase, axis along) -> its lineal path, shared by two section planes
    for axis, target in targets.items():
        variance = target.phase_fraction * (1 - target.phase_fraction)
        s2 = section_s2(x, axis, target.r_max, autocorrelation)
        loss = loss + torch.mean((s2 - torch.from_numpy(target.s2).to(x)) ** 2) / variance**2
        loss = loss + (x.mean() - target.phase_fraction) ** 2 / variance**2
        for phase in (0, 1):
            share = max(1 - target.phase_fraction if phase == 0 else target.phase_fraction, 1e-3)
            for direction, along in enumerate(PLANES[axis]):
                if (phase, along) not in lineal_paths:
                    lineal_paths[phase, along] = soft_lineal_path(x if phase else 1 - x, along,
                                                                  target.lags)
                wanted = torch.from_numpy(target.lineal[phase, direction]).to(x)
                loss = loss + torch.mean((lineal_paths[phase, along] - wanted) ** 2) / share**2
    return loss


@dataclass(frozen=True)
class ReconstructionSettings:
    steps: int = 300
    learning_rate: float = 0.05
    smoothing: float = 1.0  # voxels: the Gaussian G through which theta makes the volume
    start_smoothing: float = 3.0  # voxels: the start is white noise blurred by this Gaussian
    start_contrast: float = 3.0  # the start's standard deviation in logits


def _periodic_gaussian(shape: tuple[int, int, int], sigma: float):
    """The transfer function (on the rfftn grid) of a periodic Gaussian blur of ``sigma``."""
    import torch

    frequencies = [torch.fft.fftfreq(n) for n in shape[:2]] + [torch.fft.rfftfreq(shape[2])]
    squared = (frequencies[0][:, None, None] ** 2 + frequencies[1][None, :, None] ** 2
               + frequencies[2][None, None, :] ** 2)
    return torch.exp(-2 * np.pi**2 * sigma**2 * squared)


def check_targets(targets: dict[int, PlaneStatistics]) -> None:
    """Section planes that share an axis must agree on the statistics along it."""
    if not targets or set(targets) - set(PLANES):
        raise MicrovaeError(f"targets are keyed by the axis normal to the section (0, 1, 2), "
                            f"got {sorted(targets)}")
    lags = {t.lags for t in targets.values()}
    radii = {t.r_max for t in targets.values()}
    if len(lags) > 1 or len(radii) > 1:
        raise MicrovaeError("the micrographs' statistics must be taken at the same lags")


def plane_targets(targets: PlaneStatistics | dict[int, PlaneStatistics]
                  ) -> dict[int, PlaneStatistics]:
    """The targets by the axis normal to each section plane (one statistics for every plane
    where one is given), checked."""
    if isinstance(targets, PlaneStatistics):
        targets = {axis: targets for axis in PLANES}
    check_targets(targets)
    return targets


def reconstruct_volume(targets: PlaneStatistics | dict[int, PlaneStatistics],
                       shape: tuple[int, int, int], generator, settings: ReconstructionSettings
                       = ReconstructionSettings()) -> tuple[np.ndarray, list[float]]:
    """A periodic binary volume of ``shape`` whose sections have the ``targets`` statistics
    (one :class:`PlaneStatistics` for every plane, an isotropic structure; or one per axis
    normal to a section plane, e.g. three orthogonal micrographs of a rolled steel; planes
    without a target are free). ``generator``: the torch.Generator of the start. Returns the
    volume (uint8) and the loss at every step (of the volume cut at 0.5 before that step)."""
    import torch

    targets = plane_targets(targets)
    r_max = next(iter(targets.values())).r_max
    longest = max(next(iter(targets.values())).lags)
    if min(shape) <= 2 * max(r_max, longest):
        raise MicrovaeError(f"a volume of {shape} is too small for lags up to "
                            f"{max(r_max, longest)} voxels (each side must exceed twice that)")
    phi = float(np.mean([t.phase_fraction for t in targets.values()]))
    start = torch.randn(shape, generator=generator, dtype=torch.float64).numpy()
    if settings.start_smoothing > 0:
        start = ndimage.gaussian_filter(start, settings.start_smoothing, mode="wrap")
    start = settings.start_contrast * (start - start.mean()) / max(start.std(), 1e-12)
    cut = np.quantile(start, 1 - phi)  # the start holds the phase fraction at the cut 0.5
    start = torch.from_numpy(start - cut).float()
    theta = start.requires_grad_(True)
    blur = _periodic_gaussian(shape, settings.smoothing) if settings.smoothing > 0 else None

    def volume_of(theta):
        if blur is None:
            return torch.sigmoid(theta)
        return torch.sigmoid(torch.fft.irfftn(torch.fft.rfftn(theta) * blur, s=shape))

    optimizer = torch.optim.Adam([theta], lr=settings.learning_rate)
    losses = []
    for _ in range(settings.steps):
        soft = volume_of(theta)
        binary = soft + ((soft > 0.5).to(soft.dtype) - soft).detach()  # straight through
        loss = statistics_loss(binary, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        volume = (volume_of(theta) > 0.5).to(torch.uint8).numpy()
    return volume, losses
