"""Stages of the statistics: baselines (what every generator is judged beside), evaluate
(generated against real images, per latent size), evaluate_large, score (any generator's
files) and summarize (across latent sizes). They read the samples and the data set, call the
science of :mod:`microvae.evaluate`, :mod:`microvae.baselines` and :mod:`microvae.novelty`,
and write the metrics, tables and figures they are given.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import plots
from ..atomic import save_figure, write_json, write_text
from ..baselines import FieldBaseline, best_sigma, fit_field_baseline, training_crops
from ..crops import split_into_windows
from ..dataset import MIN_BLOCKS, evenly_spaced, independent_blocks
from ..descriptors import correlation_length
from ..errors import MicrovaeError
from ..evaluate import (
    DESCRIPTORS,
    Evaluation,
    Features,
    ScoredSet,
    Seeds,
    conditioning_metrics,
    judge,
    periodic_s2_nrmse,
    reconstruction_metrics,
    set_curves,
    summary_rows,
)
from ..h5io import (
    dataset_info,
    load_placement,
    load_split,
    load_training_regions,
    open_h5,
    read_json_attr,
    write_arrays,
)
from ..modes import UNSEEDED_MODES
from ..novelty import Library, nearest_iou
from ..sample import CALIBRATION_DRAWS, Finishing
from ..samplesfile import (
    RECONSTRUCTION_BCE,
    conditioned_keys,
    finish_key,
    finish_record,
    fit_key,
    judged_keys,
    large_keys,
    seed_indices,
    stack_maps,
    target_of,
)
from ..tables import columns_text, read_history, write_csv
from ..volumes import volume_descriptors
from . import (
    EVALUATION_FIGURES,
    describe_morphology,
    phase_maps,
    real_test_windows,
    segmentation_morphology,
)

log = logging.getLogger("microvae.stages.evaluate")

# Images of each set whose nearest training window is searched (the novelty statistics).
NOVELTY_IMAGES = 128
# Reconstructions judged as a generated set (evenly spaced over the test set; the IoU and BCE
# of the reconstruction use every test image).
RECONSTRUCTIONS_JUDGED = 2048
BASELINE_IMAGES = 500
ABLATION = "@0.5"  # the suffix of a set cut at 0.5 instead of finished


# --- the real data ---------------------------------------------------------------------------

@dataclass
class RealSet:
    """The real images of one split, their features and their independent blocks."""

    split: str
    images: np.ndarray
    features: Features
    blocks: np.ndarray
    info: dict[str, Any]


def block_labels(features: Features, placement: dict[str, np.ndarray | None], size: int,
                 what: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The independent blocks of real images (tiles or windows of ``size`` px) and how they
    were made: the gap between blocks is the correlation length of the images (the lag at which
    their scaled autocovariance falls below 0.1), or ``size`` where it does not within the
    images."""
    length = correlation_length(set_curves(features)["s2"])
    gap = int(length) if length is not None else int(size)
    origin = placement["origin"]
    if origin is None:
        raise MicrovaeError(f"{what}: the real images carry no origin (packed by an older "
                            "version): re-run pack")
    groups = placement["group"]
    corner = placement["corner"]
    if corner is None:  # older data sets: whole files only
        blocks = independent_blocks(origin, np.zeros((len(origin), 3), np.int64), size, gap,
                                    groups, min_blocks=1)
    else:
        blocks = independent_blocks(origin, corner, size, gap, groups)
    n_blocks = len(np.unique(blocks[blocks >= 0]))
    info = {"n_blocks": n_blocks, "gap_px": gap, "correlation_length_px": length,
            "n_images": int(len(blocks)), "n_in_blocks": int(np.count_nonzero(blocks >= 0)),
            "n_groups": int(len(np.unique(groups if groups is not None else origin[:, :2],
                                          axis=0)))}
    if n_blocks < MIN_BLOCKS:
        log.warning("%s: the floor rests on %d independent blocks of real images (%d wanted; "
                    "%d of the %d images lie in them): it is wide and known only roughly, so "
                    "sets pass it more easily than a floor between independent volumes; more "
                    "files or volumes in the split, or a larger test region, make it firmer",
                    what, n_blocks, MIN_BLOCKS, info["n_in_blocks"], info["n_images"])
    return blocks, info


def real_set(dataset: str | os.PathLike, split: str) -> RealSet:
    images = load_split(dataset, split)
    features = Features.of(images)
    blocks, info = block_labels(features, load_placement(dataset, split), images.shape[-1],
                                f"{dataset} ({split})")
    if info["n_blocks"] < 2:
        raise MicrovaeError(f"{dataset}: the {split} split holds {info['n_blocks']} independent "
                            f"block(s) of images (the correlation length is "
                            f"{info['correlation_length_px']} px): the real-vs-real floor needs "
                            f"two halves that share no structure; give the {split} split more "
                            "files or volumes, or a larger share of the image (split fractions)")
    return RealSet(split, images, features, blocks, info)


def heldout_split(dataset: str | os.PathLike, reference: str) -> str | None:
    """The split that serves as independent real data beside the reference split (val beside
    test); None where it is empty or the reference is not test (val is where choices are made:
    test data must not enter them)."""
    if reference != "test":
        return None
    counts = dataset_info(dataset).get("split_counts", {})
    return "val" if counts.get("val", 0) > 0 else None


# --- the baselines ---------------------------------------------------------------------------

