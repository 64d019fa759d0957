"""3-D microstructures from volumes: training a ``conv3d`` VAE on random crops of real volumes,
and generating volumes of any size from its latent grid (issue 24's "from volumes" route).

* :class:`VolumeCrops`: random cubic crops of a set of volumes, each under a random symmetry
  of the cube: all 48 rotations and reflections (``cube``, a statistically isotropic
  structure), the 8 that keep every axis on itself (``flips``, an orthotropic one: rolled or
  banded steel) or none.
* :func:`train_volume_vae`: the conv VAE's loss (BCE summed over voxels + ``kl_weight`` KL)
  with Adam on fresh crops each step, under bf16 autocast where the runtime asks for it.
* :func:`fit_volume_field`: the ``field`` prior (:mod:`microvae.field`) fitted to posterior
  draws of the training volumes' latent grids, encoded whole (the encoder is convolutional),
  so that the field holds correlations longer than a training crop.
* :func:`decode_volume`: decoding in slabs along the first axis with a halo of latent cells
  on each side, so that memory is bounded by the slab and not by the volume; the result equals
  the decoding of the whole grid (tests), periodic on request (the halo wraps around).

Arrays in and out, no file I/O.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import torch

from .config import check_parameters, parse_options
from .device import Runtime, select_runtime
from .diffusion import (
    CELL,
    GRID_MULTIPLE,
    DiffusionConfig,
    DiffusionPrior,
    fit_diffusion,
    sample_volume_grids,
)
from .errors import MicrovaeError
from .field import FieldPrior, fit_field, sample_field
from .model import ConvVAE3d, initialize, vae_loss
from .sample import TARGET_CALIBRATION_STEPS, calibrated_condition

CUBE_AUGMENTS = ("cube", "flips", "none")
# Latent cells on each side of a decoded slab: the decoder's output depends on the latent
# cells within about one cell of it (three stride-2 3x3x3 transposed convolutions and a
# stride-1 one); two make the slabs' decoding equal to the whole grid's (tests).
HALO_CELLS = 2


def cube_symmetries(augment: str) -> list[tuple[tuple[int, int, int], tuple[bool, bool, bool]]]:
    """The symmetries of ``augment`` as (axis permutation, flip of each axis after it)."""
    if augment not in CUBE_AUGMENTS:
        raise MicrovaeError(f"augment: unknown cube augmentation {augment!r}; use one of "
                            f"{list(CUBE_AUGMENTS)}")
    permutations = list(itertools.permutations(range(3))) if augment == "cube" else [(0, 1, 2)]
    flips = list(itertools.product((False, True), repeat=3)) if augment != "none" \
        else [(False, False, False)]
    return [(p, f) for p in permutations for f in flips]


def apply_symmetry(volume: np.ndarray, symmetry) -> np.ndarray:
    permutation, flips = symmetry
    out = np.transpose(volume, permutation)
    axes = tuple(axis for axis, flip in enumerate(flips) if flip)
    return np.flip(out, axes) if axes else out


def crop_corners(mask: np.ndarray, size: int) -> np.ndarray:
    """The first voxels (K, 3) of every ``size``^3 crop that lies wholly where ``mask`` is 1."""
    inside = np.pad(np.asarray(mask, np.int64), ((1, 0), (1, 0), (1, 0))).cumsum(0).cumsum(1)\
        .cumsum(2)
    s = size
    sums = (inside[s:, s:, s:] - inside[:-s, s:, s:] - inside[s:, :-s, s:] - inside[s:, s:, :-s]
            + inside[:-s, :-s, s:] + inside[:-s, s:, :-s] + inside[s:, :-s, :-s]
            - inside[:-s, :-s, :-s])
    return np.argwhere(sums == s ** 3)


class VolumeCrops:
    """Random crops (n, 1, s, s, s) of side ``size`` from ``volumes`` (binary arrays), each
    crop wholly inside its volume's mask (``masks``: 1 where the volume may be seen, e.g. the
    training slabs of a volume split in space; default everywhere), a crop position drawn
    uniformly over all of them, each crop under a random symmetry of ``augment``."""

    def __init__(self, volumes: list[np.ndarray], size: int, augment: str = "cube",
                 masks: list[np.ndarray] | None = None):
        if not volumes:
            raise MicrovaeError("no training volumes")
        masks = masks if masks is not None else [None] * len(volumes)
        self.volumes, self.corners = [], []
        for index, (volume, mask) in enumerate(zip(volumes, masks)):
            if volume.ndim != 3 or min(volume.shape) < size:
                raise MicrovaeError(f"training volume {index}: shape {volume.shape} holds no "
                                    f"crop of {size}^3 voxels")
            # without a mask every position is a corner: kept as the grid of positions (the
            # list of a 512^3 volume's corners alone would take 2.7 GB)
            corners = tuple(n - size + 1 for n in volume.shape) if mask is None \
                else crop_corners(mask, size)
            self.volumes.append(np.ascontiguousarray(volume, np.uint8))
            self.corners.append(corners)
        counts = np.array([np.prod(c) if isinstance(c, tuple) else len(c)
                           for c in self.corners], np.float64)
        if counts.sum() == 0:
            raise MicrovaeError(f"no crop of {size}^3 voxels lies wholly inside the training "
                                "volumes' masks")
        self.size = size
        self.symmetries = cube_symmetries(augment)
        self.counts = counts.astype(np.int64)
        self.weights = torch.from_numpy(counts / counts.sum())

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        symmetry = torch.randint(len(self.symmetries), (n,), generator=generator)
        position = torch.rand(n, generator=generator, dtype=torch.float64)
        out = np.empty((n, 1) + (self.size,) * 3, np.float32)
        for i in range(n):
            index = int(which[i])
            volume, corners = self.volumes[index], self.corners[index]
            chosen = min(int(position[i] * self.counts[index]), self.counts[index] - 1)
            start = np.unravel_index(chosen, corners) if isinstance(corners, tuple) \
                else corners[chosen]
            crop = volume[tuple(slice(int(c), int(c) + self.size) for c in start)]
            out[i, 0] = apply_symmetry(crop, self.symmetries[int(symmetry[i])])
        return torch.from_numpy(out)


@dataclass(frozen=True)
class VolumeTrainSettings:
    """How a conv3d VAE trains: the library side of the config's ``volume`` section (its
    schema gives every key's range and default; tests/test_config.py checks that they are
    these)."""

    latent_channels: int = 8
    crop_size: int = 32
    batch_size: int = 8
    steps: int = 2000
    learning_rate: float = 1e-3
    kl_weight: float = 0.1
    augment: str = "cube"
    max_minutes: float | None = None  # stops earlier on a slow machine (the report says so)

    @classmethod
    def from_options(cls, options: dict) -> VolumeTrainSettings:
        return parse_options(cls, options, "volume")

    def check(self) -> None:
        check_parameters(self, "volume")


@dataclass
class VolumeTraining:
    """A trained conv3d model and its history (a row every ``log_every`` steps)."""

    model: ConvVAE3d
    settings: VolumeTrainSettings
    history: list[dict[str, float]] = dataclass_field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stop_reason: str = "steps"


def train_volume_vae(volumes: list[np.ndarray], settings: VolumeTrainSettings,
                     generator: torch.Generator, runtime: Runtime | None = None,
                     log_every: int = 50,
                     on_log: Callable[[dict[str, float]], None] | None = None,
                     masks: list[np.ndarray] | None = None) -> VolumeTraining:
    """Train a conv3d VAE on random crops of ``volumes`` (inside ``masks``, where given);
    every random number (the weights, the crops, eq. 1's noise) comes from ``generator``."""
    settings.check()
    runtime = runtime or select_runtime()
    crops = VolumeCrops(volumes, settings.crop_size, settings.augment, masks)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
    model = initialize(ConvVAE3d(settings.crop_size, settings.latent_channels)).to(runtime.device)
    torch.random.set_rng_state(torch_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    training = VolumeTraining(model, settings)
    start = time.perf_counter()
    sums = np.zeros(3)
    model.train()
    for step in range(1, settings.steps + 1):
        xb = crops.sample(settings.batch_size, generator).to(runtime.device)
        latent = (settings.batch_size, *model.latent_shape(*(settings.crop_size,) * 3))
        eps = torch.randn(latent, generator=generator).to(runtime.device)
        with runtime.autocast():
            logits, z_mean, z_log_var, _ = model(xb, eps)
        loss, bce, kl = vae_loss(logits, xb, z_mean, z_log_var, settings.kl_weight)
        if not torch.isfinite(loss):
            raise MicrovaeError(f"conv3d training: the loss became {loss.item()} at step {step}; "
                                "lower learning_rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += (loss.item(), bce.item(), kl.item())
        training.steps = step
        training.seconds = time.perf_counter() - start
        if step % log_every == 0 or step == settings.steps:
            count = step - (len(training.history) * log_every)
            row = {"step": step, "seconds": round(training.seconds, 1),
                   **dict(zip(("loss", "bce", "kl"), (sums / max(count, 1)).round(2).tolist()))}
            training.history.append(row)
            sums[:] = 0
            if on_log:
                on_log(row)
        if settings.max_minutes is not None and training.seconds > 60 * settings.max_minutes:
            training.stop_reason = f"max_minutes {settings.max_minutes}"
            break
    model.eval()
    return training


def covered_pieces(volume: np.ndarray, mask: np.ndarray | None, min_side: int = CELL
                   ) -> list[np.ndarray]:
    """The parts of ``volume`` that lie wholly where ``mask`` is 1: the volume itself where the
    mask covers it, else the runs (at least ``min_side`` thick) of whole planes covered along
    the axis where they cover most (a volume split in space is cut in slabs along one axis)."""
    if mask is None or mask.all():
        return [volume]
    best: list[np.ndarray] = []
    for axis in range(3):
        full = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).all(1)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], full.astype(int), [0]])))
        pieces = [np.take(volume, np.arange(a, b), axis=axis)
                  for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_side]
        if sum(p.size for p in pieces) > sum(p.size for p in best):
            best = pieces
    return best


