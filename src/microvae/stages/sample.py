"""The sample stage: loads a trained model (and its diffusion prior), calls the science of
:mod:`microvae.sample` and writes every output it is given (atomically): samples.h5, figures,
exported images.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import plots
from ..atomic import atomic_path, save_figure
from ..dataset import evenly_spaced
from ..diffusion import DiffusionConfig
from ..errors import MicrovaeError
from ..h5io import load_split, load_training_regions
from ..modelfile import load_model, load_prior
from ..modes import DATA_MODES, SAMPLE_FIGURES, UNSEEDED_MODES, in_mode_order, needs_of
from ..sample import (
    SampleConfig,
    check_modes,
    generate,
    latent_manifold,
    modes_for,
)
from ..samplesfile import (
    INTERPOLATION_MIDPOINT,
    INTERPOLATION_PAIRS,
    INTERPOLATION_PATH,
    NOISE,
    NOISE_INDEX,
    POSTERIOR_INDEX,
    RECONSTRUCTION,
    conditions_of,
    finish_records,
    finished_key,
    image_keys,
    target_key,
    write_samples,
)
from . import MAX_FIT_IMAGES, describe_morphology, segmentation_morphology

log = logging.getLogger("microvae.stages.sample")


def export_binary(images: np.ndarray, directory: str | os.PathLike, fmt: str,
                  prefix: str = "sample") -> list[Path]:
    """Phase maps (probabilities are binarised at 0.5) as one file per image (png|tif) or one
    stack (npy)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    binary = (images.reshape(-1, *images.shape[-2:]) > 0.5).astype(np.uint8)
    if fmt == "npy":
        path = directory / f"{prefix}.npy"
        with atomic_path(path) as tmp:
            np.save(tmp, binary)
        return [path]
    if fmt not in ("png", "tif"):
        raise MicrovaeError(f"--export-format: unknown format {fmt!r}")
    written = []
    for i, image in enumerate(binary):
        path = directory / f"{prefix}_{i:05d}.{fmt}"
        with atomic_path(path) as tmp:
            if fmt == "png":
                import imageio.v3 as iio

                iio.imwrite(tmp, image * 255)
            else:
                import tifffile

                tifffile.imwrite(tmp, image * 255)
        written.append(path)
    return written


def check_figures(figures: dict[str, str | os.PathLike], modes: tuple[str, ...]) -> None:
    """Every figure asked for can be drawn from the modes asked for."""
    for name in figures:
        if name not in SAMPLE_FIGURES:
            raise MicrovaeError(f"unknown figure {name!r}; use {sorted(SAMPLE_FIGURES)}")
        shown = SAMPLE_FIGURES[name]
        if not set(modes) & set(shown):
            what = "the encoded test images: " if name == "latent_map" else ""
            raise MicrovaeError(f"the {name} figure needs {what}--mode {' or '.join(shown)} "
                                "(or all)")


def write_sample_figures(model, arrays: dict[str, np.ndarray], test_images: np.ndarray | None,
                         figures: dict[str, str | os.PathLike], extent: float = 3.0) -> None:
    """PNG figures of the generated sets (keys of ``figures``: :data:`SAMPLE_FIGURES`)."""
    tag = f"latent size {model.latent_size}"
    if "prior" in figures:
        shown = [m for m in in_mode_order(UNSEEDED_MODES) if m in arrays]
        title = f"{', '.join(shown)} samples (top to bottom), {tag}"
        save_figure(plots.prior_grid({m: arrays[m] for m in shown}, title=title),
                    figures["prior"])
    chosen = arrays.get(POSTERIOR_INDEX, arrays.get(NOISE_INDEX))
    if "posterior" in figures:
        save_figure(plots.posterior_figure(test_images[chosen], arrays[RECONSTRUCTION][chosen],
                                           arrays["posterior"],
                                           title=f"posterior draws (eq. 1), {tag}"),
                    figures["posterior"])
    if "noise" in figures:
        noisy = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{NOISE}/")}
        save_figure(plots.noise_figure(test_images[chosen], noisy,
                                       title=f"z_mean + sigma * eps, {tag}"), figures["noise"])
    if "interpolation" in figures:
        pairs = arrays[INTERPOLATION_PAIRS]
        save_figure(plots.interpolation_figure(
            test_images[pairs[:, 0]], test_images[pairs[:, 1]], arrays[INTERPOLATION_MIDPOINT],
            arrays[INTERPOLATION_PATH], title=f"latent interpolation, {tag}"),
            figures["interpolation"])
    if "latent_map" in figures:
        two_d = model.latent_size == 2 and not model.spatial
        manifold = latent_manifold(model, extent=extent) if two_d else None
        z_mean = arrays["test_z_mean"].reshape(len(arrays["test_z_mean"]), -1)
        fractions = test_images.reshape(len(test_images), -1).mean(1)
        save_figure(plots.latent_map(z_mean, fractions, manifold, extent,
                                     title=f"latent space (Figure 7), {tag}"),
                    figures["latent_map"])


