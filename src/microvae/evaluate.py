"""Generated against real microstructures: descriptors, distances and their real-vs-real floors.

Generated probabilities are binarised at 0.5 before any statistic. Each distance between a
generated set G and the real reference set A is reported next to the same distance between a
disjoint real set B (of the same size as G, capped by what the test set allows) and A: the
floor that a perfect generator would reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from . import descriptors as d
from .descriptors import iou, pooled_iou
from .errors import MicrovaeError


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


def s2_columns(evaluation: Evaluation) -> dict[str, np.ndarray]:
    """r, then the mean S2 of the real reference, the real floor set and every mode: radial
    (named by the set), then x and y (``{set}_x``, ``{set}_y``)."""
    columns = {"r": evaluation.reference.s2.r}
    sets = {"real": evaluation.reference, "real_floor": evaluation.floor_set, **evaluation.modes}
    for direction in ("radial", "x", "y"):
        for name, stats in sets.items():
            columns[f"{name}_{direction}" if direction != "radial" else name] = \
                stats.mean_curve(direction)
    return columns


SUMMARY_KEYS = ("phase_fraction_difference", "phase_fraction_wasserstein", "s2_nrmse_radial",
                "s2_nrmse_x", "s2_nrmse_y", "mean_chord_1x_difference", "mean_chord_1y_difference",
                "island_area_median_difference")


def summary_rows(metrics_of_sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per latent size x mode (from the metrics of each latent size): distances,
    their floors, and reconstruction quality."""
    rows = []
    for metrics in metrics_of_sizes:
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
