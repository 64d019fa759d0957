"""Generated against real microstructures: descriptors, distances and their real-vs-real floors.

Generated probabilities are binarised at 0.5 before any statistic. Each distance between a
generated set G and the real reference set A is reported next to the same distance between a
disjoint real set B (of the same size as G, capped by what the test set allows) and A: the
floor that a perfect generator would reach.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from . import descriptors as d
from .errors import MicrovaeError
from .h5io import open_h5, read_json_attr
from .segment import iou, pooled_iou


@dataclass
class Statistics:
    """Descriptors of one image set."""

    n: int
    phi: np.ndarray
    s2: d.S2Curves
    chords: dict[str, np.ndarray]  # key "{phase}{axis}", e.g. "1x"
    perimeter: np.ndarray
    island_counts: np.ndarray
    island_areas: np.ndarray

    @classmethod
    def of(cls, images: np.ndarray) -> Statistics:
        images = np.asarray(images, dtype=np.uint8)
        counts, areas = d.islands(images)
        return cls(
            n=len(images), phi=d.phase_fraction(images), s2=d.two_point_correlation(images),
            chords={f"{p}{a}": d.chord_lengths(images, p, a) for p in (0, 1) for a in "xy"},
            perimeter=d.specific_perimeter(images), island_counts=counts, island_areas=areas)

    def mean_curve(self, direction: str) -> np.ndarray:
        return getattr(self.s2, direction).mean(axis=0)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else float("nan")


def distances(generated: Statistics, reference: Statistics) -> dict[str, float]:
    """Distances between two sets of descriptors (generated minus reference where signed)."""
    phi_ref = _mean(reference.phi)
    scale = max(phi_ref * (1.0 - phi_ref), 1e-12)
    out = {
        "phase_fraction_difference": _mean(generated.phi) - phi_ref,
        "phase_fraction_wasserstein": float(wasserstein_distance(generated.phi, reference.phi)),
    }
    for direction in ("radial", "x", "y"):
        diff = generated.mean_curve(direction) - reference.mean_curve(direction)
        out[f"s2_nrmse_{direction}"] = float(np.sqrt(np.mean(diff**2)) / scale)
    for key in generated.chords:
        out[f"mean_chord_{key}_difference"] = _mean(generated.chords[key]) - _mean(reference.chords[key])
    out["island_area_median_difference"] = _median(generated.island_areas) - _median(reference.island_areas)
    out["specific_perimeter_difference"] = _mean(generated.perimeter) - _mean(reference.perimeter)
    return out


def summary(stats: Statistics) -> dict[str, float]:
    """Plain descriptors of one set, for the tables."""
    out = {"n_images": stats.n, "phase_fraction_mean": _mean(stats.phi),
           "phase_fraction_std": float(stats.phi.std()),
           "specific_perimeter_mean": _mean(stats.perimeter),
           "islands_per_image": _mean(stats.island_counts),
           "island_area_mean": _mean(stats.island_areas),
           "island_area_median": _median(stats.island_areas)}
    for q in (10, 90):
        out[f"island_area_q{q}"] = float(np.percentile(stats.island_areas, q)) \
            if stats.island_areas.size else float("nan")
    for key, values in stats.chords.items():
        out[f"mean_chord_{key}"] = _mean(values)
    return out


def reconstruction_metrics(probabilities: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """BCE per pixel (nats), pixel accuracy and IoU of phase 1 of reconstructions thresholded at 0.5."""
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    t = truth.astype(bool)
    bce = -np.mean(np.where(t, np.log(p), np.log1p(-p)))
    binary = probabilities > 0.5
    return {"bce_per_pixel": float(bce), "pixel_accuracy": float(np.mean(binary == t)),
            "iou": float(iou(binary, t).mean()), "iou_pooled": pooled_iou(binary, t)}


def source_indices(h5) -> dict[str, np.ndarray]:
    """Test-set indices of the real images that each encoded mode started from."""
    sources = {}
    if "posterior_index" in h5:
        sources["posterior"] = h5["posterior_index"][()]
    if "noise_index" in h5 and "noise" in h5:
        for sigma in h5["noise"]:
            sources[f"noise_{sigma}"] = h5["noise_index"][()]
    if "interpolation" in h5 and "pairs" in h5["interpolation"]:
        sources["interpolation_midpoint"] = h5["interpolation"]["pairs"][()].ravel()
    if "reconstruction" in h5:
        sources["reconstruction"] = np.arange(len(h5["reconstruction"]))
    return sources


def generated_sets(h5) -> dict[str, np.ndarray]:
    """Every generation mode of a samples file as (N, H, W) probabilities (float32)."""
    sets: dict[str, np.ndarray] = {}

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, *a.shape[-2:]).astype(np.float32)

    if "prior" in h5:
        sets["prior"] = flat(h5["prior"][()])
    if "aggregate" in h5:
        sets["aggregate"] = flat(h5["aggregate"][()])
    if "posterior" in h5:
        sets["posterior"] = flat(h5["posterior"][()])
    if "noise" in h5:
        for sigma in sorted(h5["noise"], key=float):
            sets[f"noise_{sigma}"] = flat(h5["noise"][sigma][()])
    if "interpolation" in h5 and "midpoint" in h5["interpolation"]:
        sets["interpolation_midpoint"] = flat(h5["interpolation"]["midpoint"][()])
    if "reconstruction" in h5:
        sets["reconstruction"] = flat(h5["reconstruction"][()])
    return sets


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    reference: Statistics
    floor_set: Statistics
    modes: dict[str, Statistics]


def evaluate_sets(real: np.ndarray, generated: dict[str, np.ndarray], seed: int = 0,
                  sources: dict[str, np.ndarray] | None = None) -> Evaluation:
    """Compare every generated set (probabilities) with the real images (binary).

    The real images are split (seeded) into a reference half A and a floor half B.
    ``sources`` (mode -> indices into ``real``) names the real images an encoded mode started
    from; their mean phase fraction is reported beside the mode's.
    """
    if len(real) < 4:
        raise MicrovaeError(f"evaluation needs at least 4 real test images, got {len(real)}")
    order = np.random.default_rng(seed).permutation(len(real))
    half = len(real) // 2
    reference = Statistics.of(real[order[:half]])
    pool = real[order[half:]]
    floor_all = Statistics.of(pool)
    metrics: dict[str, Any] = {"n_real_reference": half, "n_real_pool": len(pool),
                               "real": summary(reference), "modes": {}}
    modes: dict[str, Statistics] = {}
    for name, probabilities in generated.items():
        binary = (probabilities > 0.5).astype(np.uint8)
        n = min(len(binary), len(pool))
        stats = Statistics.of(binary)
        modes[name] = stats
        subset = Statistics.of(binary[:n]) if n < len(binary) else stats
        floor = Statistics.of(pool[:n]) if n < len(pool) else floor_all
        metrics["modes"][name] = {
            "n_images": len(binary), "n_compared": n,
            "summary": summary(stats),
            "distance": distances(subset, reference),
            "floor": distances(floor, reference),
            # Binarising at 0.5 against Bernoulli sampling of the same probabilities:
            "binarisation_bias": float(binary.mean() - probabilities.mean()),
        }
        if sources and name in sources:
            source_phi = float(d.phase_fraction(real[sources[name]]).mean())
            metrics["modes"][name]["source_phase_fraction"] = source_phi
            metrics["modes"][name]["phase_fraction_difference_to_sources"] = \
                float(stats.phi.mean()) - source_phi
    return Evaluation(metrics, reference, floor_all, modes)


def load_for_evaluation(samples_path: str | os.PathLike, dataset_path: str | os.PathLike
                        ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Real test images, generated sets and the samples' attributes."""
    from .dataset import dataset_info, load_split

    real = load_split(dataset_path, "test")
    with open_h5(samples_path) as h5:
        generated = generated_sets(h5)
        attrs = {k: read_json_attr(h5, k) for k in h5.attrs}
        attrs["sources"] = source_indices(h5)
    if not generated:
        raise MicrovaeError(f"{samples_path}: holds no generated images")
    shape = next(iter(generated.values())).shape[1:]
    if tuple(shape) != tuple(real.shape[1:]):
        raise MicrovaeError(f"{samples_path}: images of {shape} px, but the test set of "
                            f"{dataset_path} has {real.shape[1:]} px")
    info = dataset_info(dataset_path)
    attrs["pixel_size"] = float(info.get("pixel_size") or 0.0)
    attrs["pixel_unit"] = info.get("pixel_unit", "px")
    return real, generated, attrs


