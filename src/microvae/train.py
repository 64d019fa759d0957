"""Training of one VAE: in-memory data, Adam, validation every epoch, best-epoch model,
resumable checkpoints, divergence and posterior-collapse guards.

Determinism: on the CPU, the same data, configuration, seed and thread count give
bit-identical weights, also across a kill and resume: all randomness (initialisation,
shuffling, the eps of eq. 1) comes from one generator whose state is checkpointed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path, save_figure, write_text
from .dataset import evenly_spaced, load_split
from .device import Runtime, select_runtime
from .errors import MicrovaeError
from .model import VAE, kl_per_dimension, model_config, save_model, vae_loss

log = logging.getLogger("microvae.train")

ACTIVE_UNIT_VARIANCE = 0.01
HISTORY_COLUMNS = ("epoch", "train_loss", "train_bce", "train_kl", "val_loss", "val_bce", "val_kl",
                   "kl_weight", "seconds", "images_per_s", "active_units", "kl_per_dim")


@dataclass
class TrainConfig:
    """Training settings (see config/README.md, section train and model)."""

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
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.kl_weight < 0:
            raise MicrovaeError(f"model.kl_weight: must be >= 0, got {self.kl_weight}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise MicrovaeError(f"train.{key}: must be >= 1, got {getattr(self, key)}")
        if not self.learning_rate > 0:
            raise MicrovaeError(f"train.learning_rate: must be > 0, got {self.learning_rate}")

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


@torch.no_grad()
def validate(model: VAE, x: torch.Tensor, runtime: Runtime, kl_weight: float, seed: int,
             batch_size: int = 256) -> dict[str, Any]:
    """Validation loss (same eps every epoch), active units and KL per latent dimension."""
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
            logits = model.decode_logits(z_mean.float() + torch.exp(0.5 * z_log_var.float()) * eps)
        loss, bce, kl = vae_loss(logits, xb, z_mean, z_log_var, kl_weight)
        totals += np.array([loss.item(), bce.item(), kl.item()]) * len(xb)
        means.append(z_mean.float().cpu())
        kls.append(kl_per_dimension(z_mean.float(), z_log_var.float()).cpu())
    model.train()
    z_means = torch.cat(means)
    variance = z_means.var(0, unbiased=False) if len(z_means) > 1 else torch.zeros(z_means.shape[1])
    loss, bce, kl = (float(v) for v in totals / len(x))
    return {"val_loss": loss, "val_bce": bce, "val_kl": kl,
            "active_units": int((variance > ACTIVE_UNIT_VARIANCE).sum()),
            "kl_per_dim": torch.cat(kls).mean(0).tolist()}


class Checkpoint:
    """Resumable training state kept beside (not among) the declared outputs."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / "checkpoint.pt"

    def save(self, state: dict[str, Any]) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self, fingerprint: str) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a checkpoint is a cache: a bad one means starting over
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, exc)
            return None
        if state.get("fingerprint") != fingerprint:
            log.info("checkpoint %s belongs to other data or settings: starting over", self.path)
            return None
        return state


def _progress(total: int, desc: str):
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="img", leave=False)
    return None