def block_shape(volumes: list[np.ndarray], largest: int = 128) -> tuple[int, int, int]:
    """The largest block, each side a multiple of :data:`CELL` and at most ``largest``, that
    every volume holds."""
    sides = tuple(min(min(v.shape[axis] for v in volumes), largest) // CELL * CELL
                  for axis in range(3))
    if min(sides) < CELL:
        raise MicrovaeError(f"volumes of shapes {[v.shape for v in volumes]} hold no block of "
                            f"{CELL} voxels per side")
    return sides


@torch.no_grad()
def encode_volumes(model: ConvVAE3d, volumes: list[np.ndarray], generator: torch.Generator,
                   largest: int = 128, symmetries: int = 1, augment: str = "cube"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Posterior draws (eq. 1) of the latent grids of the non-overlapping blocks of the
    volumes, all of one shape (:func:`block_shape`), each block under ``symmetries`` distinct
    symmetries of ``augment`` drawn at random (the first always the identity): grids
    (N, C, b0/8, b1/8, b2/8) and the local phase fraction of each cell (N, b0/8, b1/8, b2/8),
    smoothed as the 2-D prior's condition maps are."""
    from scipy.ndimage import gaussian_filter

    from .diffusion import CONDITION_SIGMA_CELLS

    block = block_shape(volumes, largest)
    # symmetries that keep the block's shape (all of them for a cube)
    options = [s for s in cube_symmetries(augment)
               if tuple(block[axis] for axis in s[0]) == tuple(block)]
    grids, conditions = [], []
    for volume in volumes:
        for corner in itertools.product(*(range(0, n - b + 1, b)
                                          for n, b in zip(volume.shape, block))):
            piece = volume[tuple(slice(c, c + b) for c, b in zip(corner, block))]
            order = [0] + (1 + torch.randperm(len(options) - 1, generator=generator)).tolist()
            for index in order[:max(1, min(symmetries, len(options)))]:
                turned = np.ascontiguousarray(apply_symmetry(piece, options[index]), np.float32)
                z_mean, z_log_var = model.encode(torch.from_numpy(turned)[None, None])
                eps = torch.randn(z_mean.shape, generator=generator)
                grids.append((z_mean + torch.exp(0.5 * z_log_var) * eps).numpy()[0])
                d, h, w = (side // CELL for side in turned.shape)
                cells = turned.reshape(d, CELL, h, CELL, w, CELL).mean((1, 3, 5))
                conditions.append(gaussian_filter(cells.astype(np.float64),
                                                  CONDITION_SIGMA_CELLS, mode="reflect"))
    return np.stack(grids), np.stack(conditions).astype(np.float32)


def fit_volume_field(model: ConvVAE3d, volumes: list[np.ndarray], generator: torch.Generator
                     ) -> FieldPrior:
    """The ``field`` prior over 3-D latent grids, fitted to the training volumes' codes."""
    return fit_field(encode_volumes(model, volumes, generator)[0])


def volume_diffusion_config(**changes) -> DiffusionConfig:
    """The diffusion prior's settings for 3-D grids: crops of 8 cells (64 voxels) per side,
    batches of 16 (a 3-D crop holds 8x the cells of a 2-D one of the same side), the steps of
    the config's ``volume.diffusion_steps`` (2 000: the loss on the default had levelled off by
    1 400; 3 000 took 6.5 min on a 2-core AVX512-BF16 CPU), at most 6 minutes."""
    from dataclasses import replace

    from .config import schema

    steps = schema()["properties"]["volume"]["properties"]["diffusion_steps"]["default"]
    return replace(DiffusionConfig(crop_cells=8, batch_size=16, max_steps=steps,
                                   max_minutes=6.0), **changes)


def fit_volume_diffusion(model: ConvVAE3d, volumes: list[np.ndarray], generator: torch.Generator,
                         cfg: DiffusionConfig | None = None, symmetries: int = 12,
                         augment: str = "cube", log=None) -> DiffusionPrior:
    """The ``diffusion`` prior over 3-D latent grids: the denoiser of
    :mod:`microvae.diffusion` in three dimensions, trained on the codes of the training
    volumes' blocks under ``symmetries`` symmetries each, conditioned on their local phase
    fraction."""
    cfg = cfg or volume_diffusion_config()
    grids, conditions = encode_volumes(model, volumes, generator, symmetries=symmetries,
                                       augment=augment)
    fraction = float(np.mean([v.mean() for v in volumes]))
    crops = volume_crop_sides(grids.shape[2:], cfg.crop_cells)
    return fit_diffusion(torch.from_numpy(grids), torch.from_numpy(conditions), cfg, fraction,
                         log=log, crop_sides=crops)


def volume_crop_sides(grid_sides, crop_cells: int) -> tuple[int, int, int]:
    """The 3-D prior's training crop per axis (cells): ``crop_cells``, or along an axis where the
    training volumes' blocks are thinner the largest multiple of :data:`GRID_MULTIPLE` that fits
    (volumes of 48 voxels: 4 cells along that axis, the full crop along the others: a cube of 4
    cells left the default's prior a blind spot of its own size and volumes at 0.36 against
    0.24). Refused where an axis holds less than :data:`GRID_MULTIPLE` cells."""
    sides = tuple(min(int(crop_cells), int(n) - int(n) % GRID_MULTIPLE) for n in grid_sides)
    if min(sides) < GRID_MULTIPLE:
        raise MicrovaeError(f"the training volumes hold blocks of "
                            f"{'x'.join(str(CELL * int(n)) for n in grid_sides)} voxels only, too "
                            f"thin for the diffusion prior (at least {CELL * GRID_MULTIPLE} per "
                            "side); train without it (--no-diffusion)")
    return sides


@torch.no_grad()
def decode_volume(model: ConvVAE3d, z: torch.Tensor, periodic: bool = False,
                  slab_cells: int = 4, halo_cells: int = HALO_CELLS) -> np.ndarray:
    """Pixel probabilities (8d, 8h, 8w) (float32) of one latent grid ``z`` (C, d, h, w),
    decoded ``slab_cells`` latent cells at a time along the first axis, each slab with
    ``halo_cells`` cells on each side (wrapped around where ``periodic``) that are decoded and
    dropped. Peak memory: about the first decoder layer's output for one slab with halo."""
    if z.dim() != 4:
        raise MicrovaeError(f"decode_volume takes one latent grid (C, d, h, w), got {tuple(z.shape)}")
    depth = z.shape[1]
    out = np.empty(tuple(CELL * n for n in z.shape[1:]), np.float32)
    for begin in range(0, depth, slab_cells):
        end = min(begin + slab_cells, depth)
        if periodic:
            index = torch.arange(begin - halo_cells, end + halo_cells) % depth
            before = halo_cells
        else:
            index = torch.arange(max(begin - halo_cells, 0), min(end + halo_cells, depth))
            before = begin - int(index[0])
        slab = z[:, index][None]
        logits = model.decode_logits(slab, (False, periodic, periodic))[0, 0]
        keep = slice(CELL * before, CELL * (before + end - begin))
        out[CELL * begin:CELL * end] = torch.sigmoid(logits[keep].float()).numpy()
    return out


@torch.no_grad()
def reconstruction_iou(model: ConvVAE3d, volume: np.ndarray) -> float:
    """IoU of phase 1 between a volume (cut to sides that are multiples of :data:`CELL`) and
    the decoding of its posterior mean cut at 0.5: how well the model learned real volumes."""
    piece = volume[tuple(slice(0, n // CELL * CELL) for n in volume.shape)]
    z_mean, _ = model.encode(torch.from_numpy(piece[None, None].astype(np.float32)))
    decoded = decode_volume(model, z_mean[0]) > 0.5
    truth = piece > 0
    return float((decoded & truth).sum() / max((decoded | truth).sum(), 1))


def generate_volumes(model: ConvVAE3d, prior: FieldPrior | DiffusionPrior | None, n: int,
                     shape: tuple[int, int, int], generator: torch.Generator,
                     periodic: bool = False, slab_cells: int = 4,
                     condition: float | None = None) -> list[np.ndarray]:
    """``n`` binary volumes of ``shape`` (multiples of 8): latent grids from the ``diffusion``
    prior (a :class:`DiffusionPrior`, conditioned on the phase fraction ``condition`` where
    given: a target as it is, or the calibrated condition of :func:`target_condition`), the
    ``field`` prior (a :class:`FieldPrior`) or N(0, I) (``prior`` None), decoded in slabs and
    cut at 0.5 (no threshold that forces the phase fraction)."""
    grid = model.latent_shape(*shape)
    if condition is not None and not isinstance(prior, DiffusionPrior):
        raise MicrovaeError("a target phase fraction needs the diffusion prior")
    if prior is None:
        z = torch.randn((n, *grid), generator=generator)
    elif isinstance(prior, DiffusionPrior):
        z = sample_volume_grids(prior, n, grid[1:], generator, periodic, condition)
    else:
        z = sample_field(prior, n, *grid[1:], generator=generator, periodic=periodic)
    return [(decode_volume(model, z[i], periodic, slab_cells) > 0.5).astype(np.uint8)
            for i in range(n)]


# A target's calibration draws volumes of at most this side (voxels; a 256^3 one would double
# the time of the volume asked for) ...
CALIBRATION_SIDE = 128
# ... holding this many voxels in all: 8 volumes of 128^3. The fraction of one periodic 128^3
# volume of the default's conv3d model spreads by about +-0.01 around its mean (the 2-D
# calibration's 32 images of 256 px hold as many voxels as one such volume, but a 3-D structure
# of the same correlation length holds fewer independent pieces per voxel), so one volume left
# the calibrated condition off by up to 0.026 (benchmarks/results/volumes_targets.json, first run).
TARGET_CALIBRATION_VOXELS = 8 * 128**3


def calibration_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The shape of the volumes that calibrate a target for volumes of ``shape``: each side
    capped at :data:`CALIBRATION_SIDE` (a multiple of 32: still a valid periodic draw)."""
    return tuple(min(int(side), CALIBRATION_SIDE) for side in shape)


def target_condition(model: ConvVAE3d, prior: DiffusionPrior, target: float,
                     shape: tuple[int, int, int], generator: torch.Generator,
                     periodic: bool = False, slab_cells: int = 4,
                     steps: int = TARGET_CALIBRATION_STEPS) -> float:
    """The condition that meets the phase fraction ``target`` in volumes of ``shape``, by the
    2-D feedback (:func:`microvae.sample.calibrated_condition`): volumes of
    :func:`calibration_shape` (as many as hold :data:`TARGET_CALIBRATION_VOXELS`) drawn
    with ``generator`` at the condition and cut at 0.5 give the achieved fraction, and the
    condition moves by the error ``steps`` times. No threshold is tuned: the volumes asked for
    are cut at 0.5 like any other."""
    if not isinstance(prior, DiffusionPrior):
        raise MicrovaeError("a target phase fraction needs the diffusion prior")
    if not 0.0 < float(target) < 1.0:
        raise MicrovaeError(f"target phase fraction {target} is not between 0 and 1")
    small = calibration_shape(shape)
    count = max(1, -(-TARGET_CALIBRATION_VOXELS // int(np.prod(small))))

    def draw(n, generator, size, periodic, condition):
        return np.stack(generate_volumes(model, prior, n, size, generator, periodic,
                                         slab_cells, condition)), None

    return calibrated_condition(draw, float(target), small, periodic, lambda v: v, generator,
                                count, steps)
