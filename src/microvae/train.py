"""Training of one VAE on arrays: Adam, validation every epoch, best-epoch weights,
resumable state, divergence and posterior-collapse guards. No file I/O here: the network stage
(:mod:`microvae.stages.network`) loads the data, keeps the checkpoint and writes the outputs.

The run is split into :func:`prepare` (data subset, network, optimizer, fingerprint),
:func:`resume` (from a saved :func:`training_state`), :func:`train_step` (one optimizer step,
what ``benchmarks/train_throughput.py`` times) and :func:`fit` (the epochs).

Determinism: on the CPU, the same data, configuration, seed and thread count give
bit-identical weights, also across a kill and resume: all randomness (initialisation,
shuffling, the eps of eq. 1) comes from one generator whose state is saved with the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import check_parameters, parse_options
from .dataset import evenly_spaced
from .device import Runtime
from .errors import MicrovaeError
from .model import USED_VARIANCE, VAE, kl_per_dimension, model_config, reparameterize, vae_loss

log = logging.getLogger("microvae.train")

# Training BCE at least this fraction of the mean image's BCE: the decoder draws the mean image.
STUCK_AT_MEAN = 0.99
HISTORY_COLUMNS = ("epoch", "train_loss", "train_bce", "train_kl", "val_loss", "val_bce", "val_kl",
                   "kl_weight", "seconds", "images_per_s", "latent_rank", "bce_over_mean_image",
                   "kl_per_dim")


@dataclass
class TrainConfig:
    """Training settings: the keys of the config's ``train`` section (without the cluster
    resources) and the model's ``kl_weight`` and ``kl_warmup_epochs``; defaults as the schema."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    kl_weight: float = 0.1
    kl_warmup_epochs: int = 0
    seed: int = 0
    max_train_images: int | None = None
    max_val_images: int | None = None
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

    def fingerprint_fields(self) -> dict[str, Any]:
        """Settings that change the trajectory; a checkpoint resumes only if they match.

        ``epochs`` is left out (more epochs continue a finished run), and so are the device
        and performance knobs that do not change what is trained.
        """
        keep = ("batch_size", "learning_rate", "kl_weight", "kl_warmup_epochs", "seed",
                "max_train_images", "max_val_images", "precision", "channels_last")
        return {k: getattr(self, k) for k in keep}


def kl_weight_at(epoch: int, cfg: TrainConfig) -> float:
    """KL weight of an epoch (0-based): a linear ramp over ``kl_warmup_epochs``, then constant."""
    if cfg.kl_warmup_epochs <= 0:
        return cfg.kl_weight
    return cfg.kl_weight * min(1.0, (epoch + 1) / cfg.kl_warmup_epochs)


def to_tensor(images: np.ndarray, runtime: Runtime) -> torch.Tensor:
    """uint8 {0,1} images (N, H, W) -> float32 tensor (N, 1, H, W) on the device."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(runtime.device).float().unsqueeze(1)
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
    Unlike a count of coordinates with variance, a rotated or correlated code is not overcounted."""
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


@torch.no_grad()
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
        kls.append(kl_per_dimension(z_mean.float(), z_log_var.float()).cpu())
    model.train()
    loss, bce, kl = (float(v) for v in totals / len(x))
    return {"val_loss": loss, "val_bce": bce, "val_kl": kl,
            "latent_rank": latent_rank(torch.cat(means)),
            "kl_per_dim": torch.cat(kls).mean(0).tolist()}


def _progress(total: int, desc: str):
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="img", leave=False)
    return None


class NonFiniteLoss(ArithmeticError):
    """The loss of a training step is NaN or infinite (raised before the update)."""


@dataclass
class Training:
    """One training run in memory: network, optimizer, data on the device, the generator of
    all its randomness, its history and the best epoch so far."""

    cfg: TrainConfig
    runtime: Runtime
    latent_size: int
    model_config: dict[str, Any]
    model: VAE
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    x_train: torch.Tensor
    x_val: torch.Tensor
    fingerprint: str
    mean_image_bce: float
    epoch: int = 0  # epochs done
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    step_model: torch.nn.Module | None = None  # the network the steps call (compiled on CUDA)

    def __post_init__(self) -> None:
        if self.step_model is None:
            compiled = self.cfg.compile and self.runtime.device.type == "cuda"
            self.step_model = torch.compile(self.model) if compiled else self.model


def prepare(train_images: np.ndarray, val_images: np.ndarray, latent_size: int,
            cfg: TrainConfig, runtime: Runtime) -> Training:
    """A fresh run: the seeded subset of the training images, the evenly spaced validation
    subset, the initialised network and its optimizer, and the run's fingerprint (data, model,
    settings) that a saved state must match to be resumed."""
    cfg.check()
    config = model_config(list(train_images.shape[1:]), latent_size)
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.max_train_images and cfg.max_train_images < len(train_images):
        pick = torch.randperm(len(train_images), generator=generator)[:cfg.max_train_images]
        train_images = train_images[np.sort(pick.numpy())]
    val_images = evenly_spaced(val_images, cfg.max_val_images)
    fingerprint = hashlib.sha1(json.dumps(
        {"data": data_fingerprint(train_images, val_images), "model": config,
         "train": cfg.fingerprint_fields()}, sort_keys=True).encode()).hexdigest()

    torch.manual_seed(cfg.seed)  # weight initialisation
    model = VAE(config["image_size"], latent_size)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # fused: one kernel for all parameters instead of ~10 small ops per tensor (Adam was 12% of
    # a CPU step at 32 px); same update rule, deterministic
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, fused=True)
    x_train = to_tensor(train_images, runtime)
    return Training(cfg=cfg, runtime=runtime, latent_size=latent_size, model_config=config,
                    model=model, optimizer=optimizer, generator=generator,
                    x_train=x_train, x_val=to_tensor(val_images, runtime),
                    fingerprint=fingerprint, mean_image_bce=mean_image_bce(x_train))