def make_baselines(dataset: str | os.PathLike, out: str | os.PathLike,
                   figure: str | os.PathLike | None = None, n: int = BASELINE_IMAGES,
                   seed: int = 0, calibration_draws: int = CALIBRATION_DRAWS) -> dict[str, Any]:
    """``baselines.h5``: the baselines (:mod:`microvae.baselines`) fitted on the train split,
    ``n`` images each, finished like a model's unseeded sets; and the nearest training window
    of :data:`NOVELTY_IMAGES` images of each baseline and of the real test and val images (the
    references of the novelty statistics), which every evaluation of this data set shares."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    train = load_split(dataset, "train")
    regions = load_training_regions(dataset)
    if regions is None:
        raise MicrovaeError(f"{dataset}: holds no training regions (packed by an older version): "
                            "re-run pack")
    size = train.shape[-1]
    morphology = segmentation_morphology(dataset)
    grf = fit_field_baseline(evenly_spaced(train, 2000), morphology, rng,
                             calibration_draws=calibration_draws)
    arrays: dict[str, np.ndarray] = {
        "baseline_grf": grf.draw(n, size, rng),
        "baseline_copy": training_crops(*regions, n, size, generator, morphology),
        fit_key("baseline_grf", "sigma"): np.array(sorted(grf.fit_error)),
        fit_key("baseline_grf", "s2_error"): np.array([grf.fit_error[s]
                                                       for s in sorted(grf.fit_error)]),
    }
    for key, value in grf.finishing.record().items():
        arrays[finish_key("baseline_grf", key)] = value
    library = Library.of(*regions, size)
    for name in ("test", "val"):
        counts = dataset_info(dataset).get("split_counts", {})
        if counts.get(name, 0):
            arrays[f"novelty/{name}"] = nearest_iou(novelty_subset(load_split(dataset, name),
                                                                   rng), library)
    for name in ("baseline_grf", "baseline_copy"):
        arrays[f"novelty/{name}"] = nearest_iou(novelty_subset(arrays[name], rng), library)
    attrs = {"dataset": str(dataset), "seed": seed, "n": n, "sigma": grf.sigma,
             "morphology": describe_morphology(morphology), "library_windows": library.n_windows,
             "novelty_images": NOVELTY_IMAGES}
    write_arrays(out, arrays, attrs=attrs)
    log.info("baseline_grf: sigma %.2f px (fitted on the train split's scaled autocovariance), "
             "cut at %.3f, then %s; baseline_copy: %d random crops of the training regions; "
             "novelty references over %d training windows", grf.sigma, grf.finishing.threshold,
             describe_morphology(morphology), n, library.n_windows)
    if figure is not None:
        real = load_split(dataset, "test")
        save_figure(plots.image_grid(
            [list(evenly_spaced(real, 8)), list(arrays["baseline_grf"][:8]),
             list(arrays["baseline_copy"][:8])],
            row_labels=["real test", f"baseline_grf (sigma {grf.sigma:.1f} px)", "baseline_copy"],
            title="the baselines every generator is judged beside"), figure)
    return attrs


def novelty_subset(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """At most :data:`NOVELTY_IMAGES` images, a seeded random subset."""
    if len(images) <= NOVELTY_IMAGES:
        return images
    return images[np.sort(rng.choice(len(images), NOVELTY_IMAGES, replace=False))]


def read_baselines(path: str | os.PathLike, size: int) -> tuple[dict[str, np.ndarray],
                                                              dict[str, np.ndarray]]:
    """The baseline images and the stored nearest-window IoUs of a baselines file."""
    with open_h5(path, required=("baseline_grf", "baseline_copy")) as h5:
        images = {name: h5[name][()] for name in ("baseline_grf", "baseline_copy")}
        best = {name: h5["novelty"][name][()] for name in h5["novelty"]}
    if images["baseline_grf"].shape[-1] != size:
        raise MicrovaeError(f"{path}: baselines of {images['baseline_grf'].shape[-1]} px, the "
                            f"data set's images have {size} px: re-run the baselines rule")
    return images, best


def read_field_baseline(path: str | os.PathLike, morphology) -> FieldBaseline:
    """The field baseline that the baselines stage fitted (its sigma and finishing), to draw
    at other sizes without fitting it again."""
    sigma_key, error_key = fit_key("baseline_grf", "sigma"), fit_key("baseline_grf", "s2_error")
    with open_h5(path, required=(sigma_key, error_key)) as h5:
        errors = dict(zip(h5[sigma_key][()].tolist(), h5[error_key][()].tolist()))
        record = finish_record(h5, "baseline_grf")
    return FieldBaseline(float(best_sigma(errors)), Finishing.from_record(record, morphology),
                         errors)


def novelty_of(best: np.ndarray, reference_best: np.ndarray, library_windows: int
               ) -> dict[str, float | int]:
    """The novelty statistics of stored nearest-window IoUs (see :func:`novelty.novelty`)."""
    ref = reference_best[np.isfinite(reference_best)]
    gen = best[np.isfinite(best)]
    limit = float(np.percentile(ref, 95.0)) if len(ref) else float("nan")
    return {"n_images": int(len(best)), "n_near_empty": int(np.isnan(best).sum()),
            "share_near_empty": float(np.isnan(best).mean()),
            "median_best_iou": float(np.median(gen)) if len(gen) else float("nan"),
            "reference_median_best_iou": float(np.median(ref)) if len(ref) else float("nan"),
            "threshold_best_iou": limit,
            "fraction_closer": float(np.mean(gen > limit)) if len(gen) else float("nan"),
            "reference_fraction_closer": float(np.mean(ref > limit)) if len(ref) else float("nan"),
            "reference_share_near_empty": float(np.isnan(reference_best).mean()),
            "library_windows": library_windows}


def stored_novelty(sets: dict[str, Any], stored_best: dict[str, np.ndarray],
                   library_windows: int) -> None:
    """The novelty of the baselines and of the real held-out set (the val split) from the
    nearest-window IoUs that the baselines stage stored, against the test images'."""
    for name, target in (("baseline_grf", "baseline_grf"), ("baseline_copy", "baseline_copy"),
                         ("val", "real_heldout")):
        if name in stored_best and target in sets:
            sets[target]["novelty"] = novelty_of(stored_best[name], stored_best["test"],
                                                 library_windows)