def s2_table(evaluation: Evaluation) -> str:
    """CSV text: r, then the mean S2 of the real reference and of every mode, radial, x and y."""
    r = evaluation.reference.s2.r
    columns = {"r": r}
    sets = {"real": evaluation.reference, "real_floor": evaluation.floor_set, **evaluation.modes}
    for direction in ("radial", "x", "y"):
        for name, stats in sets.items():
            columns[f"{name}_{direction}" if direction != "radial" else name] = \
                stats.mean_curve(direction)
    header = ",".join(columns)
    lines = [header] + [",".join(f"{columns[c][i]:.8g}" for c in columns) for i in range(len(r))]
    return "\n".join(lines) + "\n"


def evaluate_files(samples_path: str | os.PathLike, dataset_path: str | os.PathLike,
                   metrics_out: str | os.PathLike, s2_out: str | os.PathLike,
                   figures: dict[str, str | os.PathLike], seed: int = 0,
                   latent: int | None = None) -> dict[str, Any]:
    """The ``evaluate`` stage: metrics.json, s2.csv and figures (keys: s2, phase_fraction,
    chords)."""
    from . import plots
    from .atomic import save_figure, write_json, write_text

    real, generated, attrs = load_for_evaluation(samples_path, dataset_path)
    evaluation = evaluate_sets(real, generated, seed, sources=attrs["sources"])
    metrics = evaluation.metrics
    metrics["latent_size"] = latent if latent is not None else attrs.get("latent_size")
    metrics["pixel_size"] = attrs["pixel_size"]
    metrics["pixel_unit"] = attrs["pixel_unit"]
    metrics["units"] = {"lengths": "px", "areas": "px^2", "specific_perimeter": "1/px",
                        "bce_per_pixel": "nats"}
    if "reconstruction" in generated:
        metrics["reconstruction"] = reconstruction_metrics(generated["reconstruction"], real)
    write_json(metrics_out, metrics)
    write_text(s2_out, s2_table(evaluation))
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


