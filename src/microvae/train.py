"""Training of one VAE on arrays: Adam on random crops of the training regions (or on the fixed
tiles), validation every epoch, best-epoch weights, early stopping, resumable state, a guard
against divergence, and detection of and recovery from posterior collapse and a decoder stuck
at the mean image. No file I/O here: the train stage (:mod:`microvae.stages.train`) loads
the data, keeps the checkpoint and writes the outputs.

The run is split into :func:`prepare` (data, network, optimizer, fingerprint), :func:`resume`
(from a saved :func:`training_state`), :func:`train_step` (one optimizer step, what
``benchmarks/speed/train_throughput.py`` times), :func:`run_epoch` and :func:`fit` (epochs until a
stopping rule holds, :func:`stop_reason`).

An epoch is ``steps_per_epoch`` optimizer steps (by default as many as one pass over the
training tiles takes) followed by a validation; the stopping rules are checked after each.

Determinism: on the CPU, the same data, configuration, seed and thread count give
bit-identical weights, also across a kill and resume: all randomness (initialisation, crops
and their transforms, shuffling, the eps of eq. 1) comes from one generator whose state is
saved with the run. Only ``max_minutes`` depends on the clock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .config import check_parameters, parse_options
from .crops import CropSampler, window_origins
from .dataset import evenly_spaced
from .descriptors import chord_lengths, specific_perimeter
from .device import Runtime
from .errors import MicrovaeError
from .model import (
    USED_VARIANCE,
    VAE,
    build_model,
    initialize,
    kl_per_dimension,
    model_config,
    reparameterize,
    vae_loss,
)

log = logging.getLogger("microvae.train")

# Training BCE at least this fraction of the mean image's BCE: the decoder draws the mean image.
STUCK_AT_MEAN = 0.99
# A failure (posterior collapse, stuck at the mean image) is acted on once it held for this many
# epochs in a row and this many optimizer steps after the (re)start: early in a training the
# decoder draws the mean image for a while before it learns to read z.
FAILURE_EPOCHS = 2
FAILURE_STEPS = 300
MAX_RESTARTS = 2
# A restart after a failure ramps the KL weight from 0 over this many epochs (at least).
RECOVERY_WARMUP_EPOCHS = 5
# A model whose best epoch's training BCE is above this fraction of the mean image's cannot
# hold the structure (measured: the gallery's micrographs 0.05-0.09 with Table 1 at latent 64,
# the default's latent 12 and 64 0.24 and 0.15; a micro-CT map of 2-4 px pores 0.63 with Table
# 1 at latent 64, 0.15 with the conv model). Below CAPACITY_LATENT the bottleneck itself is
# the limit (the paper's sweep of small latent sizes), which is no advice to give.
POOR_RECONSTRUCTION = 0.4
CAPACITY_LATENT = 8
# Features narrower than this (px, mean chord of the finer phase) are near the pixel size.
FINEST_RESOLVED = 2.0


# train.augment auto: a structure whose mean chords along x and y differ by at most this share
# (each phase) is taken as isotropic in the plane and trained under all 8 rotations and flips;
# otherwise under the 4 flips that keep the axes (measured: the synthetic default 3-4%, the
# gallery's Bentheimer and aluminium maps 3-5%, the nanoporous gold SEM image 23%).
ISOTROPY_TOLERANCE = 0.15
ISOTROPY_TILES = 2000


def choose_augmentation(images: np.ndarray) -> tuple[str, str]:
    """``train.augment: auto`` for the training images (N, H, W): ``dihedral`` where both
    phases' mean chord lengths along x and y agree within :data:`ISOTROPY_TOLERANCE`, else
    ``flips``; and why."""
    differences = {}
    for phase in (0, 1):
        x, y = chord_lengths(images, phase, "x"), chord_lengths(images, phase, "y")
        if len(x) < 10 or len(y) < 10:
            return "flips", (f"too few chords of phase {phase} inside the tiles to tell whether "
                             "the structure is isotropic: flips only (they keep the axes)")
        differences[phase] = abs(x.mean() - y.mean()) / ((x.mean() + y.mean()) / 2)
    phase, worst = max(differences.items(), key=lambda item: item[1])
    what = (f"the mean chords along x and y differ by up to {100 * worst:.0f}% (phase {phase}; "
            f"tolerance {100 * ISOTROPY_TOLERANCE:.0f}%)")
    if worst <= ISOTROPY_TOLERANCE:
        return "dihedral", what + ": isotropic in the plane, all 8 rotations and flips"
    return "flips", what + ": anisotropic, only the 4 flips that keep the axes"


# model.architecture auto: Table 1's latent vector holds a tile with up to this much interface
# (phase boundary, px per tile, by Crofton's formula); above it the conv model, whose latent grid
# grows with the image. Measured with Table 1 at latent 64 (test IoU against px of interface per
# tile): the gallery's micrographs 14-73 px -> 0.86-0.93 (gold 33 -> 0.92, Berea 73 -> 0.86);
# the fine-pored Bentheimer map 129 px -> 0.74, where the conv model reaches 0.87
# (docs/training.md, benchmarks/results/feature_sizes.json).
TABLE1_INTERFACE_PER_TILE = 100.0
# A conv model chosen by auto trains on random crops of this many tiles' side (more context per
# example), where such crops fit inside the training regions.
AUTO_CONV_CROP_TILES = 2


def interface_per_tile(images: np.ndarray) -> float:
    """Mean length (px) of phase boundary in a tile of the images (N, S, S): the specific
    perimeter (Crofton) times the tile's area."""
    return float(specific_perimeter(images).mean()) * images.shape[-2] * images.shape[-1]