# --- the generated sets of a samples file ----------------------------------------------------

@dataclass
class GeneratedSet:
    maps: np.ndarray  # (N, H, W) uint8 {0, 1}: finished, or cut at 0.5
    probabilities: np.ndarray | None  # the decoder's, where the maps were finished
    seeds: Seeds | None
    finished: bool


def seeds_of(h5) -> dict[str, Seeds]:
    """The real test images each seeded mode of a samples file started from."""
    return {name: Seeds.per_image(index, draws) if draws is not None
            else Seeds(np.arange(len(index)), index)
            for name, (index, draws) in seed_indices(h5).items()}


def generated_sets(h5) -> dict[str, GeneratedSet]:
    """Every generated set of a samples file: its phase maps (finished where the sample stage
    finished them, else cut at 0.5) and, where finished, its probabilities."""
    seeds = seeds_of(h5)
    out = {}
    for name, key in judged_keys(h5).items():
        maps, finished = stack_maps(h5, key)
        maps = maps.reshape(-1, *maps.shape[-2:])
        probabilities = h5[key][()].astype(np.float32).reshape(maps.shape) if finished else None
        out[name] = GeneratedSet(maps, probabilities, seeds.get(name), finished)
    return out


def load_samples(samples_path: str | os.PathLike, dataset_path: str | os.PathLike,
                 size: int) -> tuple[dict[str, GeneratedSet], dict[str, Any]]:
    """The generated sets and the attributes of a samples file, checked against the data set."""
    with open_h5(samples_path) as h5:
        sets = generated_sets(h5)
        attrs = {k: read_json_attr(h5, k) for k in h5.attrs}
        if RECONSTRUCTION_BCE in h5:
            attrs[RECONSTRUCTION_BCE] = h5[RECONSTRUCTION_BCE][()]
    if not sets:
        raise MicrovaeError(f"{samples_path}: holds no generated images")
    split = attrs.get("split", "test")
    if split != "test":
        raise MicrovaeError(f"{samples_path}: its seeded modes started from the {split} split, "
                            "but the evaluation compares with the test split; sample with "
                            "--split test")
    shape = next(iter(sets.values())).maps.shape[1:]
    if shape != (size, size):
        raise MicrovaeError(f"{samples_path}: images of {shape} px, but the test set of "
                            f"{dataset_path} has {size}x{size} px")
    return sets, attrs


# --- evaluate --------------------------------------------------------------------------------

def judged_sets(generated: dict[str, GeneratedSet], n_real: int, ablation: bool
                ) -> dict[str, ScoredSet]:
    """The model's sets as the judge takes them (and, with ``ablation``, each finished set cut
    at 0.5 as well, named ``{set}@0.5``)."""
    out = {}
    for name, item in generated.items():
        maps, seeds, probabilities = item.maps, item.seeds, item.probabilities
        if name == "reconstruction":
            if len(maps) != n_real:
                raise MicrovaeError(f"{len(maps)} reconstructions for {n_real} real test images: "
                                    "the samples were made from another data set or split")
            keep = np.linspace(0, n_real - 1, min(n_real, RECONSTRUCTIONS_JUDGED)).astype(int)
            keep = np.unique(keep)
            maps = maps[keep]
            probabilities = probabilities[keep] if probabilities is not None else None
            seeds = Seeds.per_image(keep)
        if seeds is not None and seeds.sources.size and seeds.sources.max() >= n_real:
            raise MicrovaeError(f"mode {name} started from real image {seeds.sources.max()}, but "
                                f"the test set has {n_real}: the samples were made from another "
                                "data set or split")
        calibrated = ("phase_fraction",) if item.finished and name in UNSEEDED_MODES else ()
        out[name] = ScoredSet(Features.of(maps), "generator", seeds, calibrated)
        if ablation and probabilities is not None:
            out[f"{name}{ABLATION}"] = ScoredSet(Features.of(probabilities), "generator", seeds)
    return out


def baseline_sets(images: dict[str, np.ndarray]) -> dict[str, ScoredSet]:
    return {"baseline_grf": ScoredSet(Features.of(images["baseline_grf"]), "baseline",
                                      calibrated=("phase_fraction",)),
            "baseline_copy": ScoredSet(Features.of(images["baseline_copy"]), "baseline")}


def rank_unseeded(metrics: dict[str, Any], names: list[str]) -> list[str]:
    """Unseeded sets from best to worst: most descriptors within the floor, then the smallest
    median multiple of the floor's 95th percentile."""
    def key(name):
        values = metrics["sets"][name]
        multiples = [values["floor_multiple"][k] for k in values["judged"]]
        return (-values["n_within"] / max(values["n_judged"], 1),
                float(np.nanmedian(multiples)) if multiples else np.inf)
    return sorted(names, key=key)


