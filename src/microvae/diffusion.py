"""A learned prior over the latent codes of a VAE: the ``diffusion`` mode (latent grids of a
conv VAE; latent vectors of a Table 1 VAE, :class:`VectorDenoiser`).

A denoising diffusion model (DDPM, Ho et al. 2020; T = 1000 noise levels of a cosine schedule;
the network predicts the velocity v = sqrt(a) eps - sqrt(1 - a) x0, Salimans & Ho 2022, which
stays well-conditioned at the noisiest levels where predicting eps divides by sqrt(a) ~ 0.01;
sampled deterministically with a few tens of DDIM steps, Song et al. 2021) over the posterior
draws of random training windows, encoded by the VAE. The ``field`` prior keeps only the
second-order statistics of the codes (a Gaussian field of normal scores, whose level sets are
blobs); the denoiser learns their higher-order structure (island shapes, networks along grain
boundaries) from the codes themselves.

The denoiser is a small fully convolutional U-Net, so it samples a grid of any size. It trains
with zero padding on crops (whose edges are edges) and samples periodic grids with circular
padding in every convolution (no edges: every cell is like an interior cell of a crop), so
opposite edges join (sides a multiple of 4 cells, 32 px). Zero padding is free in the
convolution kernels; circular padding costs a copy per convolution.

Conditioning on phase fraction (classifier-free guidance, Ho & Salimans 2022): each training
grid comes with the local phase fraction of its window (the fraction of phase 1 in each 8 x 8
cell, smoothed by a Gaussian of :data:`CONDITION_SIGMA_CELLS` cells), replaced by "no condition"
in a share ``condition_dropout`` of the examples. Sampling takes no condition (the ``diffusion``
mode), a constant map (``phase_fraction=0.3``) or any map (a graded microstructure); the
achieved fraction is what the decoder draws from the grids: no threshold forces it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import check_parameters, parse_options, schedule_errors
from .errors import MicrovaeError

TIMESTEPS = 1000
LAST_ALPHA_BAR = 1e-4
DILATIONS = (1, 2, 1)  # the blocks at 1/4 resolution
VECTOR_BLOCKS = 4  # of the MLP denoiser of latent vectors (Table 1 models)
GRID_MULTIPLE = 4
# A periodic grid's side at 1/4 resolution must hold the widest dilation's circular padding.
PERIODIC_MIN_CELLS = GRID_MULTIPLE * max(DILATIONS)
CONDITION_SIGMA_CELLS = 4.0
CELL = 8  # px per latent cell of a conv VAE


class _Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and state dict) that draws one grid at a time on the CPU
    through oneDNN's convolution: PyTorch's heuristic sends a batch of one with few cells (the
    denoiser's coarse levels) to its native im2col kernel. On a whole 256^3 volume the route
    saved 7% with AVX2 kernels and nothing measurable with AVX-512, where the decoder's time
    dominates (benchmarks/speed/volume_throughput.py --only ...)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
        if (input.device.type != "cpu" or input.dtype != torch.float32 or len(input) != 1
                or torch.is_grad_enabled() or not torch.backends.mkldnn.is_available()
                or isinstance(self.padding, str)):
            return super()._conv_forward(input, weight, bias)
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0, 0)
        return torch.ops.aten.mkldnn_convolution(input, weight, bias, padding, self.stride,
                                                 self.dilation, self.groups)


CONVOLUTIONS = {2: nn.Conv2d, 3: _Conv3d}
# Side (cells) of the training crops where diffusion.crop_cells is null and the windows allow.
DEFAULT_CROP_CELLS = 16
# The finishing of mode diffusion is calibrated on images of this side (cells).
CANVAS_CELLS = 32


@dataclass
class DiffusionConfig:
    """Settings of the diffusion prior (the config's ``diffusion`` section; defaults as the
    schema)."""

    width: int = 32
    max_steps: int = 4000
    max_minutes: float | None = 8.0
    batch_size: int = 32
    crop_cells: int | None = None
    windows: int = 512
    learning_rate: float = 0.001
    ema_decay: float = 0.995
    condition_dropout: float = 0.2
    sampling_steps: int = 25
    guidance: float = 0.75
    guidance_schedule: list[list[float]] | None = None
    target_texture: bool = True
    seed: int = 0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> DiffusionConfig:
        cfg = parse_options(cls, options, "diffusion")
        check_schedule(cfg.guidance_schedule)
        return cfg

    def check(self) -> None:
        check_parameters(self, "diffusion")
        check_schedule(self.guidance_schedule)


def check_schedule(schedule) -> None:
    """Refuse a guidance schedule that :func:`~microvae.config.schedule_errors` finds wrong
    (None: no schedule)."""
    errors = [] if schedule is None else schedule_errors(schedule)
    if errors:
        raise MicrovaeError("; ".join(errors))


def guidance_weight(guidance, target):
    """The classifier-free guidance weight for ``target`` (None, a number, or a map of target
    fractions): ``guidance`` itself where it is a number; for a schedule ((phase fraction,
    weight) pairs, fractions rising: :attr:`DiffusionConfig.guidance_schedule`) the weight at
    the target, linear between the pairs and constant beyond them: a number for a number, a
    map of weights (float32, the target's shape) for a map. No target: 1 (the conditional
    model alone is the unconditional one)."""
    if np.ndim(guidance) == 0:
        return float(guidance)
    check_schedule(guidance)
    if target is None:
        return 1.0
    fractions, weights = np.asarray(guidance, dtype=float).T
    values = target.numpy() if torch.is_tensor(target) else np.asarray(target, dtype=float)
    weight = np.interp(values, fractions, weights)
    return float(weight) if np.ndim(weight) == 0 else weight.astype(np.float32)


def noise_levels(timesteps: int = TIMESTEPS) -> torch.Tensor:
    """alpha-bar_t of the cosine schedule (Nichol & Dhariwal 2021), t = 1..T, float64, strictly
    falling; the schedule's time runs to where alpha-bar is :data:`LAST_ALPHA_BAR` (its end,
    alpha-bar = 0, would make the first DDIM step divide by zero)."""
    s = 0.008

    def f(t):
        return torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    end = (1 + s) * 2 / math.pi * math.acos(math.sqrt(LAST_ALPHA_BAR * float(f(torch.tensor(
        0.0, dtype=torch.float64))))) - s
    t = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps * end
    return f(t) / f(torch.tensor(0.0, dtype=torch.float64))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (N, dim) of integer noise levels ``t`` (N,)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class _Block(nn.Module):
    """Pre-activation residual block; the noise level scales and shifts its features (FiLM)."""

    def __init__(self, width: int, embedding: int, dilation: int = 1, dims: int = 2):
        super().__init__()
        conv = CONVOLUTIONS[dims]
        self.norm1 = nn.GroupNorm(min(8, width // 4), width)
        self.conv1 = conv(width, width, 3, padding=dilation, dilation=dilation)
        self.film = nn.Linear(embedding, 2 * width)
        self.norm2 = nn.GroupNorm(min(8, width // 4), width)
        self.conv2 = conv(width, width, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        film = self.film(embedding)
        scale, shift = film.view(*film.shape, *(1,) * (x.dim() - 2)).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class Denoiser(nn.Module):
    """Predicts the velocity of a noisy latent grid (N, C, h, w) at noise level t, given a phase-fraction
    map (N, 1, h, w) and a mask (N, 1, h, w): 1 where the map holds, 0 for "no condition";
    with ``dims`` 3 the same for the 3-D grids (N, C, d, h, w) of a conv3d model.

    A small U-Net: ``width`` channels at the grid's resolution, twice as
    many at 1/2 and four times at 1/4 (where most blocks sit: a receptive field of about 50
    cells for little compute); every side must be a multiple of :data:`GRID_MULTIPLE`."""

    kind = "grid"

    def __init__(self, channels: int, width: int = 32, dims: int = 2):
        super().__init__()
        if dims not in CONVOLUTIONS:
            raise MicrovaeError(f"a denoiser of {dims}-D grids; use 2 or 3")
        self.config = {"channels": channels, "width": width}
        if dims != 2:  # (2-D priors saved before 3-D ones keep their configuration)
            self.config["dims"] = dims
        conv = CONVOLUTIONS[dims]
        w0, w1, w2 = width, 2 * width, 4 * width
        self.embed = nn.Sequential(nn.Linear(w0, w2), nn.SiLU(), nn.Linear(w2, w2))
        self.inp = conv(channels + 2, w0, 3, padding=1)
        self.level0 = nn.ModuleList([_Block(w0, w2, dims=dims)])
        self.down0 = conv(w0, w1, 3, stride=2, padding=1)
        self.level1 = nn.ModuleList([_Block(w1, w2, dims=dims), _Block(w1, w2, dims=dims)])
        self.down1 = conv(w1, w2, 3, stride=2, padding=1)
        self.level2 = nn.ModuleList(_Block(w2, w2, d, dims) for d in DILATIONS)
        self.up1 = conv(w2, w1, 3, padding=1)
        self.level1_up = nn.ModuleList([_Block(w1, w2, dims=dims), _Block(w1, w2, dims=dims)])
        self.up0 = conv(w1, w0, 3, padding=1)
        self.level0_up = nn.ModuleList([_Block(w0, w2, dims=dims)])
        self.out_norm = nn.GroupNorm(min(8, w0 // 4), w0)
        self.out = conv(w0, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def set_periodic(self, periodic: bool) -> Denoiser:
        """Circular padding in every convolution (a periodic grid: no edges) or zeros (the
        training crops' edges). Trained with zeros, the denoiser sees in a periodic grid only
        cells like the interior cells of its crops."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                module.padding_mode = "circular" if periodic else "zeros"
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        if any(side % GRID_MULTIPLE for side in x.shape[2:]):
            raise MicrovaeError(f"the denoiser takes grids whose sides are multiples of "
                                f"{GRID_MULTIPLE} cells, got {tuple(x.shape[2:])}")
        e = self.embed(timestep_embedding(t, self.config["width"]))

        def run(blocks, h):
            for block in blocks:
                h = block(h, e)
            return h

        h0 = run(self.level0, self.inp(torch.cat([x, condition * mask, mask], dim=1)))
        h1 = run(self.level1, self.down0(h0))
        h2 = run(self.level2, self.down1(h1))
        h1 = run(self.level1_up, h1 + self.up1(F.interpolate(h2, scale_factor=2.0)))
        h0 = run(self.level0_up, h0 + self.up0(F.interpolate(h1, scale_factor=2.0)))
        return self.out(F.silu(self.out_norm(h0)))


class _VectorBlock(nn.Module):
    """Pre-activation residual block of an MLP; the embedding scales and shifts its features."""

    def __init__(self, width: int, embedding: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.film = nn.Linear(embedding, 2 * width)
        self.norm2 = nn.LayerNorm(width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.fc1(F.silu(self.norm1(x)))
        scale, shift = self.film(embedding).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.fc2(F.silu(h))


class VectorDenoiser(nn.Module):
    """Predicts the velocity of noisy latent vectors (N, C) of a Table 1 VAE at noise level t,
    given a phase fraction (N, 1) and a mask (N, 1): 1 where it holds, 0 for "no condition".

    An MLP of :data:`VECTOR_BLOCKS` residual blocks of ``8 * width`` features; the noise level
    and the condition enter every block through one embedding (FiLM)."""

    kind = "vector"

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.config = {"channels": channels, "width": width}
        hidden, embedding = 8 * width, 4 * width
        self.embed = nn.Sequential(nn.Linear(width, embedding), nn.SiLU(),
                                   nn.Linear(embedding, embedding))
        self.embed_condition = nn.Sequential(nn.Linear(2, embedding), nn.SiLU(),
                                             nn.Linear(embedding, embedding))
        self.inp = nn.Linear(channels, hidden)
        self.blocks = nn.ModuleList(_VectorBlock(hidden, embedding)
                                    for _ in range(VECTOR_BLOCKS))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def set_periodic(self, periodic: bool) -> VectorDenoiser:
        """A vector has no edges (for :func:`ddim`, which sets the padding of grid denoisers)."""
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        e = self.embed(timestep_embedding(t, self.config["width"])) + \
            self.embed_condition(torch.cat([condition * mask, mask], dim=1))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(F.silu(self.out_norm(h)))


DENOISERS = {"grid": Denoiser, "vector": VectorDenoiser}


@dataclass
class DiffusionPrior:
    """A trained denoiser (its EMA weights: a :class:`Denoiser` of latent grids or a
    :class:`VectorDenoiser` of latent vectors) and the per-channel normalisation of the codes."""

    denoiser: Denoiser | VectorDenoiser
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    history: list[dict[str, float]]
    training_phase_fraction: float
    condition_range: tuple[float, float]  # the central 98% of the training condition maps
    active: torch.Tensor | None = None  # (C,) bool: the channels the denoiser models
    crop_cells: int = 16  # side of the training crops (grids)

    @property
    def kind(self) -> str:
        """``grid`` (conv models) or ``vector`` (Table 1 models)."""
        return self.denoiser.kind

    @property
    def channels(self) -> int:
        """Channels of the latent grid (the denoiser models the active ones)."""
        return len(self.mean)

    @property
    def active_channels(self) -> torch.Tensor:
        return self.active if self.active is not None else torch.ones(len(self.mean), dtype=bool)

    def describe(self) -> dict[str, float | int]:
        return {"channels": self.channels, "active_channels": int(self.active_channels.sum()),
                "width": self.denoiser.config["width"],
                "steps": len(self.history),
                "final_loss": float(np.mean([h["loss"] for h in self.history[-100:]])),
                "minutes": self.history[-1]["seconds"] / 60 if self.history else 0.0,
                "condition_low": self.condition_range[0],
                "condition_high": self.condition_range[1]}

    def state(self) -> dict[str, Any]:
        return {"state_dict": {k: v.detach().float().cpu().contiguous()
                               for k, v in self.denoiser.state_dict().items()},
                "kind": self.kind, "config": dict(self.denoiser.config), "mean": self.mean,
                "std": self.std,
                "history": {k: [h[k] for h in self.history] for k in ("step", "loss", "seconds")},
                "training_phase_fraction": self.training_phase_fraction,
                "condition_range": list(self.condition_range), "active": self.active_channels,
                "crop_cells": self.crop_cells}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DiffusionPrior:
        denoiser = DENOISERS[state.get("kind", "grid")](**state["config"])
        denoiser.load_state_dict(state["state_dict"])
        columns = state["history"]
        history = [dict(zip(columns, values)) for values in zip(*columns.values())]
        return cls(denoiser.eval(), state["mean"], state["std"], history,
                   float(state["training_phase_fraction"]), tuple(state["condition_range"]),
                   state["active"].bool(), int(state["crop_cells"]))


def condition_maps(windows: np.ndarray, periodic: bool = False) -> np.ndarray:
    """Local phase fraction (N, S/8, S/8) float32 of binary windows (N, S, S): the fraction of
    phase 1 in each cell, smoothed by a Gaussian of :data:`CONDITION_SIGMA_CELLS` cells
    (wrapped around the edges of ``periodic`` windows)."""
    n, height, width = windows.shape
    cells = windows.reshape(n, height // CELL, CELL, width // CELL, CELL).mean((2, 4))
    return smoothed_cells(cells, periodic).astype(np.float32)


def smoothed_cells(cells: np.ndarray, periodic: bool = False) -> np.ndarray:
    """The condition a map of phase fractions per cell (..., h, w) stands for: smoothed by the
    Gaussian of :data:`CONDITION_SIGMA_CELLS` cells that made the training conditions
    (reflected at the edges; wrapped around for a periodic map), in float64."""
    from scipy.ndimage import gaussian_filter

    sigma = (0,) * (np.ndim(cells) - 2) + (CONDITION_SIGMA_CELLS, CONDITION_SIGMA_CELLS)
    return gaussian_filter(np.asarray(cells, np.float64), sigma,
                           mode="wrap" if periodic else "reflect")


def training_crop_cells(crop_cells: int | None, window_px: int) -> int:
    """The side (cells) of the denoiser's training crops in encoded windows of ``window_px``:
    ``crop_cells`` where set (refused where it does not fit), else :data:`DEFAULT_CROP_CELLS`
    or, in smaller windows, the largest multiple of :data:`GRID_MULTIPLE` cells inside them."""
    inside = window_px // CELL
    if crop_cells is not None:
        if inside < crop_cells:
            raise MicrovaeError(f"diffusion.crop_cells: {crop_cells} cells ({CELL * crop_cells} "
                                f"px) do not fit in the training regions (the largest window "
                                f"is {window_px} px); lower it")
        return crop_cells
    if inside >= DEFAULT_CROP_CELLS:
        return DEFAULT_CROP_CELLS
    fitting = inside - inside % GRID_MULTIPLE
    if fitting < GRID_MULTIPLE:
        raise MicrovaeError(f"the training regions hold windows of {window_px} px only, too small "
                            f"for the diffusion prior's training crops (at least "
                            f"{CELL * GRID_MULTIPLE} px); set diffusion.enabled: false")
    return fitting


def fit_diffusion(grids: torch.Tensor, conditions: torch.Tensor, cfg: DiffusionConfig,
                  training_phase_fraction: float, active: torch.Tensor | None = None,
                  log_every: int = 200, log=None, device: str | None = None,
                  crop_sides: tuple[int, ...] | None = None) -> DiffusionPrior:
    """Train the denoiser on latent grids (N, C, h, w), or (N, C, d, h, w) of a conv3d model,
    with their condition maps (N, h, w) or (N, d, h, w): random crops of ``cfg.crop_cells``
    cells per side (``crop_sides``: one side per axis instead, for grids thinner along some
    axis), one noise level per example; stops after ``cfg.max_steps`` steps or
    ``cfg.max_minutes``; on CUDA where present (``device`` None).
    ``active`` (C,) bool: the channels to model (the others, which the encoder leaves at its
    prior, are drawn i.i.d. from their own mean and spread); None = all. All randomness from
    ``cfg.seed``."""
    cfg.check()
    if grids.dim() not in (4, 5):
        raise MicrovaeError(f"latent grids (N, C, h, w) or (N, C, d, h, w), got shape "
                            f"{tuple(grids.shape)}")
    n, channels, *sides = grids.shape
    spatial = tuple(range(2, grids.dim()))
    crop = cfg.crop_cells or DEFAULT_CROP_CELLS
    crops = tuple(int(c) for c in crop_sides) if crop_sides is not None else (crop,) * len(sides)
    if len(crops) != len(sides) or any(s < c for s, c in zip(sides, crops)):
        raise MicrovaeError(f"diffusion.crop_cells: {'x'.join(map(str, crops))} cells do not fit "
                            f"in the encoded training windows ({'x'.join(map(str, sides))} "
                            "cells); lower it")
    if tuple(conditions.shape) != (n, *sides):
        raise MicrovaeError(f"condition maps {tuple(conditions.shape)} do not match the grids "
                            f"{tuple(grids.shape)}")
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the denoiser's initial weights
    active = _active_flags(active, channels)
    grids = grids.float()
    shape = (1, channels) + (1,) * len(sides)
    mean = grids.mean((0, *spatial))
    std = grids.std((0, *spatial)).clamp_min(1e-6)
    data = ((grids - mean.view(shape)) / std.view(shape))[:, active]
    conditions = conditions.float()

    def batch():
        index = torch.randint(0, n, (cfg.batch_size,), generator=generator)
        starts = torch.stack([torch.randint(0, side - c + 1, (cfg.batch_size,),
                                            generator=generator)
                              for side, c in zip(sides, crops)], 1)
        windows = [tuple(slice(int(s), int(s) + c) for s, c in zip(start, crops))
                   for start in starts]
        x0 = torch.stack([data[(int(i), slice(None)) + w] for i, w in zip(index, windows)])
        cond = torch.stack([conditions[(int(i),) + w] for i, w in zip(index, windows)])[:, None]
        return x0, cond

    ema, history = _train_denoiser(Denoiser(int(active.sum()), cfg.width, len(sides)), batch,
                                   cfg, generator, log_every, log, device)
    low, high = np.quantile(conditions.numpy(), [0.01, 0.99])
    return DiffusionPrior(ema, mean, std, history, float(training_phase_fraction),
                          (float(low), float(high)), active, min(crops))


def fit_vector_diffusion(z_mean: torch.Tensor, z_log_var: torch.Tensor,
                         phase_fractions: torch.Tensor, cfg: DiffusionConfig,
                         training_phase_fraction: float, active: torch.Tensor | None = None,
                         log_every: int = 200, log=None, device: str | None = None
                         ) -> DiffusionPrior:
    """Train a :class:`VectorDenoiser` on the latent vectors of a Table 1 VAE: a fresh posterior
    draw (eq. 1) of the codes (N, L) of random training images in every batch, each with its
    image's phase fraction (N,) as condition; otherwise as :func:`fit_diffusion` (the
    normalisation is the aggregate posterior's per dimension; ``active``: the dimensions to
    model)."""
    cfg.check()
    n, dims = z_mean.shape
    if z_log_var.shape != z_mean.shape or phase_fractions.shape != (n,):
        raise MicrovaeError(f"codes {tuple(z_mean.shape)}, {tuple(z_log_var.shape)} and phase "
                            f"fractions {tuple(phase_fractions.shape)} do not match")
    if n < 2:
        raise MicrovaeError(f"the vector diffusion prior needs at least 2 training images, "
                            f"got {n}")
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    active = _active_flags(active, dims)
    z_mean, z_log_var = z_mean.float(), z_log_var.float()
    spread = z_log_var.mul(0.5).exp()
    mean = z_mean.mean(0)
    std = (z_mean.var(0, unbiased=False) + spread.pow(2).mean(0)).sqrt().clamp_min(1e-6)
    conditions = phase_fractions.float()

    def batch():
        index = torch.randint(0, n, (cfg.batch_size,), generator=generator)
        eps = torch.randn((cfg.batch_size, dims), generator=generator)
        x0 = ((z_mean[index] + spread[index] * eps - mean) / std)[:, active]
        return x0, conditions[index][:, None]

    ema, history = _train_denoiser(VectorDenoiser(int(active.sum()), cfg.width), batch, cfg,
                                   generator, log_every, log, device)
    low, high = np.quantile(conditions.numpy(), [0.01, 0.99])
    return DiffusionPrior(ema, mean, std, history, float(training_phase_fraction),
                          (float(low), float(high)), active, 0)


def _active_flags(active, channels: int) -> torch.Tensor:
    active = torch.ones(channels, dtype=bool) if active is None else torch.as_tensor(active,
                                                                                      dtype=bool)
    if active.shape != (channels,) or not active.any():
        raise MicrovaeError(f"active channels {active.tolist()}: need a flag for each of the "
                            f"{channels} channels, at least one set")
    return active


def _train_denoiser(denoiser: nn.Module, batch, cfg: DiffusionConfig,
                    generator: torch.Generator, log_every: int, log, device: str | None
                    ) -> tuple[nn.Module, list[dict[str, float]]]:
    """The v-prediction loss on ``batch()`` -> (clean examples, conditions) at one random noise
    level each, the condition dropped for a share ``cfg.condition_dropout`` of them; AdamW,
    gradients clipped at 1, EMA of the weights; until ``cfg.max_steps`` or ``cfg.max_minutes``.
    Returns the EMA denoiser (on the CPU, in eval mode) and the loss history."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    denoiser = denoiser.to(device)
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    alpha_bar = noise_levels().float()
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    step = 0
    while True:
        x0, cond = batch()
        keep = (torch.rand((len(x0),) + (1,) * (cond.dim() - 1), generator=generator)
                >= cfg.condition_dropout).float().expand_as(cond)
        t = torch.randint(0, TIMESTEPS, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alpha_bar[t].view(-1, *([1] * (x0.dim() - 1)))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        velocity = a.sqrt() * noise - (1 - a).sqrt() * x0
        xt, t, cond, keep, velocity = (v.to(device) for v in (xt, t, cond, keep, velocity))
        loss = F.mse_loss(denoiser(xt, t, cond, keep), velocity)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        optimizer.step()
        step += 1
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for target, source in zip(ema.parameters(), denoiser.parameters()):
                target.lerp_(source, 1 - decay)
        seconds = time.perf_counter() - started
        history.append({"step": step, "loss": loss.item(), "seconds": seconds})
        if not math.isfinite(history[-1]["loss"]):
            raise MicrovaeError(f"diffusion training diverged at step {step} (loss {loss}); "
                                "lower diffusion.learning_rate")
        if log is not None and step % log_every == 0:
            recent = np.mean([h["loss"] for h in history[-log_every:]])
            log(f"diffusion step {step}: loss {recent:.4f} ({seconds / 60:.1f} min)")
        if step >= cfg.max_steps or (cfg.max_minutes is not None
                                     and seconds >= 60 * cfg.max_minutes):
            break
    return ema.cpu().eval(), history


def _onto_grid(target: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A map (2-D) or one map per image (3-D) resampled bilinearly onto height x width
    cells."""
    stack = target[:, None] if target.dim() == 3 else target[None, None]
    resampled = F.interpolate(stack, size=(height, width), mode="bilinear", align_corners=False)
    return resampled[:, 0] if target.dim() == 3 else resampled[0, 0]


def as_condition_map(phase_fraction, height: int, width: int) -> torch.Tensor | None:
    """The condition (height, width) cells for a target: None, a number (constant), a map
    (any 2-D array, resampled bilinearly onto the grid), or one map per image (N, h, w) ->
    (N, height, width)."""
    if phase_fraction is None:
        return None
    target = torch.as_tensor(np.asarray(phase_fraction, np.float32))
    if target.dim() == 0:
        value = float(target)
        if not 0.0 < value < 1.0:
            raise MicrovaeError(f"target phase fraction {value} is not between 0 and 1")
        return torch.full((height, width), value)
    if target.dim() not in (2, 3):
        raise MicrovaeError(f"a phase-fraction map is 2-D (or one per image, 3-D), got shape "
                            f"{tuple(target.shape)}")
    if not ((target > 0) & (target < 1)).all():
        raise MicrovaeError("a phase-fraction map holds values outside (0, 1)")
    return _onto_grid(target, height, width)


def drawn_whole(prior: DiffusionPrior, height: int, width: int, periodic: bool) -> bool:
    """Whether a grid of ``height`` x ``width`` cells is drawn whole (periodic, or large enough)
    rather than cut from a canvas of the training crops' size (:func:`sample_grids`)."""
    return periodic or 2 * max(height, width) > round_up(prior.crop_cells)


@torch.no_grad()
def sample_grids(prior: DiffusionPrior, n: int, height: int, width: int,
                 generator: torch.Generator, periodic: bool = False, phase_fraction=None,
                 steps: int = DiffusionConfig.sampling_steps, guidance=DiffusionConfig.guidance,
                 batch_size: int = 64, eta: float = 0.0) -> torch.Tensor:
    """``n`` latent grids (n, C, height, width) by DDIM (eta = 0) over ``steps`` noise levels;
    ``phase_fraction``: None, a number, a map or one map per grid (see
    :func:`as_condition_map`; a map covers the output grid); ``guidance`` w: v = uncond + w
    (cond - uncond), w = 1 the conditional model alone: a number, or a map of weights of the
    phase-fraction map's shape (one weight per cell, resampled as the map is; see
    :func:`guidance_weight`)."""
    if prior.kind != "grid":
        raise MicrovaeError("a prior of latent vectors (table1 models) samples vectors, not "
                            "grids")
    if height < 1 or width < 1:
        raise MicrovaeError(f"latent grid of {height}x{width} cells")
    if periodic and (height % GRID_MULTIPLE or width % GRID_MULTIPLE):
        raise MicrovaeError(f"a periodic diffusion sample needs a size that is a multiple of "
                            f"{CELL * GRID_MULTIPLE} px, got {CELL * height}x{CELL * width} px")
    if np.ndim(guidance) != 0 and np.shape(guidance) != np.shape(phase_fraction):
        raise MicrovaeError(f"a map of guidance weights of shape {np.shape(guidance)} needs a "
                            f"phase-fraction map of that shape, got {np.shape(phase_fraction)}")
    if not periodic and np.ndim(phase_fraction) == 0 and \
            not drawn_whole(prior, height, width, periodic):
        return _windows_of_canvases(prior, n, height, width, generator, phase_fraction, steps,
                                    guidance, batch_size, eta)
    big_h, big_w = (height, width) if periodic else (round_up(height), round_up(width))
    condition = as_condition_map(phase_fraction, height, width)
    per_grid = condition is not None and condition.dim() == 3
    if per_grid and len(condition) != n:
        raise MicrovaeError(f"{len(condition)} phase-fraction maps for {n} grids")
    cond = torch.zeros((n if per_grid else 1, 1, big_h, big_w))
    mask = torch.zeros((1, 1, big_h, big_w))
    if condition is not None:  # rounding up: the cells cut away continue the map's edges
        maps = condition if per_grid else condition[None]
        cond[:, 0] = F.pad(maps[:, None], (0, big_w - width, 0, big_h - height),
                           mode="replicate")[:, 0]
        mask[:] = 1.0
    weights = 1.0 if condition is None else guidance
    if np.ndim(weights) == 0:
        weights = float(weights)
    else:  # one weight per cell, onto the grid as its phase-fraction map
        weight_maps = _onto_grid(torch.as_tensor(np.asarray(weights, np.float32)), height,
                                 width)
        weights = F.pad((weight_maps if per_grid else weight_maps[None])[:, None],
                        (0, big_w - width, 0, big_h - height), mode="replicate")
    active = prior.active_channels
    out = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = torch.randn((m, prior.channels, big_h, big_w), generator=generator)
        batch_cond = cond[start:start + m] if per_grid else cond.expand(m, -1, -1, -1)
        batch_weights = weights if np.ndim(weights) == 0 else \
            weights[start:start + m] if per_grid else weights.expand(m, -1, -1, -1)
        x[:, active] = ddim(prior.denoiser, x[:, active], batch_cond,
                            mask.expand(m, -1, -1, -1), steps, batch_weights, periodic, eta,
                            generator)
        out.append(x[:, :, :height, :width])
    grids = torch.cat(out) if out else torch.zeros((0, prior.channels, height, width))
    return grids * prior.std[None, :, None, None] + prior.mean[None, :, None, None]


@torch.no_grad()
def sample_volume_grids(prior: DiffusionPrior, n: int, sides: tuple[int, int, int],
                        generator: torch.Generator, periodic: bool = False,
                        phase_fraction: float | None = None,
                        steps: int = DiffusionConfig.sampling_steps,
                        guidance: float = DiffusionConfig.guidance) -> torch.Tensor:
    """``n`` 3-D latent grids (n, C, *sides) of a prior trained on conv3d codes, by DDIM as
    :func:`sample_grids` (``phase_fraction``: None or a number; a grid that is not periodic is
    drawn with its sides rounded up to :data:`GRID_MULTIPLE` cells and cut)."""
    if prior.kind != "grid" or prior.denoiser.config.get("dims", 2) != 3:
        raise MicrovaeError("this diffusion prior was trained on 2-D latent grids; a volume "
                            "needs the prior of a conv3d model")
    if len(sides) != 3 or min(sides) < 1:
        raise MicrovaeError(f"latent grid of {'x'.join(map(str, sides))} cells")
    if periodic and any(side % GRID_MULTIPLE or side < PERIODIC_MIN_CELLS for side in sides):
        raise MicrovaeError(f"a periodic diffusion sample needs sides that are multiples of "
                            f"{CELL * GRID_MULTIPLE} voxels and at least "
                            f"{CELL * PERIODIC_MIN_CELLS}, got "
                            f"{'x'.join(str(CELL * s) for s in sides)}")
    big = tuple(sides) if periodic else tuple(round_up(side) for side in sides)
    cond = torch.zeros((1, 1, *big))
    mask = torch.zeros((1, 1, *big))
    if phase_fraction is not None:
        if not 0.0 < float(phase_fraction) < 1.0:
            raise MicrovaeError(f"target phase fraction {phase_fraction} is not between 0 "
                                "and 1")
        cond[:] = float(phase_fraction)
        mask[:] = 1.0
    active = prior.active_channels
    shape = (1, prior.channels, 1, 1, 1)
    out = []
    for _ in range(n):
        x = torch.randn((1, prior.channels, *big), generator=generator)
        x[:, active] = ddim(prior.denoiser, x[:, active], cond, mask, steps,
                            guidance if phase_fraction is not None else 1.0, periodic)
        out.append(x[:, :, :sides[0], :sides[1], :sides[2]])
    grids = torch.cat(out) if out else torch.zeros((0, prior.channels, *sides))
    return grids * prior.std.view(shape) + prior.mean.view(shape)


def _windows_of_canvases(prior: DiffusionPrior, n: int, height: int, width: int,
                         generator: torch.Generator, phase_fraction, steps: int, guidance: float,
                         batch_size: int, eta: float) -> torch.Tensor:
    """Small grids as windows of canvases of the training crops' size, one window-size gap
    between neighbours: a grid of a few cells alone is all edge, which the denoiser saw only
    at the rim of its training crops."""
    canvas = round_up(prior.crop_cells)
    ys = range(0, canvas - height + 1, 2 * height)
    xs = range(0, canvas - width + 1, 2 * width)
    per_canvas = len(ys) * len(xs)
    canvases = sample_grids(prior, -(-n // per_canvas), canvas, canvas, generator,
                            phase_fraction=phase_fraction, steps=steps, guidance=guidance,
                            batch_size=max(1, batch_size // 4), eta=eta)
    windows = torch.stack([canvases[:, :, y:y + height, x:x + width] for y in ys for x in xs],
                          1)
    return windows.reshape(-1, prior.channels, height, width)[:n]


@torch.no_grad()
def sample_vectors(prior: DiffusionPrior, n: int, generator: torch.Generator,
                   phase_fraction: float | None = None,
                   steps: int = DiffusionConfig.sampling_steps,
                   guidance: float = DiffusionConfig.guidance, batch_size: int = 1024
                   ) -> torch.Tensor:
    """``n`` latent vectors (n, L) of a vector prior by DDIM, as :func:`sample_grids`;
    ``phase_fraction``: None or a number (a Table 1 image has one phase fraction)."""
    if prior.kind != "vector":
        raise MicrovaeError("a prior of latent grids (conv models) samples grids, not vectors")
    if np.ndim(phase_fraction) != 0:
        raise MicrovaeError("a Table 1 model generates at one phase fraction per image, not at "
                            "a map")
    if phase_fraction is not None and not 0.0 < float(phase_fraction) < 1.0:
        raise MicrovaeError(f"target phase fraction {phase_fraction} is not between 0 and 1")
    active = prior.active_channels
    out = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = torch.randn((m, prior.channels), generator=generator)
        condition = torch.full((m, 1), float(phase_fraction or 0.0))
        mask = torch.full((m, 1), float(phase_fraction is not None))
        x[:, active] = ddim(prior.denoiser, x[:, active], condition, mask, steps,
                            guidance if phase_fraction is not None else 1.0)
        out.append(x)
    vectors = torch.cat(out) if out else torch.zeros((0, prior.channels))
    return vectors * prior.std + prior.mean


@torch.no_grad()
def ddim(denoiser: Denoiser, noise: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor,
         steps: int, guidance: float | torch.Tensor = 1.0, periodic: bool = False,
         eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM from ``noise`` (normalised grids at the last noise level) down to a clean grid in
    ``steps`` evenly spaced noise levels, with the guidance weight ``guidance`` (a number, or a
    tensor of one weight per cell, shaped as ``condition``); ``eta`` 0 is deterministic, 1 adds
    fresh noise at each step as ancestral DDPM sampling does (from ``generator``). Every
    update is per cell, so with ``periodic`` the whole map from noise to grid commutes with
    circular shifts (of multiples of :data:`GRID_MULTIPLE` cells)."""
    if steps < 1 or steps > TIMESTEPS:
        raise MicrovaeError(f"sampling steps {steps} must be between 1 and {TIMESTEPS}")
    alpha_bar = noise_levels()
    levels = torch.linspace(TIMESTEPS - 1, 0, steps).round().long()
    denoiser = denoiser.eval().set_periodic(periodic)
    unconditional = torch.zeros_like(mask)
    x = noise
    try:
        for i, t in enumerate(levels):
            tt = torch.full((len(x),), int(t), dtype=torch.long)
            v = denoiser(x, tt, condition, mask)
            if torch.is_tensor(guidance) or guidance != 1.0:
                v_free = denoiser(x, tt, condition, unconditional)
                v = v_free + guidance * (v - v_free)
            a = alpha_bar[t].float()
            a_next = alpha_bar[levels[i + 1]].float() if i + 1 < steps else torch.tensor(1.0)
            x0 = a.sqrt() * x - (1 - a).sqrt() * v
            eps = (1 - a).sqrt() * x + a.sqrt() * v
            sigma = eta * ((1 - a_next) / (1 - a) * (1 - a / a_next)).clamp_min(0).sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next - sigma**2).clamp_min(0).sqrt() * eps
            if eta > 0 and i + 1 < steps:
                x = x + sigma * torch.randn(x.shape, generator=generator)
    finally:
        denoiser.set_periodic(False)
    return x


def round_up(cells: int) -> int:
    return -(-cells // GRID_MULTIPLE) * GRID_MULTIPLE


def linear_gradient(low: float, high: float, height: int, width: int) -> np.ndarray:
    """A phase-fraction map (height, width) rising linearly from ``low`` at the left edge to
    ``high`` at the right (a graded microstructure)."""
    for value, name in ((low, "low"), (high, "high")):
        if not 0.0 < value < 1.0:
            raise MicrovaeError(f"graded phase fraction {name} end {value} is not between 0 "
                                "and 1")
    columns = np.linspace(low, high, width, dtype=np.float32)
    return np.broadcast_to(columns, (height, width)).copy()