def choose_architecture(images: np.ndarray) -> tuple[str, str]:
    """``model.architecture: auto`` for the training tiles (N, S, S): ``table1`` where a tile
    holds at most :data:`TABLE1_INTERFACE_PER_TILE` px of phase boundary, else ``conv``; and
    why."""
    interface = interface_per_tile(images)
    what = (f"{interface:.0f} px of phase boundary per {images.shape[-1]} px tile (Table 1's "
            f"latent vector holds up to {TABLE1_INTERFACE_PER_TILE:.0f})")
    if interface <= TABLE1_INTERFACE_PER_TILE:
        return "table1", what + ": the paper's network"
    return "conv", what + (": too many features per tile for a latent vector; the conv model, "
                           "whose latent grid of latent-size channels grows with the image")


def auto_conv_crop(tile: int, regions_mask: np.ndarray | None) -> int | None:
    """The crop size of a conv model chosen by auto: :data:`AUTO_CONV_CROP_TILES` tiles where
    such windows lie inside the training regions, else the tile (None)."""
    size = AUTO_CONV_CROP_TILES * tile
    if regions_mask is None or not window_origins(regions_mask, size).any():
        return None
    return size


def scale_advice(tile: int, features: dict[int, float]) -> str | None:
    """What the structure's feature size (mean chord per phase, :func:`~microvae.descriptors.
    feature_size`) says of the tile size before training; None where it suits."""
    coarse = [phase for phase, size in features.items() if not np.isfinite(size)]
    if coarse:
        return (f"no chord of phase {coarse[0]} lies inside a {tile} px tile: its features are "
                f"larger than the tiles, which show no whole feature; raise image_size (or "
                f"downsample the images)")
    finest = min(features.values())
    if finest < FINEST_RESOLVED:
        return (f"the finer phase's mean chord is {finest:.1f} px: features near the pixel size; "
                "check the segmentation figure (a noisy segmentation makes specks) or image at a "
                "finer resolution")
    return None


def capacity_advice(architecture: str, latent_size: int, tile: int, features: dict[int, float],
                    bce_over_mean_image: float) -> str | None:
    """What to change where the trained model could not hold the structure (its best epoch's
    training BCE over the mean image's above :data:`POOR_RECONSTRUCTION`); None otherwise."""
    if bce_over_mean_image <= POOR_RECONSTRUCTION or latent_size < CAPACITY_LATENT:
        return None
    finest = min(features.values())
    what = (f"latent {latent_size}: the best epoch's training BCE is {bce_over_mean_image:.2f}x "
            f"the mean image's (a model that holds the structure reaches 0.05-0.25): the model "
            f"cannot hold this structure, whose finer phase's mean chord is {finest:.1f} px "
            f"({tile / finest:.1f} across the {tile} px tile)")
    if architecture == "table1":
        return (what + "; Table 1's latent vector is too small for so many features per tile: "
                "use the conv model, whose latent grid grows with the image (model: "
                "{architecture: conv, latent_sizes: [32]}, train: {crop_size: 64}, or "
                "architecture: auto; a micro-CT map of 2-4 px pores went from test IoU 0.44 to "
                "0.88 so)")
    return what + "; give the conv model more latent channels (model.latent_sizes) or train longer"