def evaluate_samples(samples_path: str | os.PathLike, dataset_path: str | os.PathLike,
                     baselines_path: str | os.PathLike, metrics_out: str | os.PathLike,
                     curves_out: str | os.PathLike,
                     figures: dict[str, str | os.PathLike] | None = None, seed: int = 0,
                     latent: int | None = None) -> dict[str, Any]:
    """metrics.json, the curves (CSV) and the figures asked for (name -> path; names
    :data:`EVALUATION_FIGURES`): every generated set, the baselines and the real held-out set
    judged against the real test images; the choices (best unseeded mode, finishing) made on
    the val split."""
    figures = figures or {}
    unknown = set(figures) - set(EVALUATION_FIGURES)
    if unknown:
        raise MicrovaeError(f"unknown figure(s) {sorted(unknown)}; use {list(EVALUATION_FIGURES)}")
    test = real_set(dataset_path, "test")
    size = test.images.shape[-1]
    generated, attrs = load_samples(samples_path, dataset_path, size)
    baseline_images, stored_best = read_baselines(baselines_path, size)
    sets = {**judged_sets(generated, len(test.images), ablation=True),
            **baseline_sets(baseline_images)}
    held_name = heldout_split(dataset_path, "test")
    held = real_set(dataset_path, held_name) if held_name else None
    if held is not None:
        sets["real_heldout"] = ScoredSet(held.features, "ceiling")
    rng = np.random.default_rng(seed)
    judged = judge(test.features, test.blocks, sets, rng)
    metrics: dict[str, Any] = {
        "latent_size": latent if latent is not None else attrs.get("latent_size"),
        "split": "test", "image_size": size, "reference": test.info,
        "real_heldout_split": held_name, "descriptors": DESCRIPTORS,
        "finished": bool(attrs.get("match_training", False)),
        "finishing_morphology": attrs.get("match_training_morphology", "none"),
        **{k: judged[k] for k in ("n_draws", "n_blocks", "n_real", "alpha", "real")},
        "sets": {}, "ablation": {}}
    for name, values in judged["sets"].items():
        if name.endswith(ABLATION):
            metrics["ablation"][name.removesuffix(ABLATION)] = {"cut_at_0.5": compact(values)}
        else:
            metrics["sets"][name] = values
            if name in generated:
                values["finished"] = generated[name].finished
    for name in metrics["ablation"]:
        metrics["ablation"][name]["finished"] = compact(metrics["sets"][name])
    # novelty of the unseeded sets: the model's searched now, the rest stored by baselines
    regions = load_training_regions(dataset_path)
    library = Library.of(*regions, size)
    reference_best = stored_best["test"]
    for name in [n for n in generated if n in UNSEEDED_MODES]:
        best = nearest_iou(novelty_subset(generated[name].maps, rng), library)
        metrics["sets"][name]["novelty"] = novelty_of(best, reference_best, library.n_windows)
    stored_novelty(metrics["sets"], stored_best, library.n_windows)
    if held is not None:
        try:
            metrics["selection"] = select_on_val(held, generated, baseline_images, seed)
        except MicrovaeError as exc:  # a val split too small for a floor of its own
            log.warning("no choice on the val split: %s", exc)
            metrics["selection"] = {"split": "val", "skipped": str(exc)}
    chosen = metrics.get("selection", {}).get("best_unseeded")
    if chosen:  # its test figures, reported once
        mode = chosen.removesuffix(ABLATION)
        metrics["selection"]["test"] = metrics["ablation"][mode]["cut_at_0.5"] \
            if chosen.endswith(ABLATION) else compact(metrics["sets"][mode])
    if "reconstruction" in generated:
        item = generated["reconstruction"]
        metrics["reconstruction"] = reconstruction_metrics(
            item.probabilities if item.probabilities is not None else item.maps, test.images,
            attrs.get(RECONSTRUCTION_BCE))
    conditioned = conditioned_sets(samples_path)
    if conditioned:
        metrics["conditioning"] = conditioned
        for name, values in conditioned.items():
            log.info("%s: target phase fraction %.3f, achieved %.3f (+-%.3f over %d images)%s",
                     name, values["target"], values["phase_fraction_mean"],
                     values["phase_fraction_sd"], values["n_images"],
                     f", worst band off by {values['max_band_error']:.3f}"
                     if "max_band_error" in values else "")
    metrics["units"] = {k: v[0] for k, v in DESCRIPTORS.items()}
    info = dataset_info(dataset_path)
    metrics["pixel_size"] = float(info.get("pixel_size") or 0.0)
    metrics["pixel_unit"] = info.get("pixel_unit", "px")
    write_json(metrics_out, metrics)
    evaluation = Evaluation(metrics, test.features,
                            {name: item.features for name, item in sets.items()
                             if not name.endswith(ABLATION) and name != "reconstruction"})
    write_text(curves_out, columns_text(curve_columns(evaluation)))
    draw_figures(evaluation, figures, f"latent size {metrics['latent_size']}")
    return metrics