def train_model(dataset: str | os.PathLike, latent_size: int, cfg: TrainConfig,
                checkpoint_dir: str | os.PathLike, model_out: str | os.PathLike,
                history_out: str | os.PathLike, loss_figure: str | os.PathLike | None = None,
                stop_after_epoch: int | None = None) -> list[dict[str, Any]]:
    """Train one VAE on the data set's train split, validating on its val split.

    Writes the best epoch's model (by validation loss), ``history.csv`` and the loss figure.
    A checkpoint after every epoch in ``checkpoint_dir`` lets a killed run continue.
    ``stop_after_epoch`` ends the run early (for tests of resumption).
    """
    cfg.check()
    runtime = select_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    train_images = load_split(dataset, "train")
    val_images = load_split(dataset, "val")
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
    history: list[dict[str, Any]] = []
    best = {"val_loss": math.inf, "epoch": 0, "state": None}
    checkpoint = Checkpoint(checkpoint_dir)
    state = checkpoint.load(fingerprint)
    start_epoch = 0
    if state is not None and state["epoch"] <= cfg.epochs:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        history = [dict(row) for row in state["history"]]
        best = {"val_loss": state["best_val_loss"], "epoch": state["best_epoch"],
                "state": state["best_model"]}
        start_epoch = state["epoch"]
        log.info("resuming from %s after epoch %d", checkpoint.path, start_epoch)
    step_model = torch.compile(model) if cfg.compile and runtime.device.type == "cuda" else model

    x_train = to_tensor(train_images, runtime)
    x_val = to_tensor(val_images, runtime)
    n = len(x_train)
    log.info("training latent %d on %s (%s%s): %d train / %d val images of %s px, %d epochs",
             latent_size, runtime.device, "bf16" if runtime.bf16 else "fp32",
             ", channels_last" if runtime.channels_last else "", n, len(x_val),
             "x".join(map(str, config["image_size"])), cfg.epochs)
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        kl_weight = kl_weight_at(epoch, cfg)
        order = torch.randperm(n, generator=generator)
        totals = torch.zeros(3, dtype=torch.float64)
        started = time.perf_counter()
        bar = _progress(n, f"latent {latent_size} epoch {epoch + 1}/{cfg.epochs}")
        for batch, begin in enumerate(range(0, n, cfg.batch_size)):
            index = order[begin:begin + cfg.batch_size]
            xb = x_train[index.to(runtime.device)]
            eps = torch.randn((len(index), latent_size), generator=generator).to(runtime.device)
            with runtime.autocast():
                logits, z_mean, z_log_var, _ = step_model(xb, eps)
            loss, bce, kl = vae_loss(logits, xb, z_mean, z_log_var, kl_weight)
            if not torch.isfinite(loss):
                raise MicrovaeError(
                    f"training of latent {latent_size} diverged: loss is {loss.item()} at epoch "
                    f"{epoch + 1}, batch {batch + 1}; the last good checkpoint (epoch {epoch}) "
                    f"is kept in {checkpoint.path}. Lower train.learning_rate or check the data.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals += torch.tensor([loss.item(), bce.item(), kl.item()], dtype=torch.float64) * len(index)
            if bar is not None:
                bar.update(len(index))
                bar.set_postfix(loss=f"{loss.item():.1f}")
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        val = validate(model, x_val, runtime, kl_weight, seed=cfg.seed + 1)
        train_loss, train_bce, train_kl = (totals / n).tolist()
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_bce": train_bce,
               "train_kl": train_kl, "val_loss": val["val_loss"], "val_bce": val["val_bce"],
               "val_kl": val["val_kl"], "kl_weight": kl_weight, "seconds": seconds,
               "images_per_s": n / seconds, "active_units": val["active_units"],
               "kl_per_dim": ";".join(f"{v:.4g}" for v in val["kl_per_dim"])}
        history.append(row)
        log.info("latent %d epoch %d/%d: train loss %.2f (BCE %.2f, KL %.2f), val loss %.2f, "
                 "%.1f images/s, active units %d/%d", latent_size, epoch + 1, cfg.epochs,
                 train_loss, train_bce, train_kl, val["val_loss"], n / seconds,
                 val["active_units"], latent_size)
        if val["active_units"] == 0:
            log.warning("latent %d epoch %d: posterior collapse, no latent unit is active "
                        "(variance of z_mean <= %g); consider train.kl_warmup_epochs",
                        latent_size, epoch + 1, ACTIVE_UNIT_VARIANCE)
        if val["val_loss"] < best["val_loss"]:
            best = {"val_loss": val["val_loss"], "epoch": epoch + 1,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        checkpoint.save({
            "fingerprint": fingerprint, "epoch": epoch + 1, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "history": history, "best_val_loss": best["val_loss"], "best_epoch": best["epoch"],
            "best_model": best["state"]})
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            log.info("stopping after epoch %d as asked", epoch + 1)
            return history

    final = VAE(config["image_size"], latent_size)
    final.load_state_dict(best["state"])
    save_model(final, model_out, extra={
        "best_epoch": best["epoch"], "best_val_loss": best["val_loss"], "epochs": cfg.epochs,
        "train": json.dumps(asdict(cfg), sort_keys=True), "dataset": str(dataset),
        "data_fingerprint": fingerprint})
    write_history(history, history_out)
    if loss_figure is not None:
        from .plots import loss_curves

        save_figure(loss_curves({latent_size: history}), loss_figure)
    log.info("latent %d: best epoch %d (val loss %.2f) saved to %s", latent_size, best["epoch"],
             best["val_loss"], model_out)
    return history


def write_history(history: list[dict[str, Any]], path: str | os.PathLike) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in HISTORY_COLUMNS:
            if key not in ("kl_per_dim",) and key in row:
                row[key] = float(row[key])
    return rows