STOP_REASONS = {
    "epochs": "reached train.epochs",
    "max_steps": "reached train.max_steps",
    "patience": "the validation loss did not improve for train.patience epochs",
    "max_minutes": "reached train.max_minutes",
}
HISTORY_COLUMNS = ("epoch", "steps", "restarts", "train_loss", "train_bce", "train_kl",
                   "val_loss", "val_bce", "val_kl", "kl_weight", "seconds", "images_per_s",
                   "latent_rank", "bce_over_mean_image", "kl_per_dim", "stop_reason")


@dataclass
class TrainConfig:
    """Training settings: the keys of the config's ``train`` section (without the cluster
    resources) and the model's ``kl_weight``, ``kl_warmup_epochs`` and ``init``; defaults as
    the schema."""

    epochs: int | None = None
    steps_per_epoch: int | None = 250
    max_steps: int | None = 20000
    patience: int | None = 8
    max_minutes: float | None = 8
    crops: bool = True
    augment: str = "auto"
    recover: bool = True
    batch_size: int = 32
    learning_rate: float = 1e-3
    kl_weight: float = 0.1
    kl_warmup_epochs: int = 0
    init: str = "keras"
    architecture: str = "auto"
    crop_size: int | None = None
    seed: int = 0
    max_train_images: int | None = None
    max_val_images: int | None = 1024
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TrainConfig:
        """From training options (JSON of the rule, or a user's): unknown keys are refused."""
        return parse_options(cls, options, "training")

    def check(self) -> None:
        check_parameters(self, "training")
        if self.epochs is None and self.max_steps is None and self.max_minutes is None:
            raise MicrovaeError("train: epochs, max_steps and max_minutes are all null, so "
                                "training would never stop; set at least one of them")
        if self.architecture == "auto" and self.crop_size is not None:
            raise MicrovaeError("train.crop_size: model.architecture auto chooses the crop size "
                                "with the model; set model.architecture: conv to set it")

    def fingerprint_fields(self) -> dict[str, Any]:
        """Settings that change the trajectory; a checkpoint resumes only if they match.

        The stopping rules (``epochs``, ``max_steps``, ``patience``, ``max_minutes``) are left
        out (larger limits continue a finished run), and so are the device and performance
        knobs that do not change what is trained.
        """
        keep = ("batch_size", "learning_rate", "kl_weight", "kl_warmup_epochs", "init", "seed",
                "max_train_images", "max_val_images", "precision", "channels_last",
                "steps_per_epoch", "crops", "augment", "recover")
        fields = {k: getattr(self, k) for k in keep}
        if self.crop_size is not None:  # (the architecture is in the model's configuration)
            fields["crop_size"] = self.crop_size
        return fields


def kl_weight_at(epoch: int, cfg: TrainConfig, warmup_start: int = 0,
                 warmup_epochs: int | None = None) -> float:
    """KL weight of an epoch (0-based): a linear ramp over ``warmup_epochs`` (default
    ``cfg.kl_warmup_epochs``) that starts at epoch ``warmup_start`` (a restart's), then
    constant."""
    warmup = cfg.kl_warmup_epochs if warmup_epochs is None else warmup_epochs
    if warmup <= 0:
        return cfg.kl_weight
    return cfg.kl_weight * min(1.0, (epoch - warmup_start + 1) / warmup)


