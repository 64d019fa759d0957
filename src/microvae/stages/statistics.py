"""Stages of the statistics: evaluate (generated against real images, per latent size) and
summarize (across latent sizes). They read the samples and the data set, call the science of
:mod:`microvae.evaluate` and write the metrics, tables and figures they are given.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .. import plots
from ..atomic import save_figure, write_json, write_text
from ..errors import MicrovaeError
from ..evaluate import Seeds, evaluate_sets, reconstruction_metrics, s2_columns, summary_rows
from ..h5io import dataset_info, load_split, open_h5, read_json_attr
from ..tables import columns_text, write_csv
from . import EVALUATION_FIGURES
from .network import read_history


def seeds_of(h5) -> dict[str, Seeds]:
    """The real test images each seeded mode of a samples file started from."""
    seeds = {}
    if "posterior_index" in h5 and "posterior" in h5:
        seeds["posterior"] = Seeds.per_image(h5["posterior_index"][()], h5["posterior"].shape[1])
    if "noise_index" in h5 and "noise" in h5:
        for sigma in h5["noise"]:
            seeds[f"noise_{sigma}"] = Seeds.per_image(h5["noise_index"][()],
                                                      h5["noise"][sigma].shape[1])
    if "interpolation" in h5 and "pairs" in h5["interpolation"]:
        pairs = h5["interpolation"]["pairs"][()]
        seeds["interpolation_midpoint"] = Seeds(np.arange(len(pairs)), pairs)
    return seeds


def test_groups(dataset_path: str | os.PathLike) -> np.ndarray | None:
    """The file or volume of every test image (source and file columns of its origin)."""
    with open_h5(dataset_path) as h5:
        if "test_origin" not in h5:
            return None
        origin = h5["test_origin"][()]
    return origin[:, 0].astype(np.int64) * 1_000_000 + origin[:, 1]


def generated_sets(h5) -> dict[str, np.ndarray]:
    """Every generation mode of a samples file as (N, H, W) probabilities (float32)."""
    sets: dict[str, np.ndarray] = {}

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, *a.shape[-2:]).astype(np.float32)

    for name in ("prior", "aggregate", "mixture", "posterior"):
        if name in h5:
            sets[name] = flat(h5[name][()])
    if "noise" in h5:
        for sigma in sorted(h5["noise"], key=float):
            sets[f"noise_{sigma}"] = flat(h5["noise"][sigma][()])
    if "interpolation" in h5 and "midpoint" in h5["interpolation"]:
        sets["interpolation_midpoint"] = flat(h5["interpolation"]["midpoint"][()])
    if "reconstruction" in h5:
        sets["reconstruction"] = flat(h5["reconstruction"][()])
    return sets


def load_for_evaluation(samples_path: str | os.PathLike, dataset_path: str | os.PathLike
                        ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Real test images, generated sets and the samples' attributes."""
    real = load_split(dataset_path, "test")
    with open_h5(samples_path) as h5:
        generated = generated_sets(h5)
        attrs = {k: read_json_attr(h5, k) for k in h5.attrs}
        attrs["seeds"] = seeds_of(h5)
        if "reconstruction_bce" in h5:
            attrs["reconstruction_bce"] = h5["reconstruction_bce"][()]
    if not generated:
        raise MicrovaeError(f"{samples_path}: holds no generated images")
    split = attrs.get("split", "test")
    if split != "test":
        raise MicrovaeError(f"{samples_path}: its seeded modes started from the {split} split, "
                            "but the evaluation compares with the test split; sample with "
                            "--split test")
    shape = next(iter(generated.values())).shape[1:]
    if tuple(shape) != tuple(real.shape[1:]):
        raise MicrovaeError(f"{samples_path}: images of {shape} px, but the test set of "
                            f"{dataset_path} has {real.shape[1:]} px")
    info = dataset_info(dataset_path)
    attrs["pixel_size"] = float(info.get("pixel_size") or 0.0)
    attrs["pixel_unit"] = info.get("pixel_unit", "px")
    return real, generated, attrs


def evaluate(samples_path: str | os.PathLike, dataset_path: str | os.PathLike,
             metrics_out: str | os.PathLike, s2_out: str | os.PathLike,
             figures: dict[str, str | os.PathLike] | None = None, seed: int = 0,
             latent: int | None = None) -> dict[str, Any]:
    """metrics.json, s2.csv and the figures asked for (name -> path; names
    :data:`EVALUATION_FIGURES`)."""
    figures = figures or {}
    unknown = set(figures) - set(EVALUATION_FIGURES)
    if unknown:
        raise MicrovaeError(f"unknown figure(s) {sorted(unknown)}; use {list(EVALUATION_FIGURES)}")
    real, generated, attrs = load_for_evaluation(samples_path, dataset_path)
    evaluation = evaluate_sets(real, generated, seed, seeds=attrs["seeds"],
                               groups=test_groups(dataset_path),
                               train=load_split(dataset_path, "train"))
    metrics = evaluation.metrics
    metrics["latent_size"] = latent if latent is not None else attrs.get("latent_size")
    metrics["pixel_size"] = attrs["pixel_size"]
    metrics["pixel_unit"] = attrs["pixel_unit"]
    metrics["units"] = {"lengths": "px", "areas": "px^2", "specific_perimeter": "1/px",
                        "bce_per_pixel": "nats"}
    if "reconstruction" in generated:
        metrics["reconstruction"] = reconstruction_metrics(generated["reconstruction"], real,
                                                           attrs.get("reconstruction_bce"))
    write_json(metrics_out, metrics)
    write_text(s2_out, columns_text(s2_columns(evaluation)))
    tag = f"latent size {metrics['latent_size']}"
    shown = {k: v for k, v in evaluation.modes.items() if k != "reconstruction"}
    if "s2" in figures:
        save_figure(plots.s2_figure(evaluation.reference, shown, attrs["pixel_size"],
                                    attrs["pixel_unit"], title=f"two-point correlation, {tag}"),
                    figures["s2"])
    if "phase_fraction" in figures:
        save_figure(plots.phase_fraction_figure(evaluation.reference, evaluation.modes,
                                                title=f"phase fraction per image, {tag}"),
                    figures["phase_fraction"])
    if "chords" in figures:
        save_figure(plots.chord_island_figure(evaluation.reference, shown, attrs["pixel_size"],
                                              attrs["pixel_unit"],
                                              title=f"chord lengths and island sizes, {tag}"),
                    figures["chords"])
    return metrics


def summarize(metrics_files: list[str | os.PathLike], history_files: dict[int, str | os.PathLike],
              table_out: str | os.PathLike, comparison_figure: str | os.PathLike,
              loss_figure: str | os.PathLike) -> list[dict[str, Any]]:
    """summary.csv, the latent-size comparison and the loss curves of all latent sizes."""
    metrics = []
    for path in metrics_files:
        with open(path) as handle:
            metrics.append(json.load(handle))
    rows = summary_rows(metrics)
    write_csv(table_out, rows)
    save_figure(plots.latent_comparison(rows), comparison_figure)
    save_figure(plots.loss_curves({latent: read_history(path)
                                   for latent, path in history_files.items()}), loss_figure)
    return rows
