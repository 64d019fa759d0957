"""The train stage: the VAE (rule train) and the diffusion prior after it (rule train_prior).
Each reads its inputs, calls the science of :mod:`microvae.train` and :mod:`microvae.diffusion`,
and writes every output it is given (atomically): model, history, prior, figures.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import plots
from ..atomic import atomic_path, save_figure
from ..dataset import evenly_spaced
from ..descriptors import feature_size
from ..device import select_runtime
from ..diffusion import (
    CELL,
    DEFAULT_CROP_CELLS,
    GRID_MULTIPLE,
    DiffusionConfig,
    condition_maps,
    fit_diffusion,
    fit_vector_diffusion,
    training_crop_cells,
)
from ..errors import MicrovaeError
from ..h5io import load_split, load_training_regions
from ..model import USED_VARIANCE, reparameterize
from ..modelfile import load_model, save_model, save_prior
from ..sample import (
    FIELD_WINDOW,
    encode,
    field_windows,
)
from ..tables import write_csv
from ..train import (
    HISTORY_COLUMNS,
    TrainConfig,
    Training,
    best_model,
    capacity_advice,
    fit,
    prepare,
    resume,
    scale_advice,
)
from ..train import training_state as saved_state
from ..volume_vae import VolumeTrainSettings
from . import MAX_FIT_IMAGES

log = logging.getLogger("microvae.stages.train")
# The feature size is measured on at most this many evenly spaced training tiles.
FEATURE_TILES = 2000



class Checkpoint:
    """Resumable training state kept beside (not among) the declared outputs."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / "checkpoint.pt"

    def save(self, training: Training) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(saved_state(training), tmp)

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a checkpoint is a cache: a bad one means starting over
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, exc)
            return None


def write_history(history: list[dict[str, Any]], path: str | os.PathLike) -> None:
    write_csv(path, history, HISTORY_COLUMNS)


def train_model(dataset: str | os.PathLike, latent_size: int, cfg: TrainConfig,
                checkpoint_dir: str | os.PathLike, model_out: str | os.PathLike,
                history_out: str | os.PathLike, loss_figure: str | os.PathLike | None = None,
                threads: int | None = None, stop_after_epoch: int | None = None) -> Training:
    """Train one VAE on the data set's train split, validating on its val split.

    Writes the best epoch's model (by validation loss), ``history.csv`` and the loss figure.
    A checkpoint after every epoch in ``checkpoint_dir`` lets a killed run continue;
    ``stop_after_epoch`` ends the run early without writing the outputs (tests).
    """
    runtime = select_runtime(cfg.device, cfg.precision, cfg.channels_last, threads)
    regions = load_training_regions(dataset) if cfg.crops else None
    train_images = load_split(dataset, "train")
    tile = train_images.shape[-1]
    features = feature_size(evenly_spaced(train_images, FEATURE_TILES))
    log.info("feature size of the train split: mean chord %.1f px (phase 0), %.1f px (phase 1), "
             "in %d px tiles", features[0], features[1], tile)
    advice = scale_advice(tile, features)
    if advice:
        log.warning("%s: %s", dataset, advice)
    training = prepare(train_images, load_split(dataset, "val"), latent_size, cfg,
                       runtime, *(regions or (None, None)))
    checkpoint = Checkpoint(checkpoint_dir)
    if resume(training, checkpoint.load()):
        log.info("resuming from %s after epoch %d", checkpoint.path, training.epoch)
    fit(training, on_epoch=checkpoint.save, stop_after_epoch=stop_after_epoch)
    if training.stop_reason is None:
        return training
    save_model(best_model(training), model_out, extra={
        "best_epoch": training.best_state_epoch,
        "best_val_loss": training.history[training.best_state_epoch - 1]["val_loss"],
        "epochs": training.epoch, "steps": training.steps, "restarts": training.restarts,
        "stop_reason": training.stop_reason,
        "train": json.dumps(asdict(training.cfg), sort_keys=True),
        "dataset": str(dataset), "data_fingerprint": training.fingerprint})
    write_history(training.history, history_out)
    best = training.history[training.best_state_epoch - 1]
    advice = capacity_advice(training.cfg.architecture, latent_size, tile, features,
                             float(best["bce_over_mean_image"]))
    if advice:
        log.warning("%s", advice)
    if loss_figure is not None:
        save_figure(plots.loss_curves({latent_size: training.history}), loss_figure)
    log.info("latent %d: best epoch %d (val loss %.2f) saved to %s", latent_size,
             training.best_state_epoch,
             training.history[training.best_state_epoch - 1]["val_loss"], model_out)
    return training