def to_tensor(images: np.ndarray, runtime: Runtime) -> torch.Tensor:
    """uint8 {0,1} images (N, H, W) -> float32 tensor (N, 1, H, W) on the device."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(runtime.device).float().unsqueeze(1)
    return to_layout(x, runtime)


def to_layout(x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    if runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def data_fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha1()
    for a in arrays:
        digest.update(str(a.shape).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def latent_rank(z_means: torch.Tensor) -> int:
    """How many directions of the latent space the encoder uses: eigenvalues of the covariance
    of the z_mean (N, L) above :data:`~microvae.model.USED_VARIANCE` (0: posterior collapse).
    Unlike a count of coordinates with variance, a rotated or correlated code is not overcounted.
    Latent grids (N, C, h, w) count channels: every cell of every image is one code."""
    if z_means.dim() == 4:
        z_means = z_means.permute(0, 2, 3, 1).reshape(-1, z_means.shape[1])
    if len(z_means) < 2:
        return 0
    centred = z_means.double() - z_means.double().mean(0)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / len(z_means))
    return int((eigenvalues > USED_VARIANCE).sum())


def mean_image_bce(x: torch.Tensor) -> float:
    """BCE per image (nats, summed over pixels) of the per-pixel mean of the images ``x``
    (N, 1, H, W): what a decoder that ignores z reaches; its binary entropy summed."""
    p = x.double().mean(0).clamp(1e-7, 1 - 1e-7)
    return float(-(p * p.log() + (1 - p) * (1 - p).log()).sum())


def failure(history: list[dict[str, Any]], steps_since_start: int) -> str | None:
    """The failure the last epochs of a run (at the full KL weight) show, if it held long
    enough to act on (:data:`FAILURE_EPOCHS` epochs in a row, :data:`FAILURE_STEPS` steps since
    the start):
    ``"posterior collapse"`` (latent rank 0: the encoder's codes do not vary) or ``"stuck at
    the mean image"`` (the training BCE within 1% of the per-pixel mean image's)."""
    recent = history[-FAILURE_EPOCHS:]
    if len(recent) < FAILURE_EPOCHS or steps_since_start < FAILURE_STEPS:
        return None
    if all(row["latent_rank"] == 0 for row in recent):
        return "posterior collapse"
    if all(row["bce_over_mean_image"] >= STUCK_AT_MEAN for row in recent):
        return "stuck at the mean image"
    return None


def validate(model: VAE, x: torch.Tensor, runtime: Runtime, kl_weight: float, seed: int,
             batch_size: int = 256) -> dict[str, Any]:
    """Validation loss (same eps every epoch), latent rank and KL per latent dimension."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    totals = np.zeros(3)
    means, kls = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        with runtime.autocast():
            z_mean, z_log_var = model.encode(xb)
        eps = torch.randn(z_mean.shape, generator=generator).to(runtime.device)
        with runtime.autocast():
            logits = model.decode_logits(reparameterize(z_mean.float(), z_log_var.float(), eps))
        loss, bce, kl = vae_loss(logits, xb, z_mean, z_log_var, kl_weight)
        totals += np.array([loss.item(), bce.item(), kl.item()]) * len(xb)
        means.append(z_mean.float().cpu())
        kl_dims = kl_per_dimension(z_mean.float(), z_log_var.float())
        if kl_dims.dim() == 4:  # a latent grid: KL per channel, summed over the cells
            kl_dims = kl_dims.sum((2, 3))
        kls.append(kl_dims.cpu())
    model.train()
    loss, bce, kl = (float(v) for v in totals / len(x))
    return {"val_loss": loss, "val_bce": bce, "val_kl": kl,
            "latent_rank": latent_rank(torch.cat(means)),
            "kl_per_dim": torch.cat(kls).mean(0).tolist()}


def _progress(total: int, desc: str):
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="step", leave=False)
    return None


class NonFiniteLoss(ArithmeticError):
    """The loss of a training step is NaN or infinite (raised before the update)."""


@dataclass
class Training:
    """One training run in memory: network, optimizer, data on the device (the crop sampler
    over the training regions, or the fixed tiles), the generator of all its randomness, its
    history, the best epoch so far and the state of a recovery."""

    cfg: TrainConfig
    runtime: Runtime
    latent_size: int
    model_config: dict[str, Any]
    model: VAE
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    x_train: torch.Tensor
    x_val: torch.Tensor
    sampler: CropSampler | None
    steps_per_epoch: int
    fingerprint: str
    mean_image_bce: float
    epoch: int = 0  # epochs done
    steps: int = 0  # optimizer steps done
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_state_epoch: int = 0  # the epoch whose weights best_state holds (kept over restarts)
    restarts: int = 0
    restart_epoch: int = 0  # epochs done when the current network was initialised
    restart_step: int = 0
    warmup_epochs: int | None = None  # a restart's KL warm-up (None: the configured one)
    stop_reason: str | None = None
    step_model: torch.nn.Module | None = None  # the network the steps call (compiled on CUDA)

    def __post_init__(self) -> None:
        if self.step_model is None:
            self.compile_step_model()

    def compile_step_model(self) -> None:
        compiled = self.cfg.compile and self.runtime.device.type == "cuda"
        self.step_model = torch.compile(self.model) if compiled else self.model

    @property
    def seconds(self) -> float:
        """Training time so far (validation not counted), over all (resumed) sessions."""
        return float(sum(row["seconds"] for row in self.history))


def new_network(cfg: TrainConfig, config: dict[str, Any], runtime: Runtime, seed: int
                ) -> tuple[VAE, torch.optim.Optimizer]:
    torch.manual_seed(seed)  # weight initialisation
    model = initialize(build_model(config), cfg.init)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # fused: one kernel for all parameters instead of ~10 small ops per tensor (Adam was 12% of
    # a CPU step at 32 px); same update rule, deterministic
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, fused=True)
    return model, optimizer


def prepare(train_images: np.ndarray, val_images: np.ndarray, latent_size: int,
            cfg: TrainConfig, runtime: Runtime, regions: np.ndarray | None = None,
            regions_mask: np.ndarray | None = None) -> Training:
    """A fresh run: the training data (a crop sampler over ``regions`` inside
    ``regions_mask`` where ``cfg.crops``, else the seeded subset of the training tiles), the
    evenly spaced validation subset, the initialised network and its optimizer, and the run's
    fingerprint (data, model, settings) that a saved state must match to be resumed."""
    cfg.check()
    if cfg.augment == "auto":
        chosen, reason = choose_augmentation(evenly_spaced(train_images, ISOTROPY_TILES))
        log.info("train.augment auto: %s (%s)", chosen, reason)
        cfg = replace(cfg, augment=chosen)
    size = list(train_images.shape[1:])
    if cfg.architecture == "auto":
        chosen, reason = choose_architecture(evenly_spaced(train_images, ISOTROPY_TILES))
        crop_size = None
        if chosen == "conv" and cfg.crops:
            crop_size = auto_conv_crop(size[0], regions_mask)
            if crop_size:
                reason += f", on random crops of {crop_size} px"
        log.info("model.architecture auto: %s (%s)", chosen, reason)
        cfg = replace(cfg, architecture=chosen, crop_size=crop_size)
    crop = cfg.crop_size or size[0]
    if cfg.crop_size is not None and cfg.architecture == "table1" and [crop, crop] != size:
        raise MicrovaeError(f"train.crop_size: a table1 model trains at the image size of the data "
                            f"set ({size[0]}x{size[1]} px), got {crop}; leave crop_size null "
                            "or use model.architecture: conv")
    if cfg.crop_size is not None and not cfg.crops:
        raise MicrovaeError("train.crop_size: needs train.crops: true (fixed tiles have the data "
                            "set's image_size)")
    config = model_config([crop, crop] if cfg.crops else size, latent_size, cfg.architecture)
    generator = torch.Generator().manual_seed(cfg.seed)
    images_per_epoch = len(train_images)
    if cfg.max_train_images:
        images_per_epoch = min(images_per_epoch, cfg.max_train_images)
    val_images = evenly_spaced(val_images, cfg.max_val_images)
    sampler = None
    if cfg.crops:
        if regions is None or regions_mask is None:
            raise MicrovaeError("train.crops: the data set holds no training regions (packed by "
                                "an older version): re-run pack, or set train.crops to false")
        if size[0] != size[1]:
            raise MicrovaeError(f"train.crops: random crops need square images, got {size}")
        sampler = CropSampler(torch.from_numpy(np.ascontiguousarray(regions, np.uint8))
                              .to(runtime.device), regions_mask, crop, cfg.augment)
        data = data_fingerprint(regions, regions_mask, val_images)
    else:
        if images_per_epoch < len(train_images):
            pick = torch.randperm(len(train_images), generator=generator)[:images_per_epoch]
            train_images = train_images[np.sort(pick.numpy())]
        data = data_fingerprint(train_images, val_images)
    fingerprint = hashlib.sha1(json.dumps(
        {"data": data, "model": config, "train": cfg.fingerprint_fields()},
        sort_keys=True).encode()).hexdigest()
    model, optimizer = new_network(cfg, config, runtime, cfg.seed)
    x_train = to_tensor(train_images, runtime)
    if sampler is not None:  # what the decoder reaches by ignoring z, on what it trains on
        reference = sampler.sample(min(4096, max(256, len(train_images))),
                                   torch.Generator().manual_seed(cfg.seed))
    else:
        reference = x_train
    steps_per_epoch = cfg.steps_per_epoch or math.ceil(images_per_epoch / cfg.batch_size)
    return Training(cfg=cfg, runtime=runtime, latent_size=latent_size, model_config=config,
                    model=model, optimizer=optimizer, generator=generator,
                    x_train=x_train, x_val=to_tensor(val_images, runtime), sampler=sampler,
                    steps_per_epoch=steps_per_epoch, fingerprint=fingerprint,
                    mean_image_bce=mean_image_bce(reference))


STATE_FIELDS = ("epoch", "steps", "history", "best_val_loss", "best_epoch", "best_state_epoch",
                "restarts", "restart_epoch", "restart_step", "warmup_epochs", "stop_reason")


def training_state(training: Training) -> dict[str, Any]:
    """What :func:`resume` needs to continue the run exactly (tensors and plain values)."""
    return {"fingerprint": training.fingerprint, "model": training.model.state_dict(),
            "optimizer": training.optimizer.state_dict(),
            "generator": training.generator.get_state(), "best_model": training.best_state,
            **{k: getattr(training, k) for k in STATE_FIELDS}}


def resume(training: Training, state: dict[str, Any] | None) -> bool:
    """Continue from a saved state if it belongs to this run (same fingerprint); returns
    whether it did. A finished run whose stopping rule no longer holds (a larger limit) goes
    on from where it stopped."""
    if state is None:
        return False
    if state.get("fingerprint") != training.fingerprint:
        log.info("saved state belongs to other data or settings: starting over")
        return False
    if state.get("restarts") is None:  # a state of an older version
        return False
    training.model.load_state_dict(state["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.generator.set_state(state["generator"])
    training.best_state = state["best_model"]
    for key in STATE_FIELDS:
        setattr(training, key, state.get(key, state["best_epoch"] if key == "best_state_epoch"
                                         else None))
    training.history = [dict(row) for row in state["history"]]
    training.stop_reason = None
    return True


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor,
               eps: torch.Tensor, kl_weight: float, runtime: Runtime
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on the batch ``xb`` with the noise ``eps`` of eq. 1; returns
    ``(loss, bce, kl)``. A non-finite loss raises :class:`NonFiniteLoss` before the update."""
    with runtime.autocast():
        logits, z_mean, z_log_var, _ = model(xb, eps)
    loss, bce, kl = vae_loss(logits, xb, z_mean, z_log_var, kl_weight)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(loss.item())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, bce, kl


def batches(training: Training):
    """Training batches: fresh crops for each step, or passes over the shuffled tiles (a new
    shuffle at the start of each epoch and of each further pass within it)."""
    cfg, runtime = training.cfg, training.runtime
    if training.sampler is not None:
        while True:
            yield to_layout(training.sampler.sample(cfg.batch_size, training.generator), runtime)
    n = len(training.x_train)
    while True:
        order = torch.randperm(n, generator=training.generator)
        for begin in range(0, n, cfg.batch_size):
            yield training.x_train[order[begin:begin + cfg.batch_size].to(runtime.device)]


def epoch_steps(training: Training) -> int:
    """Steps of the next epoch: the epoch's own, fewer where ``max_steps`` comes first."""
    steps = training.steps_per_epoch
    if training.cfg.max_steps is not None:
        steps = min(steps, training.cfg.max_steps - training.steps)
    return steps


def run_epoch(training: Training) -> dict[str, Any]:
    """Train one epoch, validate; returns its history row (the epoch ends early where
    ``max_steps`` or ``max_minutes`` is reached)."""
    cfg, runtime, epoch = training.cfg, training.runtime, training.epoch
    kl_weight = kl_weight_at(epoch, cfg, training.restart_epoch, training.warmup_epochs)
    n_steps = epoch_steps(training)
    time_left = math.inf if cfg.max_minutes is None else 60 * cfg.max_minutes - training.seconds
    totals = torch.zeros(3, dtype=torch.float64)
    images = 0
    started = time.perf_counter()
    bar = _progress(n_steps, f"latent {training.latent_size} epoch {epoch + 1}")
    # zip stops before asking for a batch past the last step: no random draw is wasted
    for step, xb in zip(range(n_steps), batches(training)):
        eps = torch.randn((len(xb), *training.model.latent_shape(*xb.shape[-2:])),
                          generator=training.generator).to(runtime.device)
        try:
            loss, bce, kl = train_step(training.step_model, training.optimizer, xb, eps, kl_weight,
                                       runtime)
        except NonFiniteLoss as exc:
            raise MicrovaeError(
                f"training of latent {training.latent_size} diverged: loss is {exc.args[0]} at "
                f"epoch {epoch + 1}, step {step + 1}; the last good checkpoint (epoch {epoch}) "
                "is kept. Lower train.learning_rate or check the data.") from None
        totals += torch.tensor([loss.item(), bce.item(), kl.item()], dtype=torch.float64) * len(xb)
        images += len(xb)
        training.steps += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.1f}")
        if time.perf_counter() - started >= time_left:
            break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    # the full KL weight even during a warm-up: the best epoch is chosen on the loss the model
    # is meant to minimise, not on a weight that changes from epoch to epoch
    val = validate(training.model, training.x_val, runtime, cfg.kl_weight, seed=cfg.seed + 1)
    train_loss, train_bce, train_kl = (totals / max(images, 1)).tolist()
    return {"epoch": epoch + 1, "steps": training.steps, "restarts": training.restarts,
            "train_loss": train_loss, "train_bce": train_bce,
            "train_kl": train_kl, "val_loss": val["val_loss"], "val_bce": val["val_bce"],
            "val_kl": val["val_kl"], "kl_weight": kl_weight, "seconds": seconds,
            "images_per_s": images / seconds, "latent_rank": val["latent_rank"],
            "bce_over_mean_image": train_bce / training.mean_image_bce,
            "kl_per_dim": ";".join(f"{v:.4g}" for v in val["kl_per_dim"]), "stop_reason": ""}


