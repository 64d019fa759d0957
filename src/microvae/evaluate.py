"""Generated against real microstructures: descriptors, distances, their real-vs-real floors
and a verdict per descriptor.

Generated probabilities are binarised at 0.5 before any statistic. The real test images are
split (seeded) ``n_halves`` times into a reference half A_k and the rest, by file or volume
where the test set has several, and never taking the source images of a seeded mode into A_k.
For each generated set G and each A_k:

* the distance d(G, A_k);
* the floor d(B_k, A_k), what a perfect generator would reach: B_k is, for the unseeded modes,
  as many real images from outside A_k as G has; for the seeded modes (posterior, noise,
  interpolation, reconstruction) the source images themselves (those outside A_k).

Reported: the median of d(G, A_k) over k with a bootstrap interval of that median (5th-95th
percentile over resamples of the halves), and the floor's median and 95th percentile. A
descriptor is within the floor when the upper end of the interval is at most the floor's 95th
percentile (magnitudes of signed differences). The first half A_0 is the reference of the
figures. All descriptors are computed once per image; subsets are weight vectors over images.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from . import descriptors as d
from .descriptors import iou, pooled_iou
from .errors import MicrovaeError

# The descriptors of the verdict (a signed difference counts by its magnitude).
VERDICT_KEYS = ("phase_fraction_wasserstein", "s2_nrmse_radial", "mean_chord_1x_difference",
                "mean_chord_1y_difference", "island_area_median_difference",
                "specific_perimeter_difference")
INTERVAL = (5.0, 95.0)
N_HALVES = 100
N_BOOTSTRAP = 1000


@dataclass
class Statistics:
    """Descriptors of one image set, per image (pooled chords and islands keep the image they
    lie in), so that a subset or a resample is a weight vector over the images."""

    n: int
    phi: np.ndarray
    s2: d.S2Curves
    chords: dict[str, np.ndarray]  # key "{phase}{axis}", e.g. "1x"
    chord_owner: dict[str, np.ndarray]
    perimeter: np.ndarray
    island_counts: np.ndarray
    island_areas: np.ndarray
    island_owner: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, images: np.ndarray) -> Statistics:
        images = np.asarray(images, dtype=np.uint8)
        counts, areas, owner = d.islands(images, with_owner=True)
        chords, chord_owner = {}, {}
        for p in (0, 1):
            for a in "xy":
                chords[f"{p}{a}"], chord_owner[f"{p}{a}"] = d.chord_lengths(images, p, a, True)
        return cls(n=len(images), phi=d.phase_fraction(images), s2=d.two_point_correlation(images),
                   chords=chords, chord_owner=chord_owner,
                   perimeter=d.specific_perimeter(images), island_counts=counts,
                   island_areas=areas, island_owner=owner)

    def subset(self, index: np.ndarray) -> Statistics:
        """The statistics of the images ``index`` (in that order)."""
        index = np.asarray(index, dtype=int)
        new_of_old = np.full(self.n, -1)
        new_of_old[index] = np.arange(len(index))

        def pooled(values, owner):
            keep = new_of_old[owner] >= 0
            return values[keep], new_of_old[owner[keep]]

        chords, chord_owner = {}, {}
        for key in self.chords:
            chords[key], chord_owner[key] = pooled(self.chords[key], self.chord_owner[key])
        areas, owner = pooled(self.island_areas, self.island_owner)
        s2 = d.S2Curves(self.s2.r, self.s2.radial[index], self.s2.x[index], self.s2.y[index])
        return Statistics(n=len(index), phi=self.phi[index], s2=s2, chords=chords,
                          chord_owner=chord_owner, perimeter=self.perimeter[index],
                          island_counts=self.island_counts[index], island_areas=areas,
                          island_owner=owner)

    def mean_curve(self, direction: str) -> np.ndarray:
        return getattr(self.s2, direction).mean(axis=0)

    def chord_sums(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Per image: total length and number of the chords ``key``."""
        if key not in self._cache:
            owner = self.chord_owner[key]
            self._cache[key] = (np.bincount(owner, weights=self.chords[key], minlength=self.n),
                                np.bincount(owner, minlength=self.n).astype(float))
        return self._cache[key]

    @cached_property
    def island_order(self) -> np.ndarray:
        return np.argsort(self.island_areas, kind="stable")


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else float("nan")


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float | np.ndarray:
    total = weights.sum()
    return weights @ values / total if total > 0 else float("nan")