def train_prior(model_path: str | os.PathLike, dataset: str | os.PathLike,
                cfg: DiffusionConfig, out: str | os.PathLike,
                loss_figure: str | os.PathLike | None = None, threads: int | None = None):
    """Train the diffusion prior of a model: of a conv model on one posterior draw of the
    latent grid of each of ``cfg.windows`` random training windows (the largest that fit, up to
    256 px), with the windows' local phase fractions as conditions; of a Table 1 model on the
    latent vectors of the training images, with their phase fractions. Write it and its loss
    figure."""
    cfg.check()
    if threads:
        torch.set_num_threads(threads)
    model, payload = load_model(model_path)
    if model.spatial:
        prior, cfg, trained_on = _grid_prior(model, model_path, dataset, cfg)
    else:
        prior, trained_on = _vector_prior(model, model_path, dataset, cfg)
    summary = prior.describe()
    save_prior(prior, out, extra={
        "model": str(model_path), "dataset": str(dataset),
        "model_fingerprint": payload.get("extra", {}).get("data_fingerprint", ""),
        "diffusion": json.dumps(asdict(cfg), sort_keys=True), **trained_on})
    if loss_figure is not None:
        save_figure(plots.diffusion_loss(prior.history, title=f"diffusion prior, latent "
                                         f"{model.latent_size}"), loss_figure)
    log.info("diffusion prior: %d steps in %.1f min, final loss %.4f, written to %s",
             summary["steps"], summary["minutes"], summary["final_loss"], out)
    return prior