def stop_reason(training: Training) -> str | None:
    """Which stopping rule holds now (a key of :data:`STOP_REASONS`), or None to go on."""
    cfg = training.cfg
    if cfg.epochs is not None and training.epoch >= cfg.epochs:
        return "epochs"
    if cfg.max_steps is not None and training.steps >= cfg.max_steps:
        return "max_steps"
    if cfg.patience is not None and training.epoch - training.best_epoch >= cfg.patience:
        return "patience"
    if cfg.max_minutes is not None and training.seconds >= 60 * cfg.max_minutes:
        return "max_minutes"
    return None


def restart(training: Training, reason: str) -> None:
    """Start the network over after a failure: fresh weights (another seed), a fresh
    optimizer, and a KL weight that ramps up from 0, so that the decoder learns to use z
    before the KL term can pull the codes together. The search for the best epoch restarts
    too (any epoch of the new network replaces the best weights), but the best weights so far
    are kept until then: a training whose limit comes right after a restart still ends with
    a model."""
    training.restarts += 1
    training.warmup_epochs = max(training.cfg.kl_warmup_epochs, RECOVERY_WARMUP_EPOCHS)
    log.warning("latent %d epoch %d: %s since the start; restart %d of at most %d: new weights, "
                "KL weight ramped from 0 over %d epochs", training.latent_size, training.epoch,
                reason, training.restarts, MAX_RESTARTS, training.warmup_epochs)
    training.model, training.optimizer = new_network(
        training.cfg, training.model_config, training.runtime,
        training.cfg.seed + 1_000_003 * training.restarts)
    training.compile_step_model()
    training.restart_epoch, training.restart_step = training.epoch, training.steps
    training.best_val_loss, training.best_epoch = math.inf, training.epoch


