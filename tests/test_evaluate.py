import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import wasserstein_distance

from microvae import descriptors as d
from microvae.evaluate import (
    DESCRIPTORS,
    Features,
    ScoredSet,
    Seeds,
    block_draws,
    descriptor_distances,
    exceedance,
    judge,
    reconstruction_metrics,
    set_descriptors,
    summary_rows,
    threshold,
)


def blobs(n, seed, fraction=0.3, size=24, sigma=2.0):
    """Independent images of smooth random blobs (a stationary two-phase structure)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), (0, sigma, sigma))
    cut = np.quantile(field, 1 - fraction)
    return (field > cut).astype(np.uint8)


def descriptors_of(images, weights=None):
    features = Features.of(images)
    weights = np.ones(features.n) if weights is None else weights
    return set_descriptors(features.sums(weights), features.layout), features.layout


# --- the features: a subset or a resample is a weight vector ------------------------------------

def test_weighted_sums_are_the_descriptors_of_the_subset_and_of_repeats():
    images = blobs(40, 0)
    weights = np.random.default_rng(0).integers(0, 4, 40).astype(float)
    weighted, layout = descriptors_of(images, weights)
    repeated, _ = descriptors_of(np.repeat(images, weights.astype(int), axis=0))
    for key in weighted:
        # S2 comes from float32 FFTs whose rounding may depend on the batch size
        np.testing.assert_allclose(weighted[key], repeated[key], rtol=1e-6, atol=1e-9,
                                   err_msg=key)


def test_distributions_match_scipy_wasserstein_and_plain_means():
    a, b = blobs(30, 1), blobs(30, 2, fraction=0.4, sigma=3.0)
    da, layout = descriptors_of(a)
    db, _ = descriptors_of(b)
    distance = descriptor_distances(da, db, layout)
    for key, phase, axis in (("chord_1x", 1, "x"), ("chord_1y", 1, "y")):
        expected = wasserstein_distance(d.chord_lengths(a, phase, axis),
                                        d.chord_lengths(b, phase, axis))
        assert distance[key][0] == pytest.approx(expected, rel=1e-9)
    zeros = np.concatenate([d.chord_lengths(a, 0, "x"), d.chord_lengths(a, 0, "y")])
    zeros_b = np.concatenate([d.chord_lengths(b, 0, "x"), d.chord_lengths(b, 0, "y")])
    assert distance["chord_0"][0] == pytest.approx(wasserstein_distance(zeros, zeros_b))
    # island areas in octaves, binned at 1/8 octave: within a bin of the exact W1 of log2(area)
    exact = wasserstein_distance(np.log2(d.islands(a)[1]), np.log2(d.islands(b)[1]))
    assert distance["island_area"][0] == pytest.approx(exact, abs=0.125)
    # per-image phase fractions binned at 1/512
    exact = wasserstein_distance(d.phase_fraction(a), d.phase_fraction(b))
    assert distance["phase_fraction"][0] == pytest.approx(exact, abs=2 / 512)
    assert da["phase_fraction"][0] == pytest.approx(a.mean())
    assert da["perimeter"][0] == pytest.approx(d.specific_perimeter(a).mean())
    assert da["euler"][0] == pytest.approx(d.euler_characteristic(a).mean() / (24 * 24))


def test_scaled_autocovariance_of_a_set_does_not_see_the_phase_fraction():
    """The same field cut at two levels: S2 differs a lot, its scaled form little."""
    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.standard_normal((60, 32, 32)), (0, 2, 2))
    low, high = (field > np.quantile(field, 0.75)), (field > np.quantile(field, 0.6))
    dl, layout = descriptors_of(low.astype(np.uint8))
    dh, _ = descriptors_of(high.astype(np.uint8))
    raw = np.sqrt(np.mean((dl["s2_raw"] - dh["s2_raw"]) ** 2))
    scaled = descriptor_distances(dl, dh, layout)["s2"][0]
    assert scaled < 0.5 * raw / (0.25 * 0.75) and scaled < 0.06


# --- the null and the verdict ----------------------------------------------------------------

def grouped(n_groups, per_group, seed, **kwargs):
    images = np.concatenate([blobs(per_group, seed * 1000 + g, **kwargs)
                             for g in range(n_groups)])
    return images, np.repeat(np.arange(n_groups), per_group)


def test_draws_split_blocks_into_disjoint_halves():
    blocks = np.repeat(np.arange(6), 5)
    blocks[:3] = -1  # in a gap
    draws = block_draws(blocks, 20, np.random.default_rng(0))
    assert draws.n_blocks == 6
    assert np.all(draws.reference + draws.complement <= 1)
    assert np.all(draws.reference[:, :3] == 0) and np.all(draws.complement[:, :3] == 0)
    for k in range(20):  # whole blocks on each side
        for b in range(6):
            members = np.flatnonzero(blocks == b)
            assert len(set(draws.reference[k, members])) == 1
    with pytest.raises(Exception, match="independent block"):
        block_draws(np.zeros(10, int), 5, np.random.default_rng(0))


def test_exceedance_counts_a_missing_feature_as_farther():
    assert exceedance(np.array([1.0, 0.1, np.nan]), np.array([0.5, 0.5, 0.5])) == \
        pytest.approx(2 / 3)
    assert exceedance(np.array([1.0, 1.0]), np.array([np.nan, 0.5])) == 1.0
    assert threshold(10, 0.05) == pytest.approx(0.995)


def test_a_perfect_generator_passes_and_biased_ones_fail():
    real, blocks = grouped(10, 30, seed=1)
    sets = {"same": ScoredSet(Features.of(blobs(300, 77)), "generator"),
            "denser": ScoredSet(Features.of(blobs(300, 78, fraction=0.45)), "generator"),
            "coarser": ScoredSet(Features.of(blobs(300, 79, sigma=3.5)), "generator"),
            "calibrated": ScoredSet(Features.of(blobs(300, 80, fraction=0.45)), "generator",
                                    calibrated=("phase_fraction",))}
    metrics = judge(Features.of(real), blocks, sets, np.random.default_rng(0), n_draws=200)
    out = metrics["sets"]
    assert out["same"]["n_within"] == out["same"]["n_judged"] == len(DESCRIPTORS)
    assert not out["denser"]["within_floor"]["phase_fraction"]
    assert out["coarser"]["n_within"] <= out["coarser"]["n_judged"] - 3
    assert not out["coarser"]["within_floor"]["s2"]
    # a calibrated phase fraction is reported but not judged
    assert "phase_fraction" not in out["calibrated"]["within_floor"]
    assert out["calibrated"]["n_judged"] == len(DESCRIPTORS) - 1
    assert out["calibrated"]["exceedance"]["phase_fraction"] > 0.99
    json.dumps(metrics)


@pytest.mark.slow
def test_the_null_is_calibrated_for_independent_real_sets():
    """A stationary random structure: sets as independent of the reference as its blocks are
    of each other pass every descriptor together in >= 90% of independent draws."""
    real, blocks = grouped(12, 25, seed=2)
    features = Features.of(real)
    passes = []
    for draw in range(30):
        heldout, _ = grouped(6, 25, seed=100 + draw)  # half the reference's blocks
        metrics = judge(features, blocks, {"heldout": ScoredSet(Features.of(heldout), "ceiling")},
                        np.random.default_rng(draw), n_draws=200)
        values = metrics["sets"]["heldout"]
        passes.append(values["n_within"] == values["n_judged"])
    assert np.mean(passes) >= 0.9, np.mean(passes)


def test_seeded_modes_compare_with_their_sources_outside_each_reference_half():
    real, blocks = grouped(8, 10, seed=3)
    sources = np.arange(0, 80, 4)
    draws = np.repeat(real[sources], 3, axis=0)  # draws identical to their sources
    sets = {"posterior": ScoredSet(Features.of(draws), "generator",
                                   Seeds.per_image(sources, 3))}
    metrics = judge(Features.of(real), blocks, sets, np.random.default_rng(1), n_draws=100)
    values = metrics["sets"]["posterior"]
    # the draws are their sources: distance and floor are equal draw by draw up to the
    # bootstrap of the draws, never farther by more than it
    assert values["n_within"] == values["n_judged"]
    for key in ("s2", "phase_fraction"):
        assert values["distance"][key] == pytest.approx(values["floor"][key], rel=0.6)


def test_a_generated_set_of_another_size_is_refused():
    real, blocks = grouped(4, 10, seed=4)
    with pytest.raises(Exception, match="px"):
        judge(Features.of(real), blocks, {"x": ScoredSet(Features.of(blobs(5, 1, size=16)))},
              np.random.default_rng(0))


def test_summary_columns_agree_with_the_metrics():
    real, blocks = grouped(8, 12, seed=5)
    sets = {"prior": ScoredSet(Features.of(blobs(60, 9)), "generator",
                               calibrated=("phase_fraction",)),
            "baseline_grf": ScoredSet(Features.of(blobs(60, 10, sigma=3.0)), "baseline"),
            "real_heldout": ScoredSet(Features.of(blobs(60, 11)), "ceiling")}
    metrics = judge(Features.of(real), blocks, sets, np.random.default_rng(2), n_draws=60)
    metrics["latent_size"] = 4
    rows = summary_rows([metrics])
    assert [r["role"] for r in rows] == ["generator", "baseline", "ceiling"]
    for row in rows:
        values = metrics["sets"][row["set"]]
        within = [row[f"{k}_within"] for k in DESCRIPTORS if row[f"{k}_within"] != ""]
        assert row["n_within_floor"] == sum(within) and row["n_judged"] == len(within)
        for key in values["within_floor"]:
            assert row[f"{key}_within"] == (row[f"{key}_exceedance"] <= threshold(len(within)))
            assert row[f"{key}_floor_multiple"] == pytest.approx(
                row[key] / row[f"{key}_floor_p95"])


def test_summary_rows_of_large_images_take_the_real_phase_fraction_of_their_window():
    """Large-image metrics hold "real" per compared window, not one summary: each row carries
    the real phase fraction of its own window."""
    real, blocks = grouped(8, 12, seed=5)
    judged = judge(Features.of(real), blocks, {"field_64": ScoredSet(Features.of(blobs(30, 9)))},
                   np.random.default_rng(2), n_draws=40)
    judged["sets"]["field_64"].update(size=64, real_phase_fraction=0.25)
    large = {"latent_size": 4, "real": {"16": judged["real"]}, "sets": judged["sets"]}
    [row] = summary_rows([large])
    assert row["size"] == 64 and row["real_phase_fraction"] == 0.25


def test_reconstruction_metrics():
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[:, :2] = 1
    perfect = truth.astype(np.float32)
    m = reconstruction_metrics(perfect, truth)
    assert m["iou"] == 1.0 and m["pixel_accuracy"] == 1.0 and m["bce_per_pixel"] < 1e-5
    half = np.full((2, 4, 4), 0.5, np.float32)
    assert reconstruction_metrics(half, truth)["bce_per_pixel"] == pytest.approx(np.log(2))
    rounded = np.ones((2, 4, 4), np.float32)  # float16 storage rounded 0.9999 up to 1
    stored = reconstruction_metrics(rounded, np.ones((2, 4, 4), np.uint8),
                                    bce_per_image=np.array([1e-4, 3e-4]))
    assert stored["bce_per_pixel"] == pytest.approx(2e-4)