def _weighted_median(stats: Statistics, weights: np.ndarray) -> float:
    """Median of the pooled island areas, each island counted as often as its image
    (the median of the multiset a resample with these counts would pool)."""
    order = stats.island_order
    counts = weights[stats.island_owner[order]]
    total = counts.sum()
    if total <= 0:
        return float("nan")
    cumulative = np.cumsum(counts)
    areas = stats.island_areas[order]
    low = areas[np.searchsorted(cumulative, (total - 1) // 2 + 1)]
    high = areas[np.searchsorted(cumulative, total // 2 + 1)]
    return 0.5 * float(low + high)


def weighted_distances(generated: Statistics, wg: np.ndarray, reference: Statistics,
                       wr: np.ndarray) -> dict[str, float]:
    """Distances between two weighted image sets (weights: how often each image counts;
    generated minus reference where signed)."""
    phi_ref = float(_weighted_mean(reference.phi, wr))
    scale = max(phi_ref * (1.0 - phi_ref), 1e-12)
    out = {
        "phase_fraction_difference": float(_weighted_mean(generated.phi, wg)) - phi_ref,
        "phase_fraction_wasserstein": float(wasserstein_distance(generated.phi, reference.phi,
                                                                 wg, wr)),
    }
    for direction in ("radial", "x", "y"):
        diff = _weighted_mean(getattr(generated.s2, direction), wg) - \
            _weighted_mean(getattr(reference.s2, direction), wr)
        out[f"s2_nrmse_{direction}"] = float(np.sqrt(np.mean(diff**2)) / scale)
    for key in generated.chords:
        means = []
        for stats, w in ((generated, wg), (reference, wr)):
            total, count = stats.chord_sums(key)
            means.append(w @ total / (w @ count) if w @ count > 0 else float("nan"))
        out[f"mean_chord_{key}_difference"] = float(means[0] - means[1])
    out["island_area_median_difference"] = _weighted_median(generated, wg) - \
        _weighted_median(reference, wr)
    out["specific_perimeter_difference"] = float(_weighted_mean(generated.perimeter, wg)) - \
        float(_weighted_mean(reference.perimeter, wr))
    return out


def distances(generated: Statistics, reference: Statistics) -> dict[str, float]:
    """Distances between two sets of descriptors (generated minus reference where signed)."""
    return weighted_distances(generated, np.ones(generated.n), reference, np.ones(reference.n))


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


def reconstruction_metrics(probabilities: np.ndarray, truth: np.ndarray,
                           bce_per_image: np.ndarray | None = None) -> dict[str, float]:
    """BCE per pixel (nats), pixel accuracy and IoU of phase 1 of reconstructions thresholded at
    0.5. ``bce_per_image``: the BCE per pixel of each image computed from the decoder's fp32
    logits (what the sample stage stores); without it, from the probabilities, where float16
    storage clips values above 0.99976."""
    t = truth.astype(bool)
    if bce_per_image is not None:
        bce = float(np.mean(bce_per_image))
    else:
        p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
        bce = float(-np.mean(np.where(t, np.log(p), np.log1p(-p))))
    binary = probabilities > 0.5
    return {"bce_per_pixel": bce, "pixel_accuracy": float(np.mean(binary == t)),
            "iou": float(iou(binary, t).mean()), "iou_pooled": pooled_iou(binary, t)}


UNSEEDED_MODES = ("prior", "aggregate", "mixture", "field")
NOVELTY_REFERENCE_IMAGES = 500


def dihedral(images: np.ndarray) -> np.ndarray:
    """The 8 rotations and reflections of each square image, (8, N, H, W) (4 of them, the ones
    that keep the shape, for non-square images)."""
    turns = [images, images[:, ::-1], images[:, :, ::-1], images[:, ::-1, ::-1]]
    if images.shape[1] == images.shape[2]:
        swapped = np.swapaxes(images, 1, 2)
        turns += [swapped, swapped[:, ::-1], swapped[:, :, ::-1], swapped[:, ::-1, ::-1]]
    return np.stack(turns)


def nearest_iou(queries: np.ndarray, library: np.ndarray, batch: int = 4096) -> np.ndarray:
    """For each binary query image, the highest IoU of phase 1 with any library image under
    any of the dihedral transforms (1 where both are empty). Intersections by matrix products
    of the {0, 1} pixels (exact in float32 up to 2^24 pixels)."""
    import torch

    turned = dihedral(np.asarray(queries, bool))
    n_turns, n = turned.shape[:2]
    q = torch.from_numpy(turned.reshape(n_turns * n, -1).astype(np.float32))
    q_area = q.sum(1, keepdim=True)
    best = torch.zeros(n_turns * n)
    for start in range(0, len(library), batch):
        lib = torch.from_numpy(np.asarray(library[start:start + batch], bool)
                               .reshape(-1, q.shape[1]).astype(np.float32))
        inter = q @ lib.T
        union = q_area + lib.sum(1)[None, :] - inter
        scores = torch.where(union > 0, inter / union.clamp(min=1), torch.ones(()))
        best = torch.maximum(best, scores.max(1).values)
    return best.reshape(n_turns, n).max(0).values.double().numpy()


def novelty(generated: np.ndarray, reference_best: np.ndarray, library: np.ndarray
            ) -> dict[str, float]:
    """How close the generated images come to the training images, against how close held-out
    real images come (``reference_best``: their :func:`nearest_iou`): the fraction of generated
    images nearer a training image than 95% of the real ones are (a copy of the training set
    scores 1, a generator as novel as real data about 0.05)."""
    best = nearest_iou(generated, library)
    threshold = float(np.percentile(reference_best, 95.0))
    return {"median_best_iou": float(np.median(best)),
            "reference_median_best_iou": float(np.median(reference_best)),
            "threshold_best_iou": threshold,
            "fraction_closer": float(np.mean(best > threshold)),
            "reference_fraction_closer": float(np.mean(reference_best > threshold))}


@dataclass
class Seeds:
    """Where the images of a seeded mode came from: ``cluster`` (n_images,) numbers the source
    draw of each image; ``sources`` (n_clusters, k) the real images of each draw (k = 2 for an
    interpolation midpoint)."""

    cluster: np.ndarray
    sources: np.ndarray

    @classmethod
    def per_image(cls, sources: np.ndarray, draws: int = 1) -> Seeds:
        """``draws`` consecutive images per source image."""
        sources = np.asarray(sources).reshape(len(sources), -1)
        return cls(np.repeat(np.arange(len(sources)), draws), sources)

    def all_sources(self) -> np.ndarray:
        return np.unique(self.sources)


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    reference: Statistics
    floor_set: Statistics
    modes: dict[str, Statistics]


def reference_half(n: int, groups: np.ndarray | None, exclude: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Indices of a random half of the images not in ``exclude``; whole groups (files,
    volumes) where the candidates come from two or more groups."""
    candidates = np.setdiff1d(np.arange(n), exclude)
    rng_order = rng.permutation(candidates)
    if groups is not None and len(np.unique(groups[candidates])) >= 2:
        labels = rng.permutation(np.unique(groups[candidates]))
        chosen, size = [], 0
        for label in labels:
            members = candidates[groups[candidates] == label]
            if size and size + len(members) / 2 > len(candidates) / 2:
                continue
            chosen.append(members)
            size += len(members)
        return np.sort(np.concatenate(chosen))
    return np.sort(rng_order[:len(candidates) // 2])


def _medians_and_floor(generated_d: list[dict[str, float]], floor_d: list[dict[str, float]],
                       rng: np.random.Generator, n_bootstrap: int) -> dict[str, Any]:
    picks = rng.integers(0, len(generated_d), (n_bootstrap, len(generated_d)))
    out: dict[str, Any] = {"distance": {}, "interval": {}, "floor": {}, "floor_p95": {},
                           "upper": {}}
    for key in generated_d[0]:
        signed = np.array([v[key] for v in generated_d])
        medians = np.nanmedian(np.abs(signed)[picks], axis=1)
        out["distance"][key] = float(np.nanmedian(signed))
        out["interval"][key] = [float(np.nanpercentile(medians, q)) for q in INTERVAL]
        out["upper"][key] = out["interval"][key][1]
        floor = np.abs([v[key] for v in floor_d])
        out["floor"][key] = float(np.nanmedian(floor))
        out["floor_p95"][key] = float(np.nanpercentile(floor, 95.0))
    return out


def compare(generated: Statistics, real: Statistics, halves: list[np.ndarray],
            rng: np.random.Generator, seeds: Seeds | None = None,
            n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Distances of a generated set to each reference half, the floor distribution over the
    same halves, the bootstrap interval of the median distance and the verdict per descriptor
    (see the module docstring)."""
    generated_d, floor_d = [], []
    for half in halves:
        wr = np.zeros(real.n)
        wr[half] = 1.0
        outside = np.ones(real.n, bool)
        outside[half] = False
        if seeds is None:  # real images outside the half, as many as the generated set
            rest = np.flatnonzero(outside)
            wf = np.zeros(real.n)
            wf[rng.choice(rest, min(generated.n, len(rest)), replace=False)] = 1.0
            wg = np.ones(generated.n)
        else:  # the draws whose sources lie outside the half, and those sources
            usable = outside[seeds.sources].all(axis=1)
            wg = usable[seeds.cluster].astype(float)
            wf = np.zeros(real.n)
            np.add.at(wf, seeds.sources[usable].ravel(), 1.0)
        if wg.sum() == 0 or wf.sum() == 0:  # every draw's source is in this half
            continue
        generated_d.append(weighted_distances(generated, wg, real, wr))
        floor_d.append(weighted_distances(real, wf, real, wr))
    if not generated_d:
        raise MicrovaeError("a seeded mode has no draw whose source images lie outside a "
                            "reference half: too few real test images")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a descriptor of an empty set is NaN
        out = _medians_and_floor(generated_d, floor_d, rng, n_bootstrap)
    within = {k: bool(out["upper"][k] <= out["floor_p95"][k]) for k in VERDICT_KEYS}
    count = sum(within.values())
    out.update(within_floor=within, n_within=count, n_halves=len(generated_d),
               verdict=f"{count} of {len(VERDICT_KEYS)} descriptors within the floor")
    return out


def evaluate_sets(real: np.ndarray, generated: dict[str, np.ndarray], seed: int = 0,
                  seeds: dict[str, Seeds] | None = None, groups: np.ndarray | None = None,
                  n_halves: int = N_HALVES, n_bootstrap: int = N_BOOTSTRAP,
                  train: np.ndarray | None = None) -> Evaluation:
    """Compare every generated set (probabilities) with the real images (binary).

    ``seeds`` (mode -> :class:`Seeds`, indices into ``real``) names the real images each
    seeded mode started from; the reference halves are drawn from the other images. A
    ``reconstruction`` set (one image per real image, in order) is seeded by its own images.
    ``groups`` (one label per real image: its file or volume) keeps the reference halves to
    whole groups where there are several. With ``train`` (the training images), the unseeded
    modes also get their :func:`novelty` against held-out test images.
    """
    if len(real) < 4:
        raise MicrovaeError(f"evaluation needs at least 4 real test images, got {len(real)}")
    seeds = dict(seeds or {})
    if "reconstruction" in generated and "reconstruction" not in seeds:
        if len(generated["reconstruction"]) != len(real):
            raise MicrovaeError(f"{len(generated['reconstruction'])} reconstructions for "
                                f"{len(real)} real test images: the samples were made from "
                                "another data set or split")
        seeds["reconstruction"] = Seeds.per_image(np.arange(len(real)))
    for name, mode_seeds in seeds.items():
        if mode_seeds.sources.size and mode_seeds.sources.max() >= len(real):
            raise MicrovaeError(f"mode {name} started from real image {mode_seeds.sources.max()}, "
                                f"but the test set has {len(real)}: the samples were made from "
                                "another data set or split")
    rng = np.random.default_rng(seed)
    exclude = np.unique(np.concatenate(
        [s.all_sources() for name, s in seeds.items() if name != "reconstruction"] or
        [np.zeros(0, int)]))
    n_seed_images = len(exclude)
    if len(real) - len(exclude) < len(real) / 2:
        # A small test set: the sources cover most of it. The halves are drawn from all images
        # and each seeded mode is compared, per half, by its draws whose sources lie outside.
        exclude = np.zeros(0, int)
    all_real = Statistics.of(real)
    halves = [reference_half(len(real), groups, exclude, rng) for _ in range(n_halves)]
    reference = halves[0]
    pool = np.setdiff1d(np.arange(len(real)), reference)
    metrics: dict[str, Any] = {"n_real": len(real), "n_real_reference": len(reference),
                               "n_reference_halves": n_halves, "n_bootstrap": n_bootstrap,
                               "n_seed_images": n_seed_images,
                               "sources_kept_out_of_reference": bool(len(exclude)),
                               "real": summary(all_real.subset(reference)), "modes": {},
                               "verdict_keys": list(VERDICT_KEYS),
                               "interval_percentiles": list(INTERVAL)}
    modes: dict[str, Statistics] = {}
    reference_best = None
    if train is not None and any(m in generated for m in UNSEEDED_MODES):
        held_out = np.sort(rng.permutation(len(real))[:NOVELTY_REFERENCE_IMAGES])
        reference_best = nearest_iou(real[held_out], train)
    for name, probabilities in generated.items():
        binary = (probabilities > 0.5).astype(np.uint8)
        stats = Statistics.of(binary)
        modes[name] = stats
        metrics["modes"][name] = {
            "n_images": len(binary), "summary": summary(stats),
            **compare(stats, all_real, halves, rng, seeds.get(name), n_bootstrap),
            # Binarising at 0.5 against Bernoulli sampling of the same probabilities:
            "binarisation_bias": float(binary.mean() - probabilities.mean()),
        }
        if reference_best is not None and name in UNSEEDED_MODES:
            metrics["modes"][name]["novelty"] = novelty(binary, reference_best, train)
        if name in seeds:
            source_phi = float(all_real.phi[seeds[name].all_sources()].mean())
            metrics["modes"][name]["source_phase_fraction"] = source_phi
            metrics["modes"][name]["phase_fraction_difference_to_sources"] = \
                float(stats.phi.mean()) - source_phi
    return Evaluation(metrics, all_real.subset(reference), all_real.subset(pool), modes)


def periodic_s2_nrmse(images: np.ndarray) -> float:
    """NRMSE (as the distances: over phi (1 - phi)) between the mean radial S2 of binary
    images computed with periodic boundaries and without: near 0 where the images are periodic
    and stationary (pairs across the edges look like pairs inside)."""
    periodic = d.two_point_correlation(images, periodic=True).radial.mean(0)
    plain = d.two_point_correlation(images).radial.mean(0)
    phi = float(np.mean(images))
    return float(np.sqrt(np.mean((periodic - plain) ** 2)) / max(phi * (1 - phi), 1e-12))


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
                "island_area_median_difference", "specific_perimeter_difference")


def summary_rows(metrics_of_sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per latent size x mode (from the metrics of each latent size): each distance
    with the upper end of its interval, the floor's median and 95th percentile, the verdict per
    descriptor and their count, and the reconstruction quality."""
    rows = []
    for metrics in metrics_of_sizes:
        recon = metrics.get("reconstruction", {})
        for mode, values in metrics["modes"].items():
            real_phi = values.get("real_phase_fraction",
                                  metrics["real"].get("phase_fraction_mean", float("nan")))
            row: dict[str, Any] = {"latent": metrics["latent_size"], "mode": mode,
                                   "size": values.get("size", metrics.get("image_size", "")),
                                   "n_images": values["n_images"],
                                   "phase_fraction": values["summary"]["phase_fraction_mean"],
                                   "real_phase_fraction": real_phi,
                                   "source_phase_fraction": values.get("source_phase_fraction",
                                                                       float("nan")),
                                   "binarisation_bias": values["binarisation_bias"],
                                   "n_within_floor": values["n_within"],
                                   "verdict": values["verdict"]}
            for key in SUMMARY_KEYS:
                row[key] = values["distance"][key]
                row[f"upper_{key}"] = values["upper"][key]
                row[f"floor_{key}"] = values["floor"][key]
                row[f"floor_p95_{key}"] = values["floor_p95"][key]
                if key in VERDICT_KEYS:
                    row[f"within_{key}"] = values["within_floor"][key]
            for key, value in values.get("novelty", {}).items():
                row[f"novelty_{key}"] = value
            row["recon_iou"] = recon.get("iou", float("nan"))
            row["recon_bce_per_pixel"] = recon.get("bce_per_pixel", float("nan"))
            row["recon_accuracy"] = recon.get("pixel_accuracy", float("nan"))
            rows.append(row)
    rows.sort(key=lambda r: (r["latent"], str(r["size"]).zfill(6), r["mode"]))
    return rows
