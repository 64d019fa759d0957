"""The judge: generated against real microstructures, descriptor by descriptor, each against a
real-vs-real floor measured between independent real sets.

**Descriptors** (:data:`DESCRIPTORS`). Each image contributes a row of additive sufficient
statistics (:class:`Features`); a set's descriptors are functions of weighted sums of rows, so a
subset, a resample or a thousand of them cost one matrix product. Phase fraction (W1 between the
per-image distributions), S2 as the scaled autocovariance (S2 - phi^2) / (phi - phi^2) (its
shape, free of the phase fraction), the lineal path L(r) / L(0) and the connectedness
C2(r) / S2(r) along x and y, the Euler characteristic and the interface length per unit area,
and W1 between the full distributions of chord lengths (phase 1 along x and along y, phase 0)
and of island areas (in octaves).

**The null.** The real reference images are grouped into *independent blocks* (files or
volumes, or boxes of them separated by a gap: :func:`microvae.dataset.independent_blocks`). A
draw k puts a random half of the blocks into the reference A_k and the rest into B_k; the floor
is f_k = d(B_k, A_k): how far two independent real sets lie apart. A generated set is scored in
the same draws, g_k = d(G*_k, A_k), G*_k a fresh bootstrap resample of its images (so that its
own sampling noise counts); a seeded mode (images made from real test images) uses only the
images whose sources lie in B_k, against the floor of those source images. All sets of an
evaluation share the draws.

**Verdict.** The exceedance of a descriptor is the share of draws in which the generated set
lies farther from A_k than the real B_k does (paired, the same A_k): about one half for a set
that is as close as independent real data, 1 for a set that is always farther. A descriptor is
within the floor when its exceedance is at most 1 - alpha / D (D descriptors judged; alpha =
:data:`ALPHA`), so that an independent real set passes all of them together in about 1 - alpha
of cases (Bonferroni). Reported beside it: the median distance as a multiple of the floor's 95th
percentile. A descriptor that a finishing step sets (the phase fraction of a set cut at a
threshold calibrated to the training phase fraction) is reported as *calibrated* and left out of
the verdict.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import descriptors as d
from .descriptors import iou, pooled_iou
from .errors import MicrovaeError

# name -> (unit, what it compares)
DESCRIPTORS = {
    "phase_fraction": ("1", "W1 between the per-image phase fractions"),
    "s2": ("1", "RMS difference of the scaled autocovariance (S2 - phi^2) / (phi - phi^2), radial"),
    "lineal_path": ("1", "RMS difference of the lineal path L(r) / L(0) of phase 1, x and y"),
    "cluster": ("1", "RMS difference of the connectedness C2(r) / S2(r) of phase 1, x and y"),
    "euler": ("1/px^2", "difference of the Euler characteristic of phase 1 per unit area"),
    "perimeter": ("1/px", "difference of the interface length per unit area"),
    "chord_1x": ("px", "W1 between the chord lengths of phase 1 along x"),
    "chord_1y": ("px", "W1 between the chord lengths of phase 1 along y"),
    "chord_0": ("px", "W1 between the chord lengths of phase 0 (x and y)"),
    "island_area": ("octaves", "W1 between the log2 areas of the islands of phase 1"),
}
ALPHA = 0.05
N_DRAWS = 400
PHI_BINS = 512
ISLAND_BINS_PER_OCTAVE = 8
INTERVAL = (5.0, 95.0)
# The roles of the sets an evaluation compares: the model's modes, the baselines every
# generator must beat, and independent real data (what a perfect generator reaches).
ROLES = ("generator", "baseline", "ceiling")


@dataclass(frozen=True)
class Layout:
    """The columns of the feature rows of images of one shape."""

    height: int
    width: int

    @property
    def r_max(self) -> int:
        return min(self.height, self.width) // 2

    @property
    def chord_bins(self) -> int:  # lengths 0 .. the longer side
        return max(self.height, self.width) + 1

    @property
    def island_bins(self) -> int:
        return int(np.ceil(np.log2(self.height * self.width) * ISLAND_BINS_PER_OCTAVE)) + 1

    @property
    def columns(self) -> dict[str, slice]:
        r, chords = self.r_max + 1, self.chord_bins
        widths = {"count": 1, "phi": 1, "phi2": 1, "phi_hist": PHI_BINS, "s2_radial": r,
                  "s2_x": r, "s2_y": r, "c2_x": r, "c2_y": r, "lp_x": r, "lp_y": r,
                  "chord_1x": chords, "chord_1y": chords, "chord_0": chords, "islands": 1,
                  "island_hist": self.island_bins, "perimeter": 1, "euler": 1}
        out, start = {}, 0
        for name, width in widths.items():
            out[name] = slice(start, start + width)
            start += width
        return out

    @property
    def n_columns(self) -> int:
        return list(self.columns.values())[-1].stop


def _histogram_rows(values: np.ndarray, owner: np.ndarray, n: int, bins: int) -> np.ndarray:
    counts = np.bincount(owner * bins + values, minlength=n * bins)
    return counts.reshape(n, bins).astype(np.float64)


@dataclass
class Features:
    """Per-image sufficient statistics of a set of binary images: ``rows`` (N, F) in the
    columns of ``layout``; any weighted sum of rows gives the set's descriptors
    (:func:`set_descriptors`)."""

    rows: np.ndarray
    layout: Layout

    @property
    def n(self) -> int:
        return len(self.rows)

    @classmethod
    def of(cls, images: np.ndarray, batch: int = 2048) -> Features:
        images = np.asarray(images)
        if images.ndim != 3 or len(images) == 0:
            raise MicrovaeError(f"descriptors need a stack of 2-D images, got shape {images.shape}")
        layout = Layout(*images.shape[1:])
        rows = np.concatenate([cls._rows((images[i:i + batch] > 0.5).astype(np.uint8), layout)
                               for i in range(0, len(images), batch)])
        return cls(rows, layout)

    @staticmethod
    def _rows(images: np.ndarray, layout: Layout) -> np.ndarray:
        n = len(images)
        out = np.zeros((n, layout.n_columns))
        col = layout.columns
        phi = d.phase_fraction(images)
        out[:, col["count"]] = 1.0
        out[:, col["phi"]] = phi[:, None]
        out[:, col["phi2"]] = phi[:, None] ** 2
        level = np.minimum((phi * PHI_BINS).astype(int), PHI_BINS - 1)
        out[np.arange(n), col["phi_hist"].start + level] = 1.0
        s2 = d.two_point_correlation(images)
        out[:, col["s2_radial"]], out[:, col["s2_x"]], out[:, col["s2_y"]] = s2.radial, s2.x, s2.y
        labels = d.cluster_labels(images)
        for axis in "xy":
            out[:, col[f"c2_{axis}"]] = d.two_point_cluster(images, axis, labels)
            out[:, col[f"lp_{axis}"]] = d.lineal_path(images, 1, axis)
        for phase, axis in ((1, "x"), (1, "y"), (0, "x"), (0, "y")):
            lengths, owner = d.chord_lengths(images, phase, axis, with_owner=True)
            key = f"chord_{phase}{axis}" if phase == 1 else "chord_0"
            out[:, col[key]] += _histogram_rows(lengths, owner, n, layout.chord_bins)
        counts, areas, owner = d.islands(images, with_owner=True)
        out[:, col["islands"]] = counts[:, None]
        octave_bin = np.minimum((np.log2(areas) * ISLAND_BINS_PER_OCTAVE).astype(int),
                                layout.island_bins - 1)
        out[:, col["island_hist"]] = _histogram_rows(octave_bin, owner, n, layout.island_bins)
        out[:, col["perimeter"]] = d.specific_perimeter(images)[:, None]
        out[:, col["euler"]] = (d.euler_characteristic(images) / (layout.height * layout.width)
                                )[:, None]
        return out

    def sums(self, weights: np.ndarray) -> np.ndarray:
        """Weighted sums of the rows: weights (N,) or (K, N) -> (F,) or (K, F)."""
        return weights @ self.rows

    def subset(self, index: np.ndarray) -> Features:
        return Features(self.rows[np.asarray(index, int)], self.layout)


def _cdf(histograms: np.ndarray) -> np.ndarray:
    total = histograms.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.cumsum(histograms, -1) / np.where(total > 0, total, 1),
                        np.nan)


def set_descriptors(sums: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """The set-level descriptors of weighted sums of feature rows (F,) or (K, F): curves over
    r = 0 .. r_max, cumulative distributions, and means."""
    sums = np.atleast_2d(sums)
    col = layout.columns

    def take(name):
        block = sums[:, col[name]]
        return block[:, 0] if block.shape[1] == 1 else block

    count, phi, phi2 = take("count"), take("phi"), take("phi2")
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = phi - phi2
        out = {
            "phase_fraction": phi / count,
            "phase_fraction_std": np.sqrt(np.maximum(phi2 / count - (phi / count) ** 2, 0)),
            "phi_cdf": _cdf(take("phi_hist")),
            "s2": (take("s2_radial") - phi2[:, None]) / variance[:, None],
            "s2_raw": take("s2_radial") / count[:, None],
            "lineal_path": np.concatenate([take("lp_x"), take("lp_y")], 1) / phi[:, None],
            "cluster": np.concatenate([take("c2_x") / take("s2_x"), take("c2_y") / take("s2_y")], 1),
            "euler": take("euler") / count,
            "perimeter": take("perimeter") / count,
            "islands_per_image": take("islands") / count,
        }
    lengths = np.arange(layout.chord_bins)
    for key in ("chord_1x", "chord_1y", "chord_0"):
        histogram = take(key)
        out[f"{key}_cdf"] = _cdf(histogram)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{key}_mean"] = histogram @ lengths / histogram.sum(1)
    out["island_cdf"] = _cdf(take("island_hist"))
    # the median island area from the octave histogram (the lower edge of its bin)
    median_bin = np.argmax(np.nan_to_num(out["island_cdf"], nan=0.0) >= 0.5, axis=1)
    out["island_area_median"] = np.where(np.isnan(out["island_cdf"][:, 0]), np.nan,
                                         2.0 ** (median_bin / ISLAND_BINS_PER_OCTAVE))
    return out


def _rms(a: np.ndarray, b: np.ndarray, r_max: int, curves: int = 1) -> np.ndarray:
    """RMS difference over the lags r >= 1 of ``curves`` curves of r_max + 1 points each."""
    keep = np.ones(curves * (r_max + 1), bool)
    keep[::r_max + 1] = False  # r = 0 is 1 by construction
    return np.sqrt(np.mean((a[:, keep] - b[:, keep]) ** 2, axis=1))


def descriptor_distances(generated: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                         layout: Layout) -> dict[str, np.ndarray]:
    """The distance of each descriptor (:data:`DESCRIPTORS`) between two sets of set-level
    descriptors (each (K,) or (K, ...)): non-negative, NaN where a set lacks the feature."""
    r = layout.r_max
    return {
        "phase_fraction": np.abs(generated["phi_cdf"] - reference["phi_cdf"]).sum(1) / PHI_BINS,
        "s2": _rms(generated["s2"], reference["s2"], r),
        "lineal_path": _rms(generated["lineal_path"], reference["lineal_path"], r, 2),
        "cluster": _rms(generated["cluster"], reference["cluster"], r, 2),
        "euler": np.abs(generated["euler"] - reference["euler"]),
        "perimeter": np.abs(generated["perimeter"] - reference["perimeter"]),
        **{key: np.abs(generated[f"{key}_cdf"] - reference[f"{key}_cdf"]).sum(1)
           for key in ("chord_1x", "chord_1y", "chord_0")},
        "island_area": np.abs(generated["island_cdf"] - reference["island_cdf"]).sum(1)
        / ISLAND_BINS_PER_OCTAVE,
    }


# Signed differences (generated minus reference) reported beside the distances.
DIFFERENCES = ("phase_fraction", "euler", "perimeter", "chord_1x_mean", "chord_1y_mean",
               "chord_0_mean", "island_area_median", "islands_per_image")


def summary(descriptors: dict[str, np.ndarray]) -> dict[str, float]:
    """Plain set-level values of one set (its descriptors of one weighting), for the tables."""
    return {"phase_fraction_mean": float(descriptors["phase_fraction"][0]),
            "phase_fraction_std": float(descriptors["phase_fraction_std"][0]),
            "specific_perimeter_mean": float(descriptors["perimeter"][0]),
            "euler_per_1000_px2": float(descriptors["euler"][0] * 1000),
            "islands_per_image": float(descriptors["islands_per_image"][0]),
            "island_area_median": float(descriptors["island_area_median"][0]),
            **{f"mean_{key}": float(descriptors[f"{key}_mean"][0])
               for key in ("chord_1x", "chord_1y", "chord_0")}}


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


@dataclass
class ScoredSet:
    """One set to judge: its features, its role (:data:`ROLES`), the real images it was made
    from (seeded modes) and the descriptors its finishing sets (left out of its verdict)."""

    features: Features
    role: str = "generator"
    seeds: Seeds | None = None
    calibrated: tuple[str, ...] = ()


@dataclass
class Draws:
    """The reference halves A_k and their complements B_k as weights over the real images."""

    reference: np.ndarray  # (K, N) 0/1
    complement: np.ndarray  # (K, N) 0/1
    n_blocks: int


def block_draws(blocks: np.ndarray, n_draws: int, rng: np.random.Generator) -> Draws:
    """``n_draws`` random halves of the blocks (labels >= 0; -1 = in no block)."""
    labels = np.unique(blocks[blocks >= 0])
    if len(labels) < 2:
        raise MicrovaeError(f"the real reference holds {len(labels)} independent block(s): the "
                            "floor needs at least 2 (more files or volumes, or a larger test "
                            "region)")
    index = np.searchsorted(labels, np.where(blocks >= 0, blocks, labels[0]))
    inside = blocks >= 0
    reference = np.zeros((n_draws, len(blocks)))
    complement = np.zeros((n_draws, len(blocks)))
    half = len(labels) // 2
    for k in range(n_draws):
        in_reference = np.zeros(len(labels), bool)
        in_reference[rng.permutation(len(labels))[:half]] = True
        reference[k] = inside & in_reference[index]
        complement[k] = inside & ~in_reference[index]
    return Draws(reference, complement, len(labels))


def _bootstrap(n: int, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_draws).astype(np.float64)


def _stats(values: np.ndarray) -> tuple[float, list[float], float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return float("nan"), [float("nan")] * 2, float("nan")
    return (float(np.median(finite)), [float(np.percentile(finite, q)) for q in INTERVAL],
            float(np.percentile(finite, 95.0)))


def exceedance(generated: np.ndarray, floor: np.ndarray) -> float:
    """Share of draws in which the generated set lies farther from the reference than the real
    complement (a generated NaN, a feature the set lacks, counts as farther; draws where the
    floor is NaN are left out)."""
    usable = np.isfinite(floor)
    if not usable.any():
        return float("nan")
    farther = np.where(np.isfinite(generated), generated > floor, True)
    return float(np.mean(farther[usable]))


def threshold(n_judged: int, alpha: float = ALPHA) -> float:
    """The largest exceedance within the floor when ``n_judged`` descriptors are judged."""
    return 1.0 - alpha / max(n_judged, 1)


def _score(g: dict[str, np.ndarray], f: dict[str, np.ndarray], calibrated: tuple[str, ...],
           alpha: float) -> dict[str, Any]:
    judged = [k for k in DESCRIPTORS if k not in calibrated and np.isfinite(f[k]).any()]
    limit = threshold(len(judged), alpha)
    out: dict[str, Any] = {"distance": {}, "distance_interval": {}, "floor": {},
                           "floor_p95": {}, "floor_multiple": {}, "exceedance": {},
                           "within_floor": {}}
    for key in DESCRIPTORS:
        out["distance"][key], out["distance_interval"][key], _ = _stats(g[key])
        out["floor"][key], _, out["floor_p95"][key] = _stats(f[key])
        p95 = out["floor_p95"][key]
        out["floor_multiple"][key] = out["distance"][key] / p95 if p95 > 0 else float("nan")
        out["exceedance"][key] = exceedance(g[key], f[key])
        if key in judged:
            out["within_floor"][key] = bool(out["exceedance"][key] <= limit)
    count = sum(out["within_floor"].values())
    out.update(judged=judged, calibrated=[k for k in calibrated if k in DESCRIPTORS],
               exceedance_limit=limit, n_within=count, n_judged=len(judged),
               verdict=f"{count} of {len(judged)} descriptors within the floor")
    return out


def judge(reference: Features, blocks: np.ndarray, sets: dict[str, ScoredSet],
          rng: np.random.Generator, n_draws: int = N_DRAWS, alpha: float = ALPHA
          ) -> dict[str, Any]:
    """Score every set against the real reference (see the module docstring). Returns the
    metrics of each set and of the floor."""
    for name, item in sets.items():
        if item.features.layout != reference.layout:
            raise MicrovaeError(f"{name}: images of {item.features.layout.height}x"
                                f"{item.features.layout.width} px, the real reference has "
                                f"{reference.layout.height}x{reference.layout.width} px")
        if item.role not in ROLES:
            raise MicrovaeError(f"{name}: unknown role {item.role!r}; use {list(ROLES)}")
    layout = reference.layout
    draws = block_draws(blocks, n_draws, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference_d = set_descriptors(reference.sums(draws.reference), layout)
        floor = descriptor_distances(set_descriptors(reference.sums(draws.complement), layout),
                                     reference_d, layout)
        real_whole = set_descriptors(reference.sums((blocks >= 0).astype(float)), layout)
        out: dict[str, Any] = {"n_draws": n_draws, "n_blocks": draws.n_blocks,
                               "n_real": int(np.count_nonzero(blocks >= 0)),
                               "alpha": alpha, "sets": {}}
        for name, item in sets.items():
            weights = _bootstrap(item.features.n, n_draws, rng)
            set_floor = floor
            if item.seeds is not None:
                # draws whose sources all lie outside A_k, against those sources
                outside = draws.reference[:, item.seeds.sources] == 0  # (K, clusters, k)
                usable = outside.all(axis=2)
                weights = weights * usable[:, item.seeds.cluster]
                source_weights = np.zeros_like(draws.reference)
                for j in range(item.seeds.sources.shape[1]):
                    np.add.at(source_weights.T, item.seeds.sources[:, j],
                              usable.T.astype(float))
                empty = weights.sum(1) == 0
                weights[empty] = np.nan
                source_weights[empty] = np.nan
                set_floor = descriptor_distances(
                    set_descriptors(reference.sums(np.nan_to_num(source_weights)), layout),
                    reference_d, layout)
                for key in set_floor:
                    set_floor[key][empty] = np.nan
            generated = descriptor_distances(
                set_descriptors(item.features.sums(np.nan_to_num(weights)), layout),
                reference_d, layout)
            if item.seeds is not None:
                for key in generated:
                    generated[key][np.isnan(weights[:, 0])] = np.nan
            whole = set_descriptors(item.features.sums(np.ones(item.features.n)), layout)
            out["sets"][name] = {
                "role": item.role, "n_images": item.features.n,
                **_score(generated, set_floor, item.calibrated, alpha),
                "difference": {k: float(whole[k][0] - real_whole[k][0]) for k in DIFFERENCES},
                "summary": summary(whole)}
        out["real"] = summary(real_whole)
    return out


def set_curves(features: Features, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The curves and distributions of one set (all images, or weighted) for figures and
    tables: r, scaled autocovariance, S2, lineal path and connectedness along x and y, the
    cumulative chord-length and island-area distributions."""
    layout = features.layout
    weights = np.ones(features.n) if weights is None else weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = {k: v[0] for k, v in set_descriptors(features.sums(weights), layout).items()}
    r = layout.r_max + 1
    return {"r": np.arange(r), "s2": values["s2"], "s2_raw": values["s2_raw"],
            "lineal_path_x": values["lineal_path"][:r], "lineal_path_y": values["lineal_path"][r:],
            "cluster_x": values["cluster"][:r], "cluster_y": values["cluster"][r:],
            "chord_1x_cdf": values["chord_1x_cdf"], "chord_1y_cdf": values["chord_1y_cdf"],
            "chord_0_cdf": values["chord_0_cdf"], "island_cdf": values["island_cdf"],
            "phi_cdf": values["phi_cdf"]}