def _grid_prior(model, model_path, dataset, cfg: DiffusionConfig):
    """A conv model's prior: the U-Net denoiser of one posterior draw of the latent grid of
    each of ``cfg.windows`` random training windows, their local phase fractions as
    conditions; with the settings it was trained with (the crop size chosen)."""
    regions = load_training_regions(dataset)
    if regions is None:
        raise MicrovaeError(f"{dataset}: holds no training regions (packed by an older "
                            "version): re-run pack")
    generator = torch.Generator().manual_seed(cfg.seed)
    windows = field_windows(*regions, cfg.windows, generator,
                            largest=max(FIELD_WINDOW, CELL * (cfg.crop_cells or
                                                              DEFAULT_CROP_CELLS)))
    try:
        crop_cells = training_crop_cells(cfg.crop_cells, windows.shape[-1])
    except MicrovaeError as exc:
        raise MicrovaeError(f"{dataset}: {exc}") from None
    if cfg.crop_cells is None and crop_cells < DEFAULT_CROP_CELLS:
        log.info("diffusion.crop_cells null: training crops of %d cells (%d px), the largest "
                 "multiple of %d cells inside the training windows of %d px (%d cells where "
                 "they allow)", crop_cells, CELL * crop_cells, GRID_MULTIPLE, windows.shape[-1],
                 DEFAULT_CROP_CELLS)
    cfg = replace(cfg, crop_cells=crop_cells)
    z_mean, z_log_var = encode(model, windows, batch_size=max(1, 250 * 32 * 32 // windows[0].size))
    grids = reparameterize(z_mean, z_log_var, torch.randn(z_mean.shape, generator=generator))
    conditions = torch.from_numpy(condition_maps(windows))
    log.info("diffusion prior of %s: %d windows of %d px (latent grids %s), local phase "
             "fraction %.3f-%.3f (1st-99th percentile)", model_path, len(windows),
             windows.shape[-1], tuple(grids.shape[1:]), *np.quantile(conditions, [0.01, 0.99]))
    active = _active_channels(z_mean, model_path, (0, 2, 3))
    prior = fit_diffusion(grids, conditions, cfg, float(windows.mean()), active, log=log.info)
    return prior, cfg, {"windows": len(windows), "window_px": int(windows.shape[-1])}


def _vector_prior(model, model_path, dataset, cfg: DiffusionConfig):
    """A Table 1 model's prior: the MLP denoiser of the codes of the training images (at most
    MAX_FIT_IMAGES, evenly spaced, as for the aggregate and mixture priors), each image's phase
    fraction its condition."""
    tiles = evenly_spaced(load_split(dataset, "train"), MAX_FIT_IMAGES)
    if len(tiles) < 2:
        raise MicrovaeError(f"{dataset}: the train split holds {len(tiles)} image; the "
                            "diffusion prior needs at least 2")
    z_mean, z_log_var = encode(model, tiles)
    fractions = torch.from_numpy(tiles.reshape(len(tiles), -1).mean(1, dtype=np.float64))
    log.info("diffusion prior of %s: the latent vectors of %d training images of %s px, "
             "phase fraction %.3f-%.3f (1st-99th percentile)", model_path, len(tiles),
             "x".join(map(str, tiles.shape[1:])), *np.quantile(fractions.numpy(), [0.01, 0.99]))
    active = _active_channels(z_mean, model_path, (0,))
    prior = fit_vector_diffusion(z_mean, z_log_var, fractions, cfg, float(tiles.mean()),
                                 active, log=log.info)
    return prior, {"images": len(tiles)}


def _active_channels(z_mean: torch.Tensor, model_path, dims: tuple[int, ...]) -> torch.Tensor:
    """The latent channels the encoder uses (the prior models them; all, with a warning, where
    it uses none), logged."""
    variances = z_mean.var(dims)
    active = variances > USED_VARIANCE
    if not active.any():
        log.warning("%s: the encoder uses none of its latent channels (every code is "
                    "the prior's): the diffusion prior models all of them and has little to "
                    "learn; train the VAE longer or lower model.kl_weight", model_path)
        return torch.ones_like(active)
    log.info("the encoder uses %d of %d latent channels (z_mean variance above %g: %s); the "
             "others are drawn i.i.d. from their own mean and spread, as the decoder saw them",
             int(active.sum()), len(active), USED_VARIANCE,
             ", ".join(f"{v:.3f}" for v in variances.tolist()))
    return active




def train_volume_model(out: str | os.PathLike, volumes: list[str] | None = None,
                       dataset: str | os.PathLike | None = None,
                       settings: VolumeTrainSettings | None = None,
                       diffusion: DiffusionConfig | None = None, seed: int = 0,
                       phase: str = "auto", threshold: float | None = None,
                       device: str = "auto", precision: str = "auto",
                       threads: int | None = None,
                       report: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train a conv3d VAE on volumes (``volumes``: files; or the train split of a packed
    ``dataset``, its sections stacked back into volumes, crops kept inside the split), then its
    ``field`` prior and (unless ``diffusion`` is None) its ``diffusion`` prior; write one model
    file holding both priors, and a JSON report (with the reconstruction IoU of the val split's
    volumes where the data set has any)."""
    from ..volume_vae import (
        covered_pieces,
        fit_volume_diffusion,
        fit_volume_field,
        reconstruction_iou,
        train_volume_vae,
    )
    from . import dataset_volumes, read_volumes

    settings = settings or VolumeTrainSettings()
    settings.check()
    if (volumes is None) == (dataset is None):
        raise MicrovaeError("give exactly one of --volumes, --dataset")
    masks = None
    val: list[np.ndarray] = []
    if dataset is not None:
        train, masks, left_out = dataset_volumes(dataset, "train", settings.crop_size)
        inputs: dict[str, Any] = {"dataset": str(dataset), "split": "train"}
        if left_out:
            log.info("%s: %d train sections belong to no run of %d consecutive sections and "
                     "are not used", dataset, left_out, settings.crop_size)
        try:
            val = [piece for v, m in zip(*dataset_volumes(dataset, "val", 8)[:2])
                   for piece in covered_pieces(v, m)]
        except MicrovaeError as exc:
            log.info("no val volumes to measure the reconstruction on (%s)", exc)
    else:
        train = read_volumes(volumes, "--volumes", phase, threshold)
        inputs = {"volumes": list(volumes)}
    runtime = select_runtime(device, precision, True, threads)
    generator = torch.Generator().manual_seed(seed)
    shapes = [list(v.shape) for v in train]
    log.info("conv3d: %d training volumes %s, crops of %d^3, %d steps (%s)", len(train), shapes,
             settings.crop_size, settings.steps, "bf16" if runtime.bf16 else "fp32")
    training = train_volume_vae(train, settings, generator, runtime, log_every=100,
                                on_log=lambda row: log.info("step %d: loss %.1f (bce %.1f, kl "
                                                            "%.1f), %.0f s", row["step"],
                                                            row["loss"], row["bce"], row["kl"],
                                                            row["seconds"]), masks=masks)
    model = training.model.cpu().float().eval()
    if masks is not None:  # the field and diffusion priors see the split's voxels only
        train = [piece for v, m in zip(train, masks) for piece in covered_pieces(v, m)]
    field = fit_volume_field(model, train, generator)
    extra: dict[str, Any] = {"field": field.state(), "seed": seed, "inputs": json.dumps(inputs),
                             "train": json.dumps(asdict(settings), sort_keys=True),
                             "phase_fraction": float(np.mean([v.mean() for v in train]))}
    result: dict[str, Any] = {
        "out": str(out), "inputs": inputs, "seed": seed, "settings": asdict(settings),
        "training_volumes": shapes, "precision": "bf16" if runtime.bf16 else "fp32",
        "steps": training.steps, "stop_reason": training.stop_reason,
        "seconds": round(training.seconds, 1), "history": training.history,
        "field": field.describe()}
    if diffusion is not None:
        prior = fit_volume_diffusion(model, train, generator, diffusion, log=log.info)
        extra["diffusion"] = prior.state()
        result["diffusion"] = {**prior.describe(), "settings": asdict(diffusion)}
    if val:
        ious = [reconstruction_iou(model, volume) for volume in val]
        result["val_iou"] = ious
        log.info("val volumes: reconstruction IoU %s", ", ".join(f"{v:.3f}" for v in ious))
    save_model(model, out, extra=extra)
    if report is not None:
        from ..atomic import write_json

        write_json(report, result)
    log.info("conv3d model saved to %s (%d steps, %.0f s)", out, training.steps,
             training.seconds)
    return result