def fit(training: Training, on_epoch: Callable[[Training], None] | None = None,
        stop_after_epoch: int | None = None) -> Training:
    """Train epoch by epoch until a stopping rule holds (:func:`stop_reason`, recorded in
    ``training.stop_reason`` and in the last history row), keeping the best epoch's weights (by
    validation loss). ``on_epoch`` runs after every epoch (the stage saves a checkpoint there);
    ``stop_after_epoch`` ends the run early, without a stop reason (tests of resumption)."""
    cfg, latent = training.cfg, training.latent_size
    crops = (f"random {cfg.augment if cfg.augment != 'none' else 'untransformed'} crops from "
             f"{training.sampler.n_windows} windows" if training.sampler is not None
             else f"{len(training.x_train)} fixed tiles")
    log.info("training latent %d on %s (%s%s): %s, %d val images of %s px, %d steps per epoch; "
             "stops at epochs=%s, max_steps=%s, patience=%s, max_minutes=%s", latent,
             training.runtime.device, "bf16" if training.runtime.bf16 else "fp32",
             ", channels_last" if training.runtime.channels_last else "", crops,
             len(training.x_val), "x".join(map(str, training.x_val.shape[-2:])),
             training.steps_per_epoch, cfg.epochs, cfg.max_steps, cfg.patience, cfg.max_minutes)
    training.model.train()
    while (reason := stop_reason(training)) is None:
        row = run_epoch(training)
        training.history.append(row)
        training.epoch += 1
        log.info("latent %d epoch %d (%d steps): train loss %.2f (BCE %.2f = %.3f x the mean "
                 "image's, KL %.2f), val loss %.2f, %.1f images/s, latent rank %d/%d", latent,
                 training.epoch, training.steps, row["train_loss"], row["train_bce"],
                 row["bce_over_mean_image"], row["train_kl"], row["val_loss"],
                 row["images_per_s"], row["latent_rank"], latent)
        if row["latent_rank"] == 0:
            log.warning("latent %d epoch %d: posterior collapse: the z_mean of the validation "
                        "images vary by no more than %g in any direction (latent rank 0)",
                        latent, training.epoch, USED_VARIANCE)
        if row["bce_over_mean_image"] >= STUCK_AT_MEAN:
            log.warning("latent %d epoch %d: stuck at the mean image: the training BCE is %.1f%% "
                        "of what the per-pixel mean image reaches", latent, training.epoch,
                        100 * row["bce_over_mean_image"])
        if row["val_loss"] < training.best_val_loss:
            training.best_val_loss, training.best_epoch = row["val_loss"], training.epoch
            training.best_state = {k: v.detach().cpu().clone()
                                   for k, v in training.model.state_dict().items()}
            training.best_state_epoch = training.epoch
        # judged at the full KL weight only: during a (restart's) warm-up the codes may sit
        # still while the decoder learns
        found = failure([r for r in training.history[training.restart_epoch:]
                         if r["kl_weight"] >= cfg.kl_weight], training.steps - training.restart_step)
        if found is not None and cfg.recover and training.restarts < MAX_RESTARTS:
            restart(training, found)
        elif found is not None and training.restarts == MAX_RESTARTS and cfg.recover:
            log.warning("latent %d: %s after %d restarts; training goes on, check the data "
                        "(a phase too sparse or too fine for image_size?)", latent, found,
                        training.restarts)
        if on_epoch is not None:
            on_epoch(training)
        if stop_after_epoch is not None and training.epoch >= stop_after_epoch:
            log.info("stopping after epoch %d as asked", training.epoch)
            return training
    training.stop_reason = reason
    if training.history:
        training.history[-1]["stop_reason"] = reason
    log.info("latent %d: training stopped after %d epochs, %d steps, %.1f min: %s; best epoch "
             "%d", latent, training.epoch, training.steps, training.seconds / 60,
             STOP_REASONS[reason], training.best_epoch)
    return training


def best_model(training: Training) -> VAE:
    """A fresh network (on the CPU) with the weights of the best epoch."""
    if training.best_state is None:
        raise MicrovaeError(f"latent {training.latent_size}: the training ended before its "
                            "first epoch: no model to save (raise train.epochs, max_steps or "
                            "max_minutes)")
    if training.best_state_epoch <= training.restart_epoch and training.restarts:
        log.warning("latent %d: the training ended %d epoch(s) after restart %d, before the "
                    "new network was validated: the model saved is the best epoch before the "
                    "restart (epoch %d, of the network that failed); give the training more "
                    "epochs, steps or minutes", training.latent_size,
                    training.epoch - training.restart_epoch, training.restarts,
                    training.best_state_epoch)
    final = build_model(training.model_config)
    final.load_state_dict(training.best_state)
    return final