def sample_model(model_path: str | os.PathLike, out: str | os.PathLike,
                 dataset: str | os.PathLike | None, cfg: SampleConfig,
                 modes: tuple[str, ...] | None = None, split: str = "test",
                 figures: dict[str, str | os.PathLike] | None = None,
                 export_dir: str | os.PathLike | None = None, export_format: str = "png",
                 max_fit_images: int = MAX_FIT_IMAGES, diffusion_path: str | os.PathLike | None = None,
                 diffusion_options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Load a model, generate the modes and write them to ``out``, then the figures asked
    for (name -> path) and, with ``export_dir``, the binarised prior/aggregate/posterior images.

    The aggregate mode is fitted to at most ``max_fit_images`` evenly spaced training images.
    ``modes`` None: every mode of the model's architecture (and ``diffusion`` with
    ``diffusion_path``, the trained prior, sampled with ``diffusion_options``: the config's
    ``diffusion.sampling_steps``, ``guidance`` and ``guidance_schedule``, the schema's defaults
    where not given).
    """
    figures = figures or {}
    model, payload = load_model(model_path)
    diffusion_prior = None
    diffusion_cfg = DiffusionConfig.from_options(diffusion_options or {})
    if diffusion_path is not None:
        diffusion_prior, prior_payload = load_prior(diffusion_path)
        fingerprint = payload.get("extra", {}).get("data_fingerprint", "")
        if prior_payload.get("extra", {}).get("model_fingerprint", fingerprint) != fingerprint:
            raise MicrovaeError(f"{diffusion_path}: trained for another model than "
                                f"{model_path}; train it again (train-prior)")
        low, high = diffusion_prior.condition_range
        for target in [*cfg.phase_fractions, *(cfg.graded or [])]:
            if not low <= target <= high:
                log.warning("target phase fraction %.3f lies outside the local phase fractions "
                            "the diffusion prior was trained on (%.3f-%.3f, 1st-99th "
                            "percentile): the prior extrapolates; check the achieved fraction "
                            "in metrics.json (conditioning)", target, low, high)
    trained_priors = ("diffusion",) if diffusion_prior is not None else ()
    modes = modes_for(model, trained_priors) if modes is None else tuple(modes)
    check_modes(model, modes, trained_priors)
    needs_data = [m for m in modes if m in DATA_MODES]
    needs = needs_of(modes)
    if needs_data and dataset is None:
        raise MicrovaeError(f"--mode {' '.join(needs_data)} needs --dataset (real images to "
                            "encode)")
    check_figures(figures, modes)
    test_images = load_split(dataset, split) if dataset is not None else None
    fit_images = val_images = None
    training_phase_fraction = morphology = None
    if cfg.match_training and dataset is None:
        log.warning("no --dataset: the images are not finished as the training maps were made "
                    "(that needs the train split's phase fraction and segmentation); they keep "
                    "their probabilities, cut at 0.5 wherever binary maps are needed")
        cfg = replace(cfg, match_training=False)
    if cfg.match_training:
        morphology = segmentation_morphology(dataset)
    if dataset is not None and ("train" in needs or cfg.match_training):
        train_images = load_split(dataset, "train")
        fit_images = evenly_spaced(train_images, max_fit_images)
        training_phase_fraction = float(train_images.mean())
    if "val" in needs:
        val_images = evenly_spaced(load_split(dataset, "val"), max_fit_images)
    regions = None
    if "regions" in needs:
        regions = load_training_regions(dataset)
        if regions is None:
            raise MicrovaeError(f"{dataset}: holds no training regions (packed by an older "
                                f"version): re-run pack for mode "
                                f"{' '.join(m for m in modes if 'regions' in needs_of([m]))}")
    arrays = generate(model, test_images, cfg, modes, fit_images, val_images, regions,
                      training_phase_fraction, morphology, diffusion_prior,
                      diffusion_cfg.sampling_steps, diffusion_cfg.guidance,
                      diffusion_cfg.target_texture, diffusion_cfg.guidance_schedule)
    for key, condition in conditions_of(arrays).items():
        target = arrays[target_key(key)]
        log.info("%s drawn with the condition %s for the target %s%s", key,
                 np.round(condition, 3) if np.ndim(condition) == 0 else
                 f"{condition.min():.3f}-{condition.max():.3f}",
                 np.round(target, 3) if np.ndim(target) == 0 else
                 f"{target.min():.3f}-{target.max():.3f}",
                 " (calibrated, sample.calibrate_targets)" if cfg.calibrate_targets else "")
    for name, record in sorted(finish_records(arrays).items()):
        log.info("%s images finished as the training maps were made: cut at %.3f (calibrated on "
                 "%d draws to the train split's phase fraction %.3f; a cut at 0.5 gave %.3f), "
                 "then %s: phase fraction %.3f", name, record["threshold"],
                 record["calibration_draws"], training_phase_fraction,
                 record["phase_fraction_at_0.5"], describe_morphology(morphology),
                 [v for k, v in record.items() if k.startswith("after_")][-1])
    write_samples(out, arrays, attrs={
        "model": str(model_path), "model_config": payload["config"],
        "model_fingerprint": payload.get("extra", {}).get("data_fingerprint", ""),
        "latent_size": model.latent_size, "seed": cfg.seed, "modes": list(modes),
        "noise_sigmas": list(cfg.noise_sigmas), "dataset": str(dataset or ""), "split": split,
        "n_steps": cfg.n_steps, "sizes": list(cfg.sizes), "periodic": cfg.periodic,
        "diffusion": str(diffusion_path or ""), "diffusion_sampling_steps":
            diffusion_cfg.sampling_steps, "diffusion_guidance": diffusion_cfg.guidance,
        "diffusion_guidance_schedule": json.dumps(diffusion_cfg.guidance_schedule),
        "diffusion_target_texture": diffusion_cfg.target_texture,
        "phase_fractions": list(cfg.phase_fractions), "graded": list(cfg.graded or []),
        "calibrate_targets": cfg.calibrate_targets,
        "match_training": cfg.match_training,
        "match_training_morphology": describe_morphology(morphology),
        "architecture": model.config.get("architecture", "table1")})
    stacks = image_keys(arrays)
    finished = sum(finished_key(k) in arrays for k in stacks)
    log.info("wrote %s: %d image stacks (%s), %d of them finished, %d other arrays", out,
             len(stacks), ", ".join(f"{k} {arrays[k].shape}" for k in stacks), finished,
             len(arrays) - len(stacks) - finished)
    shown = {**arrays, **{key: arrays[finished_key(key)] for key in stacks
                          if finished_key(key) in arrays}}
    write_sample_figures(model, shown, test_images, figures)
    if export_dir is not None:
        for name in in_mode_order((*UNSEEDED_MODES, "posterior")):
            if name in arrays:
                files = export_binary(shown[name], export_dir, export_format, name)
                log.info("exported %d %s file(s) to %s", len(files), name, export_dir)
    return arrays