def conditioned_sets(samples_path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The sets generated at a target phase fraction or map (``conditioned/``, ``graded/``):
    how closely each meets its target (:func:`~microvae.evaluate.conditioning_metrics`)."""
    out = {}
    with open_h5(samples_path) as h5:
        for name, key in conditioned_keys(h5).items():
            maps, finished = stack_maps(h5, key)
            out[name] = {**conditioning_metrics(maps, target_of(h5, key),
                                                h5[key][()].astype(np.float32)),
                         "finished": finished, "size": int(maps.shape[-1])}
    return out


def compact(values: dict[str, Any]) -> dict[str, Any]:
    """The verdict of a set in a few numbers (the ablation tables)."""
    return {"n_within": values["n_within"], "n_judged": values["n_judged"],
            "verdict": values["verdict"], "floor_multiple": values["floor_multiple"],
            "phase_fraction": values["summary"]["phase_fraction_mean"]}


def select_on_val(val: RealSet, generated: dict[str, GeneratedSet],
                  baseline_images: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """The choices of an evaluation, made against the val split (never test): the best
    unseeded set among the unseeded modes, each as finished and as cut at 0.5 (named
    ``{mode}@0.5``). The test figures of the chosen one are reported once, by the caller."""
    unseeded = {name: item for name, item in generated.items() if name in UNSEEDED_MODES}
    if not unseeded:
        return {}
    sets = {**judged_sets(unseeded, len(val.images), ablation=True),
            "baseline_grf": baseline_sets(baseline_images)["baseline_grf"]}
    judged = judge(val.features, val.blocks, sets, np.random.default_rng(seed + 1))
    candidates = [n for n in judged["sets"] if n != "baseline_grf"]
    ranking = rank_unseeded(judged, candidates)
    finishing = {}
    for name in unseeded:
        if f"{name}{ABLATION}" in judged["sets"]:
            finished, cut = judged["sets"][name], judged["sets"][f"{name}{ABLATION}"]
            finishing[name] = {"finished": finished["verdict"], "cut_at_0.5": cut["verdict"],
                               "finishing_wins": ranking.index(name) <
                               ranking.index(f"{name}{ABLATION}")}
    return {"split": "val", "reference": val.info, "ranking": ranking,
            "best_unseeded": ranking[0],
            "verdicts": {n: judged["sets"][n]["verdict"] for n in (*ranking, "baseline_grf")},
            "finishing": finishing,
            "criterion": "the largest share of judged descriptors within the floor, then the "
                         "smallest median multiple of the floor's 95th percentile; each "
                         "unseeded mode finished and cut at 0.5 (@0.5)"}


def curve_columns(evaluation: Evaluation) -> dict[str, np.ndarray]:
    """r, then for the real reference and every set: the scaled autocovariance, S2, and the
    lineal path and connectedness along x and y."""
    sets = {"real": evaluation.reference, **evaluation.sets}
    curves = {name: set_curves(features) for name, features in sets.items()}
    columns = {"r": next(iter(curves.values()))["r"]}
    for name, values in curves.items():
        for key in ("s2", "s2_raw", "lineal_path_x", "lineal_path_y", "cluster_x", "cluster_y"):
            columns[f"{name}_{key}"] = values[key]
    return columns


def draw_figures(evaluation: Evaluation, figures: dict[str, str | os.PathLike], tag: str
                 ) -> None:
    metrics = evaluation.metrics
    # the curves of the unseeded modes, the posterior, the baselines and the real held-out set
    # (the other seeded sets follow their sources; every set is in the verdict figure)
    shown = {name: f for name, f in evaluation.sets.items()
             if metrics["sets"][name]["role"] != "generator"
             or name in (*UNSEEDED_MODES, "posterior") or not name.startswith(
                 ("noise_", "interpolation_", "reconstruction"))}
    curves = {"real": set_curves(evaluation.reference),
              **{name: set_curves(f) for name, f in shown.items()}}
    roles = {name: metrics["sets"][name]["role"] for name in evaluation.sets}
    if "verdict" in figures:
        save_figure(plots.verdict_figure(metrics, title=f"the judge, {tag}"), figures["verdict"])
    if "curves" in figures:
        save_figure(plots.curves_figure(curves, roles, metrics.get("pixel_size", 0.0),
                                        metrics.get("pixel_unit", "px"),
                                        title=f"correlation functions, {tag}"), figures["curves"])
    if "distributions" in figures:
        save_figure(plots.distributions_figure(curves, roles,
                                               title=f"distributions, {tag}"),
                    figures["distributions"])


# --- evaluate_large --------------------------------------------------------------------------

def real_windows_in_blocks(dataset_path: str | os.PathLike, size: int, split: str = "test"
                           ) -> tuple[int, np.ndarray, Features, np.ndarray, dict[str, Any]]:
    """The real windows of :func:`real_test_windows` (of ``split``) for ``size`` px images,
    halving the window further while they fall into fewer than 2 independent blocks (a floor
    needs two halves that share no structure): ``(window, windows, features, blocks, block
    info)``."""
    window = size
    tile = load_split(dataset_path, split).shape[-1]
    while True:
        window, real, placement = real_test_windows(dataset_path, window, split)
        features = Features.of(real)
        blocks, info = block_labels(features, placement, window, f"real {window} px windows")
        if info["n_blocks"] >= 2 or window <= tile or window % 16:
            return window, real, features, blocks, info
        log.info("real %d px windows: %d independent block(s); comparing at %d px", window,
                 info["n_blocks"], window // 2)
        window //= 2


def evaluate_large(samples_path: str | os.PathLike, dataset_path: str | os.PathLike,
                   metrics_out: str | os.PathLike, figure_out: str | os.PathLike | None = None,
                   seed: int = 0, latent: int | None = None, split: str = "test",
                   baselines_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The generated images larger than the tiles (``large/{mode}_{size}`` of a samples file)
    against real windows of the ``split`` (test; val to choose settings on) of the same size
    (where fewer fit, of the largest size that does, with each generated image cut into windows
    of that size), judged as :func:`evaluate` does, beside the real val windows of that size
    (against test only) and the field baseline drawn at that size (as the baselines stage
    fitted it, from ``baselines_path``; fitted here without one); novelty of the tile-size
    windows of the generated images."""
    with open_h5(samples_path) as h5:
        keys = large_keys(h5)
        if not keys:
            raise MicrovaeError(f"{samples_path}: holds no large samples (sample with --size)")
        generated = {name: stack_maps(h5, key) for name, key in keys.items()}
        attrs = {k: read_json_attr(h5, k) for k in h5.attrs}
    if split == "test" and attrs.get("split", "test") != "test":
        raise MicrovaeError(f"{samples_path}: made from the {attrs['split']} split; the "
                            "evaluation compares with the test split")
    by_size: dict[int, dict[str, tuple[np.ndarray, bool]]] = {}
    for name, item in generated.items():
        by_size.setdefault(item[0].shape[-1], {})[name] = item
    metrics: dict[str, Any] = {
        "latent_size": latent if latent is not None else attrs.get("latent_size"),
        "periodic": bool(attrs.get("periodic", False)), "split": split, "sets": {}, "real": {},
        "reference": {}, "descriptors": DESCRIPTORS}
    rng = np.random.default_rng(seed)
    tiles = load_split(dataset_path, "train")
    library = Library.of(*load_training_regions(dataset_path), tiles.shape[-1])
    reference_best = nearest_iou(novelty_subset(load_split(dataset_path, split), rng), library)
    held_name = heldout_split(dataset_path, split)
    # the trivial baseline at every size: blurred noise fitted on the train tiles, finished
    morphology = segmentation_morphology(dataset_path)
    grf = (read_field_baseline(baselines_path, morphology) if baselines_path is not None
           else fit_field_baseline(evenly_spaced(tiles, 2000), morphology, rng))
    metrics["baseline_grf_sigma"] = grf.sigma
    real_shown: dict[int, np.ndarray] = {}
    for size, sets in sorted(by_size.items()):
        window, real, features, blocks, info = real_windows_in_blocks(dataset_path, size, split)
        scored = {name: ScoredSet(Features.of(split_into_windows(maps, window)), "generator",
                                  calibrated=("phase_fraction",) if finished else ())
                  for name, (maps, finished) in sets.items()}
        n_baseline = max(len(maps) for maps, _ in sets.values())
        scored[f"baseline_grf_{size}"] = ScoredSet(
            Features.of(split_into_windows(grf.draw(n_baseline, size, rng), window)), "baseline",
            calibrated=("phase_fraction",))
        if held_name:
            try:
                _, held, _ = real_test_windows(dataset_path, window, held_name)
                scored[f"real_heldout_{size}"] = ScoredSet(Features.of(held), "ceiling")
            except MicrovaeError as exc:
                log.warning("no real held-out windows of %d px: %s", window, exc)
        judged = judge(features, blocks, scored, rng)
        real_shown[window] = real[np.linspace(0, len(real) - 1, 3).astype(int)]
        metrics["real"][str(window)] = judged["real"]
        metrics["reference"][str(window)] = info
        for name, values in judged["sets"].items():
            values.update(size=size, compared_window=window, n_real_windows=len(real),
                          real_phase_fraction=judged["real"]["phase_fraction_mean"])
            if name in sets:
                maps, finished = sets[name]
                values.update(n_generated=len(maps), finished=finished)
                tiles_of = split_into_windows(maps, tiles.shape[-1])
                values["novelty"] = novelty_of(
                    nearest_iou(novelty_subset(tiles_of, rng), library), reference_best,
                    library.n_windows)
                if metrics["periodic"]:  # pairs across the edges against pairs inside
                    gap = periodic_s2_nrmse(maps)
                    values["periodic_s2_nrmse"] = gap
            metrics["sets"][name] = values
    write_json(metrics_out, metrics)
    if figure_out is not None:
        kind = "periodic" if metrics["periodic"] else "generated"
        shown = {f"{name.rsplit('_', 1)[0]}, {kind}, {size} px": item[0]
                 for size, sets in sorted(by_size.items()) for name, item in sets.items()}
        save_figure(plots.large_figure(real_shown, shown, title=(
            f"generated beside real test windows, latent size {metrics['latent_size']}")),
            figure_out)
    return metrics


# --- summarize -------------------------------------------------------------------------------

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
    columns = list(dict.fromkeys(key for row in rows for key in row))  # sets differ in columns
    write_csv(table_out, [{k: row.get(k, "") for k in columns} for row in rows], columns)
    save_figure(plots.latent_comparison(tile_rows), comparison_figure)
    save_figure(plots.loss_curves({latent: read_history(path)
                                   for latent, path in history_files.items()}), loss_figure)
    return rows


# --- score: any generator's files ------------------------------------------------------------

def generated_files(paths: list[str], size: int, phase: str = "auto",
                    threshold: float | None = None,
                    volumes: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The windows of ``size`` px (non-overlapping, row-major) of generated files: 2-D images
    (PNG, TIFF, NPY, VTI) pooled in the set ``images``; each 3-D volume's sections along each
    axis in the sets ``axis_0``, ``axis_1``, ``axis_2`` (one set per axis, so that each
    direction of a volume is judged on its own). ``volumes``: filled with each 3-D volume's
    phase map by its label."""
    from ..ingest import expand_paths, read_entries
    from ..vti import read_vti

    sets: dict[str, list[np.ndarray]] = {}
    for path in expand_paths(paths, "--generated", suffixes=(".vti",)):
        if path.suffix.lower() == ".vti":
            arrays = [(str(path), read_vti(path)[0])]
        else:
            arrays = [(entry.label, entry.array) for entry in read_entries(path)]
        for label, array in arrays:
            maps = phase_maps(np.asarray(array), label, phase, threshold)
            if maps.ndim == 3 and maps.shape[0] == 1:
                maps = maps[0]
            if maps.ndim == 2:
                pieces = {"images": maps[None]}
            elif maps.ndim == 3:
                pieces = {f"axis_{axis}": np.moveaxis(maps, axis, 0) for axis in range(3)}
                if volumes is not None:
                    volumes[label] = maps
            else:
                raise MicrovaeError(f"{label}: an array of {maps.ndim} dimensions is neither an "
                                    "image nor a volume")
            for name, sections in pieces.items():
                if min(sections.shape[1:]) < size:
                    raise MicrovaeError(f"{label}: sections of {sections.shape[1]}x"
                                        f"{sections.shape[2]} px are smaller than the data set's "
                                        f"{size} px images")
                sets.setdefault(name, []).append(split_into_windows(sections, size))
    return {name: np.concatenate(parts) for name, parts in sets.items()}


def score(generated_paths: list[str], dataset_path: str | os.PathLike,
          out_dir: str | os.PathLike, baselines_path: str | os.PathLike | None = None,
          phase: str = "auto", threshold: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Judge the files of any generator against a packed data set's real test images: the
    descriptors, floors, verdicts and novelty of :func:`evaluate`, beside the baselines and the
    real held-out set; writes ``scorecard.json``, ``scorecard.csv``, ``scorecard.html`` and the
    figures into ``out_dir``."""
    from pathlib import Path

    test = real_set(dataset_path, "test")
    size = test.images.shape[-1]
    volumes: dict[str, np.ndarray] = {}
    generated = generated_files(generated_paths, size, phase, threshold, volumes)
    if baselines_path is not None:
        baseline_images, stored_best = read_baselines(baselines_path, size)
    else:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        make_baselines(dataset_path, out / "baselines.h5", seed=seed)
        baseline_images, stored_best = read_baselines(out / "baselines.h5", size)
    sets = {name: ScoredSet(Features.of(maps), "generator") for name, maps in generated.items()}
    sets.update(baseline_sets(baseline_images))
    held_name = heldout_split(dataset_path, "test")
    if held_name:
        sets["real_heldout"] = ScoredSet(real_set(dataset_path, held_name).features, "ceiling")
    rng = np.random.default_rng(seed)
    judged = judge(test.features, test.blocks, sets, rng)
    metrics: dict[str, Any] = {
        "generated": [str(p) for p in generated_paths], "dataset": str(dataset_path),
        "split": "test", "image_size": size, "reference": test.info, "descriptors": DESCRIPTORS,
        **{k: judged[k] for k in ("n_draws", "n_blocks", "n_real", "alpha", "real")},
        "sets": judged["sets"]}
    library = Library.of(*load_training_regions(dataset_path), size)
    for name, maps in generated.items():
        best = nearest_iou(novelty_subset(maps, rng), library)
        metrics["sets"][name]["novelty"] = novelty_of(best, stored_best["test"], library.n_windows)
    stored_novelty(metrics["sets"], stored_best, library.n_windows)
    if volumes:  # what sections do not show (reported, not judged: no real volume floor yet)
        metrics["volumes"] = {label: volume_descriptors(volume)
                              for label, volume in volumes.items()}
        for label, values in metrics["volumes"].items():
            spans = values["spanning_fraction"]["phase_1"]
            lengths = values["correlation_length"]
            log.info("%s: phase 1 percolates along z, y, x with %s of its voxels; S2 "
                     "correlation length %s voxels; Euler characteristic per 1 000 voxels %.2f",
                     label, ", ".join(f"{v:.2f}" for v in spans.values()),
                     ", ".join(f"{v:.1f}" for v in lengths.values()),
                     values["euler_per_1000_voxels"]["phase_1"])
    info = dataset_info(dataset_path)
    metrics["pixel_size"] = float(info.get("pixel_size") or 0.0)
    metrics["pixel_unit"] = info.get("pixel_unit", "px")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "scorecard.json", metrics)
    rows = summary_rows([metrics])
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_csv(out / "scorecard.csv", [{k: row.get(k, "") for k in columns} for row in rows],
              columns)
    evaluation = Evaluation(metrics, test.features,
                            {name: item.features for name, item in sets.items()})
    figures = {name: out / f"{name}.png" for name in EVALUATION_FIGURES}
    draw_figures(evaluation, figures, "scorecard")
    write_text(out / "scorecard.html", plots.scorecard_html(metrics, figures))
    for name, values in metrics["sets"].items():
        log.info("%s (%s, %d images): %s%s", name, values["role"], values["n_images"],
                 values["verdict"], f"; novelty: {values['novelty']['fraction_closer']:.2f} of "
                 "its images closer to a training window than 95% of real test images"
                 if "novelty" in values else "")
    return metrics


def volume_set_name(path: str | os.PathLike) -> str:
    """The set a generated volume file belongs to: its name without suffix and without a
    trailing ``_<number>`` (``diffusion_0.vti`` and ``diffusion_1.vti`` are set ``diffusion``)."""
    import re

    return re.sub(r"_\d+$", "", os.path.splitext(os.path.basename(path))[0])


def evaluate_volumes(generated_paths: list[str], dataset: str | os.PathLike,
                     out: str | os.PathLike, figure: str | os.PathLike | None = None,
                     window: int | None = None, spacing: int | None = None,
                     seed: int = 0) -> dict[str, Any]:
    """Generated volumes (``.vti`` or ``.npy``; grouped into sets by :func:`volume_set_name`)
    judged section by section along each axis against the test split's volumes (each volume a
    block of the floor; a split of one volume gives two halves, and the result says so), beside
    blurred noise (its blur fitted on the train volumes' S2, one volume per generated one) and
    the val split's volumes (the real held-out ceiling, where there are any). Windows of
    ``window`` px (default the tile size), sections ``spacing`` voxels apart (default half a
    window); the 3-D descriptors of every volume (percolation, Euler characteristic,
    correlation length per axis) beside them, the size-independent ones judged against the
    spread between the real test volumes (:func:`microvae.volumes.judge_volume_descriptors`)."""
    from ..volumes import (
        blurred_noise,
        fitted_blur,
        halves,
        judge_sections,
        judge_volume_descriptors,
        volume_descriptors,
    )
    from ..vti import read_vti
    from . import dataset_volumes

    if not generated_paths:
        raise MicrovaeError("--volumes: no generated volumes given")
    sets: dict[str, tuple[list[np.ndarray], str]] = {}
    for path in generated_paths:
        if str(path).lower().endswith(".vti"):
            volume = read_vti(path)[0]
        elif str(path).lower().endswith(".npy"):
            volume = np.load(path)
        else:
            raise MicrovaeError(f"{path}: a generated volume is a .vti or .npy file")
        if volume.ndim != 3:
            raise MicrovaeError(f"{path}: a {volume.ndim}-D array, not a volume")
        sets.setdefault(volume_set_name(path), ([], "generator"))[0].append(
            (np.asarray(volume) > 0).astype(np.uint8))
    test = [v for v, m in zip(*dataset_volumes(dataset, "test")[:2]) if m.all()]
    if not test:
        raise MicrovaeError(f"{dataset}: the test split holds no whole volume to judge against")
    floor_note = f"{len(test)} test volumes, each a block"
    if len(test) == 1:
        test = halves(test[0])
        floor_note = "one test volume, cut in two halves along its longest axis: the floor " \
                     "lies inside one volume"
        log.warning("%s: the test split holds one volume: the floor's blocks are its halves "
                    "(add volumes or raise split.test for a floor between volumes)", dataset)
    size = int(dataset_info(dataset)["image_size"][0])
    window = window or size
    smallest = min(min(v.shape) for group, _ in sets.values() for v in group)
    smallest = min(smallest, *(min(v.shape) for v in test))
    if window > smallest:
        window = smallest // 8 * 8
        log.info("windows of %d px (the smallest volume side)", window)
    spacing = spacing or max(1, window // 2)
    rng = np.random.default_rng(seed)
    train = [v for v, m in zip(*dataset_volumes(dataset, "train")[:2]) if m.all()] or test
    blur = fitted_blur(train, rng)
    fraction = float(np.mean([v.mean() for v in train]))
    shapes = [v.shape for group, _ in sets.values() for v in group[:1]]
    sets["blurred_noise"] = ([blurred_noise(shapes[0], blur, fraction, rng)
                              for _ in range(max(len(g) for g, _ in sets.values()))], "baseline")
    try:
        val = [v for v, m in zip(*dataset_volumes(dataset, "val")[:2]) if m.all()]
    except MicrovaeError:
        val = []
    if val:
        sets["real_val"] = (val, "ceiling")
    verdicts = judge_sections(test, sets, window, spacing, rng)
    result = {"dataset": str(dataset), "window": window, "section_spacing": spacing,
              "floor": floor_note, "n_blocks": {str(a): v["n_blocks"] for a, v in verdicts.items()},
              "blurred_noise_blur": blur, "descriptors": DESCRIPTORS,
              "by_axis": {str(axis): {name: compact(values)
                                      for name, values in verdict["sets"].items()}
                          for axis, verdict in verdicts.items()},
              "volumes": {name: [volume_descriptors(v) for v in group]
                          for name, (group, _) in sets.items()},
              "real_test_volumes": [volume_descriptors(v) for v in test]}
    result["descriptors_3d"] = judge_volume_descriptors(result["real_test_volumes"],
                                                        result["volumes"])
    for axis, verdict in verdicts.items():
        for name, values in verdict["sets"].items():
            log.info("axis %d, %s: %s", axis, name, values["verdict"])
    write_json(out, result)
    if figure is not None:
        import matplotlib.pyplot as plt

        axes_figures = []
        for axis, verdict in verdicts.items():
            fig = plots.verdict_figure({**verdict, "descriptors": DESCRIPTORS},
                                       f"sections normal to axis {axis} ({'zyx'[axis]})")
            fig.canvas.draw()
            axes_figures.append(np.asarray(fig.canvas.buffer_rgba())[..., :3])
            plt.close(fig)
        width = max(a.shape[1] for a in axes_figures)
        stacked = np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)),
                                         constant_values=255) for a in axes_figures])
        fig, ax = plt.subplots(figsize=(stacked.shape[1] / 100, stacked.shape[0] / 100))
        ax.imshow(stacked)
        ax.axis("off")
        fig.subplots_adjust(0, 0, 1, 1)
        save_figure(fig, figure)
    return result
