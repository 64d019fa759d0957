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
from ..crops import split_into_windows, tiled_windows
from ..dataset import training_regions
from ..errors import MicrovaeError
from ..evaluate import (
    Seeds,
    evaluate_sets,
    periodic_s2_nrmse,
    reconstruction_metrics,
    s2_columns,
    summary_rows,
)
from ..h5io import dataset_info, load_origin, load_split, open_h5, read_json_attr
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

    for name in ("prior", "aggregate", "mixture", "field", "posterior"):
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
    metrics["image_size"] = int(real.shape[-1])
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


# The real windows a size is compared with must number at least this many (two halves of 4).
MIN_REAL_WINDOWS = 8


def real_test_windows(dataset_path: str | os.PathLike, size: int
                      ) -> tuple[int, np.ndarray, np.ndarray]:
    """The real test windows for generated images of ``size`` px: the test tiles put back in
    place, cut into non-overlapping windows of ``size``, or of the largest size (halving) of
    which at least :data:`MIN_REAL_WINDOWS` fit. Returns ``(window size, windows, group of
    each)`` (group: the file or volume)."""
    tiles, origin = load_split(dataset_path, "test"), load_origin(dataset_path, "test")
    if origin is None:
        raise MicrovaeError(f"{dataset_path}: its test tiles carry no origin (packed by an "
                            "older version): re-run pack")
    canvases, mask, sections = training_regions(tiles, origin)
    window = size
    while window >= tiles.shape[1]:
        windows, owner = tiled_windows(canvases, mask, window)
        if len(windows) >= MIN_REAL_WINDOWS:
            groups = sections[owner, 0] * 1_000_000 + sections[owner, 1]
            return window, windows, groups
        if window % 16:
            break
        window //= 2
    raise MicrovaeError(f"{dataset_path}: the test region holds fewer than {MIN_REAL_WINDOWS} "
                        f"real windows of {size} px or of any size down to the tile size "
                        f"{tiles.shape[1]} px: nothing to compare {size} px images with")


def evaluate_large(samples_path: str | os.PathLike, dataset_path: str | os.PathLike,
                   metrics_out: str | os.PathLike, figure_out: str | os.PathLike | None = None,
                   seed: int = 0, latent: int | None = None) -> dict[str, Any]:
    """The generated images larger than the tiles (``large/{mode}_{size}`` of a samples file)
    against real test windows of the same size (where fewer fit, of the largest size that
    does, with each generated image cut into windows of that size): the descriptors, the floor
    over random halves of the real windows and the verdict, as :func:`evaluate` does."""
    with open_h5(samples_path) as h5:
        if "large" not in h5 or not len(h5["large"]):
            raise MicrovaeError(f"{samples_path}: holds no large samples (sample with --size)")
        generated = {name: h5["large"][name][()].astype(np.float32) for name in h5["large"]}
        attrs = {k: read_json_attr(h5, k) for k in h5.attrs}
    if attrs.get("split", "test") != "test":
        raise MicrovaeError(f"{samples_path}: made from the {attrs['split']} split; the "
                            "evaluation compares with the test split")
    by_size: dict[int, dict[str, np.ndarray]] = {}
    for name, images in generated.items():
        by_size.setdefault(images.shape[-1], {})[name] = images
    metrics: dict[str, Any] = {
        "latent_size": latent if latent is not None else attrs.get("latent_size"),
        "periodic": bool(attrs.get("periodic", False)), "modes": {}, "real": {}}
    real_shown: dict[int, np.ndarray] = {}
    for size, sets in sorted(by_size.items()):
        window, real, groups = real_test_windows(dataset_path, size)
        cut = {name: split_into_windows(images, window) for name, images in sets.items()}
        evaluation = evaluate_sets(real, cut, seed, groups=groups)
        real_shown[window] = real[np.linspace(0, len(real) - 1, 3).astype(int)]
        metrics["real"][str(window)] = evaluation.metrics["real"]
        for name, values in evaluation.metrics["modes"].items():
            metrics["modes"][name] = {**values, "size": size, "compared_window": window,
                                      "n_generated": len(sets[name]), "n_real_windows": len(real),
                                      "real_phase_fraction": evaluation.metrics["real"][
                                          "phase_fraction_mean"]}
            if metrics["periodic"]:  # pairs across the edges against pairs inside
                gap = periodic_s2_nrmse((sets[name] > 0.5).astype(np.uint8))
                metrics["modes"][name]["periodic_s2_nrmse"] = gap
                metrics["modes"][name]["periodic_s2_within_floor"] = bool(
                    gap <= values["floor_p95"]["s2_nrmse_radial"])
    write_json(metrics_out, metrics)
    if figure_out is not None:
        kind = "periodic" if metrics["periodic"] else "generated"
        shown = {f"{name.rsplit('_', 1)[0]}, {kind}, {size} px": images
                 for size, sets in sorted(by_size.items()) for name, images in sets.items()}
        save_figure(plots.large_figure(real_shown, shown, title=(
            f"generated beside real test windows, latent size {metrics['latent_size']}")),
            figure_out)
    return metrics


def summarize(metrics_files: list[str | os.PathLike], history_files: dict[int, str | os.PathLike],
              table_out: str | os.PathLike, comparison_figure: str | os.PathLike,
              loss_figure: str | os.PathLike, large_metrics_files: list[str | os.PathLike] = ()
              ) -> list[dict[str, Any]]:
    """summary.csv, the latent-size comparison and the loss curves of all latent sizes; the
    large images' metrics (``large_metrics_files``) add rows of their own size."""

    def read(paths):
        out = []
        for path in paths:
            with open(path) as handle:
                out.append(json.load(handle))
        return out

    tile_rows = summary_rows(read(metrics_files))
    rows = summary_rows(read(metrics_files) + read(large_metrics_files))
    columns = list(dict.fromkeys(key for row in rows for key in row))  # modes differ in columns
    write_csv(table_out, [{k: row.get(k, "") for k in columns} for row in rows], columns)
    save_figure(plots.latent_comparison(tile_rows), comparison_figure)
    save_figure(plots.loss_curves({latent: read_history(path)
                                   for latent, path in history_files.items()}), loss_figure)
    return rows