def per_image_phase_fraction(features: Features) -> np.ndarray:
    return features.rows[:, features.layout.columns["phi"]][:, 0]


def periodic_s2_nrmse(images: np.ndarray) -> float:
    """NRMSE (over phi (1 - phi)) between the mean radial S2 of binary images computed with
    periodic boundaries and without: near 0 where the images are periodic and stationary
    (pairs across the edges look like pairs inside)."""
    periodic = d.two_point_correlation(images, periodic=True).radial.mean(0)
    plain = d.two_point_correlation(images).radial.mean(0)
    phi = float(np.mean(images))
    return float(np.sqrt(np.mean((periodic - plain) ** 2)) / max(phi * (1 - phi), 1e-12))


@dataclass
class Evaluation:
    """The metrics of a judged evaluation and the features behind them (for figures)."""

    metrics: dict[str, Any]
    reference: Features
    sets: dict[str, Features] = field(default_factory=dict)


# --- the summary table -------------------------------------------------------------------------

def conditioning_metrics(maps: np.ndarray, target, probabilities: np.ndarray | None = None,
                         bands: int = 8) -> dict[str, Any]:
    """How closely phase maps (N, H, W) generated at a target phase fraction meet it: the
    achieved mean and spread over the images, and (``probabilities``) the fraction of pixels
    above 0.5 and the mean probability, measures that no finishing threshold touches. A target
    map (h, w) (graded) is compared per vertical band: the width cut into ``bands`` bands, the
    target's mean over each band (the map resampled to the images' columns) against the
    achieved mean over each band of every image."""
    maps = np.asarray(maps, np.float64)
    per_image = maps.mean((1, 2))
    out: dict[str, Any] = {"n_images": int(len(maps)), "phase_fraction_mean": float(per_image.mean()),
                           "phase_fraction_sd": float(per_image.std())}
    if probabilities is not None:
        out["phase_fraction_at_0.5"] = float((probabilities > 0.5).mean())
        out["mean_probability"] = float(np.mean(probabilities, dtype=np.float64))
    target = np.asarray(target, np.float64)
    if target.ndim == 0:
        out["target"] = float(target)
        out["error"] = out["phase_fraction_mean"] - float(target)
        return out
    width = maps.shape[-1]
    columns = np.interp((np.arange(width) + 0.5) / width,
                        (np.arange(target.shape[1]) + 0.5) / target.shape[1], target.mean(0))
    edges = np.linspace(0, width, bands + 1).round().astype(int)
    target_bands = [float(columns[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]
    achieved_bands = [float(maps[:, :, a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]
    errors = np.subtract(achieved_bands, target_bands)
    out.update(target_bands=target_bands, achieved_bands=achieved_bands,
               max_band_error=float(np.abs(errors).max()),
               target=float(columns.mean()), error=out["phase_fraction_mean"] - float(columns.mean()))
    return out


def summary_rows(metrics_of_sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per latent size x set (from the metrics of each latent size): the role, the
    verdict, per descriptor the median distance, its multiple of the floor's 95th percentile,
    the exceedance and whether it is within the floor, novelty, and the reconstruction quality."""
    rows = []
    for metrics in metrics_of_sizes:
        recon = metrics.get("reconstruction", {})
        selection = metrics.get("selection", {})
        for mode, values in metrics["sets"].items():
            row: dict[str, Any] = {
                "latent": metrics.get("latent_size", ""), "set": mode, "role": values["role"],
                "size": values.get("size", metrics.get("image_size", "")),
                "n_images": values["n_images"],
                "phase_fraction": values["summary"]["phase_fraction_mean"],
                "real_phase_fraction": (values["real_phase_fraction"]
                                        if "real_phase_fraction" in values
                                        else metrics["real"]["phase_fraction_mean"]),
                "finished": values.get("finished", ""),
                "calibrated": " ".join(values["calibrated"]),
                "n_within_floor": values["n_within"], "n_judged": values["n_judged"],
                "verdict": values["verdict"],
                "chosen_on_val": mode == selection.get("best_unseeded", "").removesuffix(
                    "@0.5"),
                "chosen_finishing": ("cut at 0.5" if selection.get("best_unseeded", "")
                                     .endswith("@0.5") else "finished")
                if mode == selection.get("best_unseeded", "").removesuffix("@0.5") else "",
                "chosen_test_verdict": selection.get("test", {}).get("verdict", "")
                if mode == selection.get("best_unseeded", "").removesuffix("@0.5") else "",
            }
            for key in DESCRIPTORS:
                row[key] = values["distance"][key]
                row[f"{key}_floor_p95"] = values["floor_p95"][key]
                row[f"{key}_floor_multiple"] = values["floor_multiple"][key]
                row[f"{key}_exceedance"] = values["exceedance"][key]
                row[f"{key}_within"] = values["within_floor"].get(key, "")
            for key, value in values.get("novelty", {}).items():
                row[f"novelty_{key}"] = value
            row["recon_iou"] = recon.get("iou", float("nan"))
            row["recon_bce_per_pixel"] = recon.get("bce_per_pixel", float("nan"))
            rows.append(row)
    rows.sort(key=lambda r: (str(r["latent"]).zfill(6), str(r["size"]).zfill(6),
                             ROLES.index(r["role"]), r["set"]))
    return rows