def training_state(training: Training) -> dict[str, Any]:
    """What :func:`resume` needs to continue the run exactly (tensors and plain values)."""
    return {"fingerprint": training.fingerprint, "epoch": training.epoch,
            "model": training.model.state_dict(), "optimizer": training.optimizer.state_dict(),
            "generator": training.generator.get_state(), "history": training.history,
            "best_val_loss": training.best_val_loss, "best_epoch": training.best_epoch,
            "best_model": training.best_state}


def resume(training: Training, state: dict[str, Any] | None) -> bool:
    """Continue from a saved state if it belongs to this run (same fingerprint) and is not
    past its last epoch; returns whether it did."""
    if state is None:
        return False
    if state.get("fingerprint") != training.fingerprint:
        log.info("saved state belongs to other data or settings: starting over")
        return False
    if state["epoch"] > training.cfg.epochs:
        return False
    training.model.load_state_dict(state["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.generator.set_state(state["generator"])
    training.history = [dict(row) for row in state["history"]]
    training.best_val_loss = state["best_val_loss"]
    training.best_epoch = state["best_epoch"]
    training.best_state = state["best_model"]
    training.epoch = state["epoch"]
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


def run_epoch(training: Training) -> dict[str, Any]:
    """Train one epoch over the shuffled training images, validate; returns its history row."""
    cfg, runtime, epoch = training.cfg, training.runtime, training.epoch
    kl_weight = kl_weight_at(epoch, cfg)
    n = len(training.x_train)
    order = torch.randperm(n, generator=training.generator)
    totals = torch.zeros(3, dtype=torch.float64)
    started = time.perf_counter()
    bar = _progress(n, f"latent {training.latent_size} epoch {epoch + 1}/{cfg.epochs}")
    for batch, begin in enumerate(range(0, n, cfg.batch_size)):
        index = order[begin:begin + cfg.batch_size]
        xb = training.x_train[index.to(runtime.device)]
        eps = torch.randn((len(index), training.latent_size),
                          generator=training.generator).to(runtime.device)
        try:
            loss, bce, kl = train_step(training.step_model, training.optimizer, xb, eps, kl_weight,
                                       runtime)
        except NonFiniteLoss as exc:
            raise MicrovaeError(
                f"training of latent {training.latent_size} diverged: loss is {exc.args[0]} at "
                f"epoch {epoch + 1}, batch {batch + 1}; the last good checkpoint (epoch {epoch}) "
                "is kept. Lower train.learning_rate or check the data.") from None
        totals += torch.tensor([loss.item(), bce.item(), kl.item()], dtype=torch.float64) * len(index)
        if bar is not None:
            bar.update(len(index))
            bar.set_postfix(loss=f"{loss.item():.1f}")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    # the full KL weight even during a warm-up: the best epoch is chosen on the loss the model
    # is meant to minimise, not on a weight that changes from epoch to epoch
    val = validate(training.model, training.x_val, runtime, cfg.kl_weight, seed=cfg.seed + 1)
    train_loss, train_bce, train_kl = (totals / n).tolist()
    return {"epoch": epoch + 1, "train_loss": train_loss, "train_bce": train_bce,
            "train_kl": train_kl, "val_loss": val["val_loss"], "val_bce": val["val_bce"],
            "val_kl": val["val_kl"], "kl_weight": kl_weight, "seconds": seconds,
            "images_per_s": n / seconds, "latent_rank": val["latent_rank"],
            "bce_over_mean_image": train_bce / training.mean_image_bce,
            "kl_per_dim": ";".join(f"{v:.4g}" for v in val["kl_per_dim"])}


def fit(training: Training, on_epoch: Callable[[Training], None] | None = None,
        stop_after_epoch: int | None = None) -> Training:
    """Train from ``training.epoch`` to ``cfg.epochs``, keeping the best epoch's weights (by
    validation loss). ``on_epoch`` runs after every epoch (the stage saves a checkpoint there);
    ``stop_after_epoch`` ends the run early (for tests of resumption)."""
    cfg, latent = training.cfg, training.latent_size
    log.info("training latent %d on %s (%s%s): %d train / %d val images of %s px, %d epochs",
             latent, training.runtime.device, "bf16" if training.runtime.bf16 else "fp32",
             ", channels_last" if training.runtime.channels_last else "",
             len(training.x_train), len(training.x_val),
             "x".join(map(str, training.model_config["image_size"])), cfg.epochs)
    training.model.train()
    while training.epoch < cfg.epochs:
        row = run_epoch(training)
        training.history.append(row)
        training.epoch += 1
        log.info("latent %d epoch %d/%d: train loss %.2f (BCE %.2f = %.3f x the mean image's, "
                 "KL %.2f), val loss %.2f, %.1f images/s, latent rank %d/%d", latent,
                 training.epoch, cfg.epochs, row["train_loss"], row["train_bce"],
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
        if on_epoch is not None:
            on_epoch(training)
        if stop_after_epoch is not None and training.epoch >= stop_after_epoch:
            log.info("stopping after epoch %d as asked", training.epoch)
            break
    return training


def best_model(training: Training) -> VAE:
    """A fresh network (on the CPU) with the weights of the best epoch."""
    final = VAE(training.model_config["image_size"], training.latent_size)
    final.load_state_dict(training.best_state)
    return final