SUMMARY_KEYS = ("phase_fraction_difference", "phase_fraction_wasserstein", "s2_nrmse_radial",
                "s2_nrmse_x", "s2_nrmse_y", "mean_chord_1x_difference", "mean_chord_1y_difference",
                "island_area_median_difference")


def summary_rows(metrics_files: list[str | os.PathLike]) -> list[dict[str, Any]]:
    """One row per latent size x mode: distances, their floors, and reconstruction quality."""
    import json

    rows = []
    for path in metrics_files:
        with open(path) as handle:
            metrics = json.load(handle)
        recon = metrics.get("reconstruction", {})
        for mode, values in metrics["modes"].items():
            row: dict[str, Any] = {"latent": metrics["latent_size"], "mode": mode,
                                   "n_images": values["n_images"],
                                   "phase_fraction": values["summary"]["phase_fraction_mean"],
                                   "real_phase_fraction": metrics["real"]["phase_fraction_mean"],
                                   "source_phase_fraction": values.get("source_phase_fraction",
                                                                       float("nan")),
                                   "binarisation_bias": values["binarisation_bias"]}
            for key in SUMMARY_KEYS:
                row[key] = values["distance"][key]
                row[f"floor_{key}"] = values["floor"][key]
            row["recon_iou"] = recon.get("iou", float("nan"))
            row["recon_bce_per_pixel"] = recon.get("bce_per_pixel", float("nan"))
            row["recon_accuracy"] = recon.get("pixel_accuracy", float("nan"))
            rows.append(row)
    rows.sort(key=lambda r: (r["latent"], r["mode"]))
    return rows


def summarize_files(metrics_files: list[str | os.PathLike], history_files: dict[int, str],
                    table_out: str | os.PathLike, comparison_figure: str | os.PathLike,
                    loss_figure: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``summarize`` stage: summary.csv, the latent-size comparison and all loss curves."""
    import csv
    import io

    from . import plots
    from .atomic import save_figure, write_text
    from .train import read_history

    rows = summary_rows(metrics_files)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(table_out, buffer.getvalue())
    save_figure(plots.latent_comparison(rows), comparison_figure)
    save_figure(plots.loss_curves({latent: read_history(path)
                                   for latent, path in history_files.items()}), loss_figure)
    return rows
