"""A 3-D generator learned from 2-D micrographs alone (issue 24's learned route beside the
reconstruction of :mod:`microvae.reconstruct3d`).

A fully convolutional network G maps a periodic field of white noise at 1/8 of the volume's
side (``levels`` 3) to a volume of phase logits (3-D convolutions with circular padding, nearest-neighbour
upsampling). It is trained on volumes it draws itself: each step one fresh noise field gives
a volume of ``crop``^3 voxels, cut at 0.5 with the gradient passing straight through the cut,
and the loss asks every section of it to look like the micrographs:

- the **plane statistics** of :func:`microvae.reconstruct3d.statistics_loss` (S2 map, lineal
  path of each phase along each in-plane direction, phase fraction), as the reconstruction
  imposes them on one volume; and
- the **Gram matrices** of a fixed random 2-D convolutional net (3 layers of 3x3 filters,
  ReLU, average pooling) on sections normal to each axis, against those of real windows of
  the micrographs (Gatys et al.'s texture statistics; random filters as in Ustyuzhaninov et
  al. 2017, so no pretrained net is needed): higher-order structure (island shapes, chord
  lengths) that S2 and lineal paths at a few lags leave free.

Where the reconstruction optimises one volume for minutes, G, once trained, draws any number
of new volumes of any size (multiples of 8 voxels) in seconds; periodic by construction
(circular padding everywhere: shifting the noise by one cell shifts the volume by 8 voxels, so
opposite faces join like neighbouring planes inside), decoded in slabs along z so that memory
stays bounded. The micrographs of a statistically isotropic structure (one plane seen) serve
all three planes, their statistics symmetrised over the 8 symmetries of the square; three
orthogonal micrographs give one target per plane.

Conventions as :mod:`microvae.reconstruct3d`: volumes (z, y, x); a target keyed by the axis
normal to its section plane.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import MicrovaeError
from .reconstruct3d import PlaneStatistics, plane_targets, statistics_loss


@dataclass(frozen=True)
class SliceGeneratorSettings:
    steps: int = 1000
    max_minutes: float | None = 15.0
    crop: int = 64  # side (voxels) of the volumes drawn for each training step
    width: int = 8  # channels at full resolution (doubling at each coarser level)
    levels: int = 3  # the noise lies at 1 / 2^levels of the side
    noise_channels: int = 8
    learning_rate: float = 3e-4  # 2e-3 flipped the whole volume to one phase within 10 steps
    gram_weight: float = 1.0  # the Gram term beside the plane statistics (weight 1)
    sections_per_axis: int = 8  # sections of each orientation in the Gram term per step
    feature_channels: int = 16  # channels of each layer of the random feature net
    seed: int = 0

    def check(self) -> None:
        cell = 2**self.levels
        if self.levels < 1 or self.crop % cell or self.crop < 32:
            raise MicrovaeError(f"crop: {self.crop} voxels, expected a multiple of {cell} (2^"
                                f"levels) of at least 32")
        if self.steps < 1 or self.width < 1 or self.noise_channels < 1:
            raise MicrovaeError("steps, width and noise_channels must be >= 1")
        if self.gram_weight < 0 or self.learning_rate <= 0:
            raise MicrovaeError("gram_weight must be >= 0 and learning_rate > 0")


class SliceGenerator(nn.Module):
    """Noise (N, noise_channels, d/c, h/c, w/c), c = 2^levels -> phase-1 logits (N, 1, d, h,
    w). Two 3x3x3 convolutions at the noise's level, then at each finer level a nearest-neighbour
    upsampling and two convolutions (one at 1/2), two at full resolution; ``width`` * 2^level
    channels at each level. Every convolution is valid (unpadded):
    :meth:`forward` pads circularly, :meth:`slab` pads y and x only and takes real neighbours
    along z."""

    def __init__(self, width: int = 8, noise_channels: int = 8, levels: int = 3):
        super().__init__()
        self.config = {"width": width, "noise_channels": noise_channels, "levels": levels}
        channels = [width * 2**k for k in range(levels + 1)]
        stages = [[(noise_channels, channels[levels]), (channels[levels], channels[levels])]]
        for k in range(levels - 1, 0, -1):
            stages.append([(channels[k + 1], channels[k])]
                          + ([(channels[k], channels[k])] if k >= 2 else []))
        stages.append([(channels[1], width), (width, 1)])
        self.stages = nn.ModuleList(nn.ModuleList(nn.Conv3d(a, b, 3) for a, b in stage)
                                    for stage in stages)
        # voxels that the valid convolutions eat on each side: one cell of their level each
        self.halo_voxels = sum(len(stage) * 2**(levels - i) for i, stage in enumerate(stages))

    @property
    def cell(self) -> int:
        return 2 ** self.config["levels"]

    @torch.no_grad()
    def start_at(self, phase_fraction: float, noise: torch.Tensor) -> None:
        """Shift the last bias so that the volume of ``noise`` holds ``phase_fraction`` at the
        cut 0 (a constant start would be one phase, with no cut to move)."""
        logits = self(noise).flatten()
        self.stages[-1][-1].bias.sub_(torch.quantile(logits[::7], 1 - phase_fraction))

    def _run(self, noise, pad_z: bool):
        x = noise
        z = 1 if pad_z else 0
        for i, stage in enumerate(self.stages):
            if i:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            for j, conv in enumerate(stage):
                x = conv(F.pad(x, (1, 1, 1, 1, z, z), mode="circular"))
                if not (i == len(self.stages) - 1 and j == len(stage) - 1):
                    x = F.leaky_relu(x, 0.2)
        return x

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """The logits of the whole periodic volume of ``noise``."""
        return self._run(noise, pad_z=True)

    def slab(self, noise: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The logits of planes ``start * cell`` to ``stop * cell`` (z) of the periodic volume
        of ``noise``, from the noise cells around them only (wrapping at the ends)."""
        halo_cells = -(-self.halo_voxels // self.cell)
        cells = torch.arange(start - halo_cells, stop + halo_cells) % noise.shape[2]
        logits = self._run(noise.index_select(2, cells), pad_z=False)
        extra = halo_cells * self.cell - self.halo_voxels
        return logits[:, :, extra:logits.shape[2] - extra]


class RandomFeatures(nn.Module):
    """A fixed random 2-D conv net (3 layers of 3x3 filters, ReLU, 2x2 average pooling between
    them) whose Gram matrices are the texture statistics of a section; valid convolutions, so
    that a window's edge adds nothing."""

    def __init__(self, channels: int = 32, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        previous = 1
        for _ in range(3):
            conv = nn.Conv2d(previous, channels, 3)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator)
                                  / np.sqrt(9 * previous))
                conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=generator))
            conv.requires_grad_(False)
            self.convs.append(conv)
            previous = channels

    def grams(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The Gram matrix (C, C) of each layer, averaged over positions and ``images``
        (N, 1, H, W), values 0/1."""
        x = 2 * images - 1
        out = []
        for i, conv in enumerate(self.convs):
            if i:
                x = F.avg_pool2d(x, 2)
            x = F.relu(conv(x))
            flat = x.flatten(2)  # (N, C, P)
            out.append(torch.einsum("ncp,ndp->cd", flat, flat) / (flat.shape[0] * flat.shape[2]))
        return out


def symmetries(images: np.ndarray) -> np.ndarray:
    """The 8 symmetries of the square of each image (square images)."""
    turned = [np.rot90(images, k, axes=(1, 2)) for k in range(4)]
    return np.concatenate(turned + [t[:, :, ::-1] for t in turned])


def gram_targets(micrographs: np.ndarray, features: RandomFeatures, window: int,
                 isotropic: bool, generator: np.random.Generator,
                 n_windows: int = 256) -> list[torch.Tensor]:
    """The Gram matrices of ``n_windows`` random windows of ``window`` px of the binary
    ``micrographs`` (a stack), over the 8 symmetries of the square where ``isotropic``."""
    stack = (np.asarray(micrographs) > 0.5).astype(np.float32)
    n, height, width = stack.shape
    if min(height, width) < window:
        raise MicrovaeError(f"micrographs of {height}x{width} px are smaller than the "
                            f"{window} px sections of the training volumes")
    picks = generator.integers(0, n, n_windows)
    ys = generator.integers(0, height - window + 1, n_windows)
    xs = generator.integers(0, width - window + 1, n_windows)
    windows = np.stack([stack[i, y:y + window, x:x + window] for i, y, x in zip(picks, ys, xs)])
    if isotropic:
        windows = symmetries(windows)
    with torch.no_grad():
        return features.grams(torch.from_numpy(np.ascontiguousarray(windows))[:, None])


def sections_of(volume: torch.Tensor, axis: int, index: torch.Tensor) -> torch.Tensor:
    """Sections (K, 1, a, b) of ``volume`` (D, H, W) normal to ``axis`` at ``index``, rows and
    columns as :data:`microvae.reconstruct3d.PLANES`."""
    return volume.index_select(axis, index).movedim(axis, 0)[:, None]


def gram_loss(grams: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    return sum(((g - t) ** 2).sum() / (t**2).sum() for g, t in zip(grams, targets))


@dataclass
class SliceTraining:
    model: SliceGenerator
    history: list[dict]
    seconds: float


def train_slice_generator(targets: PlaneStatistics | dict[int, PlaneStatistics],
                          micrographs: np.ndarray | dict[int, np.ndarray],
                          settings: SliceGeneratorSettings = SliceGeneratorSettings()
                          ) -> SliceTraining:
    """G trained so that the sections of its volumes show ``targets`` (one
    :class:`PlaneStatistics` for every plane, an isotropic structure, whose Gram targets come
    from ``micrographs`` symmetrised; or one per axis normal to a section plane, with one stack
    of micrographs per axis). All randomness from ``settings.seed``."""
    settings.check()
    isotropic = isinstance(targets, PlaneStatistics)
    targets = plane_targets(targets)
    if isotropic != isinstance(micrographs, np.ndarray) or (
            not isotropic and set(micrographs) != set(targets)):
        raise MicrovaeError("give one stack of micrographs with one statistics, or one stack "
                            "per plane with one statistics per plane")
    stacks = {axis: micrographs for axis in targets} if isotropic else micrographs
    longest = max(next(iter(targets.values())).r_max, max(next(iter(targets.values())).lags))
    if settings.crop <= 2 * longest:
        raise MicrovaeError(f"crop: {settings.crop} voxels is too small for lags up to "
                            f"{longest} voxels (it must exceed twice that)")
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    phi = float(np.mean([t.phase_fraction for t in targets.values()]))
    model = SliceGenerator(settings.width, settings.noise_channels, settings.levels)
    cells = settings.crop // model.cell
    model.start_at(phi, torch.randn((1, settings.noise_channels, cells, cells, cells),
                                    generator=generator))
    features = RandomFeatures(settings.feature_channels, settings.seed)
    gram_target = {axis: gram_targets(stacks[axis], features, settings.crop, isotropic, rng)
                   for axis in targets}
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    history, start = [], time.perf_counter()
    for step in range(settings.steps):
        noise = torch.randn((1, settings.noise_channels, cells, cells, cells),
                            generator=generator)
        soft = torch.sigmoid(model(noise))[0, 0]
        binary = soft + ((soft > 0.5).to(soft.dtype) - soft).detach()  # straight through
        statistics = statistics_loss(binary, targets)
        texture = binary.new_zeros(())
        if settings.gram_weight > 0:
            for axis in targets:
                index = torch.randperm(settings.crop, generator=generator)[
                    :settings.sections_per_axis]
                texture = texture + gram_loss(features.grams(sections_of(binary, axis, index)),
                                              gram_target[axis]) / len(targets)
        loss = statistics + settings.gram_weight * texture
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({"step": step + 1, "loss": float(loss.detach()),
                        "statistics": float(statistics.detach()),
                        "gram": float(texture.detach()),
                        "phase_fraction": float((soft > 0.5).float().mean())})
        minutes = (time.perf_counter() - start) / 60
        if settings.max_minutes is not None and minutes >= settings.max_minutes:
            break
    return SliceTraining(model.eval(), history, time.perf_counter() - start)


@torch.no_grad()
def generate_sliced_volume(model: SliceGenerator, shape: tuple[int, int, int],
                           generator: torch.Generator, slab_cells: int = 4) -> np.ndarray:
    """A periodic binary volume (uint8) of ``shape`` (multiples of the model's noise cell,
    8 voxels by default) from fresh noise, cut at 0.5 (no threshold that forces the phase
    fraction), decoded in slabs of ``slab_cells`` noise cells along z."""
    cell = model.cell
    if len(shape) != 3 or any(side % cell or side < cell for side in shape):
        raise MicrovaeError(f"volume shape {tuple(shape)}: every side must be a positive "
                            f"multiple of {cell} voxels")
    cells = tuple(side // cell for side in shape)
    noise = torch.randn((1, model.config["noise_channels"], *cells), generator=generator)
    out = np.empty(shape, np.uint8)
    for start in range(0, cells[0], slab_cells):
        stop = min(start + slab_cells, cells[0])
        logits = model.slab(noise, start, stop)[0, 0]
        out[start * cell:stop * cell] = (logits > 0).numpy()
    return out
