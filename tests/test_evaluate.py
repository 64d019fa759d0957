import json

import numpy as np
import pytest

from microvae.evaluate import (
    VERDICT_KEYS,
    Seeds,
    Statistics,
    distances,
    evaluate_sets,
    nearest_iou,
    novelty,
    reconstruction_metrics,
    reference_half,
    summary_rows,
    weighted_distances,
)


@pytest.fixture(scope="module")
def real(tiny_dataset):
    import h5py

    with h5py.File(tiny_dataset) as h5:
        return np.concatenate([h5["train"][()], h5["test"][()]])


def test_metrics_tell_good_from_bad(real):
    rng = np.random.default_rng(0)
    half = len(real) // 2
    generated = {
        # a perfect generator: other real images (probabilities 0/1)
        "real_copy": real[half:].astype(np.float32),
        "noise": rng.random((half, *real.shape[1:])).astype(np.float32),
        "all_matrix": np.zeros((half, *real.shape[1:]), np.float32),
    }
    evaluation = evaluate_sets(real[:half], generated, seed=1)
    modes = evaluation.metrics["modes"]
    for key in ("phase_fraction_wasserstein", "s2_nrmse_radial", "s2_nrmse_x", "s2_nrmse_y"):
        floor = modes["noise"]["floor"][key]
        good = modes["real_copy"]["distance"][key]
        assert good < modes["noise"]["distance"][key]
        assert good < modes["all_matrix"]["distance"][key]
        assert floor < modes["noise"]["distance"][key]
    assert abs(modes["real_copy"]["distance"]["phase_fraction_difference"]) < 0.05
    assert modes["all_matrix"]["distance"]["phase_fraction_difference"] < -0.1
    json.dumps(evaluation.metrics)  # serialisable


def test_binarisation_bias_is_reported():
    real = (np.random.default_rng(0).random((20, 16, 16)) > 0.7).astype(np.uint8)
    probabilities = np.full((10, 16, 16), 0.4, np.float32)  # binarises to all zero
    metrics = evaluate_sets(real, {"grey": probabilities}).metrics
    assert metrics["modes"]["grey"]["binarisation_bias"] == pytest.approx(-0.4, abs=1e-6)


def test_reconstruction_metrics():
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[:, :2] = 1
    perfect = truth.astype(np.float32)
    m = reconstruction_metrics(perfect, truth)
    assert m["iou"] == 1.0 and m["pixel_accuracy"] == 1.0 and m["bce_per_pixel"] < 1e-5
    half = np.full((2, 4, 4), 0.5, np.float32)
    assert reconstruction_metrics(half, truth)["bce_per_pixel"] == pytest.approx(np.log(2))


# --- fair comparisons and verdicts -------------------------------------------------------------



def blobs(n, seed, fraction=0.3, size=24):
    """Independent images of smooth random blobs (a stationary two-phase structure)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), (0, 2, 2))
    threshold = np.quantile(field, 1 - fraction)
    return (field > threshold).astype(np.uint8)


def test_weighted_distances_of_a_subset_are_the_subsets_distances():
    images = blobs(60, 0)
    stats = Statistics.of(images)
    a, b = np.arange(0, 25), np.arange(30, 60)
    wa, wb = np.zeros(60), np.zeros(60)
    wa[a], wb[b] = 1, 1
    weighted = weighted_distances(stats, wa, stats, wb)
    direct = distances(Statistics.of(images[a]), Statistics.of(images[b]))
    assert weighted.keys() == direct.keys()
    for key in direct:
        assert weighted[key] == pytest.approx(direct[key], rel=1e-9, abs=1e-12), key


def test_weights_count_images_like_repeating_them():
    """A resample is a weight vector: weight 2 is the image twice (median of islands too)."""
    images = blobs(20, 1)
    weights = np.random.default_rng(0).integers(0, 4, 20).astype(float)
    repeated = np.repeat(images, weights.astype(int), axis=0)
    stats = Statistics.of(images)
    weighted = weighted_distances(stats, weights, stats, np.ones(20))
    direct = distances(Statistics.of(repeated), stats)
    for key in direct:
        assert weighted[key] == pytest.approx(direct[key], rel=1e-9, abs=1e-12), key


def test_reference_halves_avoid_sources_and_keep_groups():
    rng = np.random.default_rng(0)
    exclude = np.array([3, 4, 50])
    half = reference_half(100, None, exclude, rng)
    assert len(half) == 48 and not set(half) & set(exclude) and len(set(half)) == 48
    groups = np.repeat(np.arange(5), 20)
    for _ in range(10):
        half = reference_half(100, groups, np.array([], int), rng)
        chosen = set(groups[half])
        assert all(set(np.flatnonzero(groups == g)) <= set(half) for g in chosen)  # whole groups
        assert 0 < len(half) < 100


def test_a_perfect_generator_is_within_the_floor_and_a_biased_one_is_not():
    real = blobs(400, 2)
    generated = {"same_process": blobs(200, 3).astype(np.float32),
                 "denser": blobs(200, 4, fraction=0.4).astype(np.float32)}
    modes = evaluate_sets(real, generated, seed=0, n_halves=60).metrics["modes"]
    assert modes["same_process"]["n_within"] >= 5, modes["same_process"]["within_floor"]
    assert not modes["denser"]["within_floor"]["phase_fraction_wasserstein"]
    assert modes["denser"]["n_within"] <= 2


def test_seeded_modes_compare_with_images_outside_their_sources():
    real = blobs(80, 5)
    sources = np.arange(10)
    posterior = np.repeat(real[sources], 3, axis=0).astype(np.float32)  # 3 exact "draws" each
    seeds = {"posterior": Seeds.per_image(sources, 3)}
    evaluation = evaluate_sets(real, {"posterior": posterior}, seed=1, seeds=seeds, n_halves=20)
    metrics = evaluation.metrics
    assert metrics["n_seed_images"] == 10 and metrics["n_real_reference"] == 35
    mode = metrics["modes"]["posterior"]
    # draws identical to their sources: the distance is the floor (the sources vs the reference)
    for key in ("phase_fraction_wasserstein", "s2_nrmse_radial"):  # distances >= 0
        assert mode["distance"][key] == pytest.approx(mode["floor"][key], abs=1e-12)
    assert mode["n_within"] == len(VERDICT_KEYS)
    assert mode["source_phase_fraction"] == pytest.approx(real[sources].mean())


def test_samples_of_another_data_set_are_refused():
    real = blobs(40, 6)
    with pytest.raises(Exception, match="another data set or split"):
        evaluate_sets(real, {"reconstruction": blobs(30, 6).astype(np.float32)})
    with pytest.raises(Exception, match="another data set or split"):
        evaluate_sets(real, {"posterior": blobs(3, 6).astype(np.float32)},
                      seeds={"posterior": Seeds.per_image(np.array([41]), 3)})


def test_summary_columns_agree_with_each_other(real):
    generated = {"prior": real[:64].astype(np.float32), "noise_1": real[64:128].astype(np.float32)}
    metrics = evaluate_sets(real[128:], generated, seed=2, n_halves=20).metrics
    metrics["latent_size"] = 4
    rows = summary_rows([metrics])
    for row in rows:
        within = [row[f"within_{k}"] for k in VERDICT_KEYS]
        assert within == [row[f"upper_{k}"] <= row[f"floor_p95_{k}"] for k in VERDICT_KEYS]
        assert row["n_within_floor"] == sum(within)
        assert row["verdict"] == f"{sum(within)} of {len(VERDICT_KEYS)} descriptors within the floor"
        for key in VERDICT_KEYS:
            assert row[f"floor_{key}"] <= row[f"floor_p95_{key}"]


def test_nearest_iou_equals_a_direct_search_over_the_dihedral_group():
    from microvae.descriptors import iou
    from microvae.evaluate import dihedral

    queries, library = blobs(4, 7, size=16), blobs(30, 8, size=16)
    library[0] = 0  # an empty image
    queries[3] = 0  # empty against empty: IoU 1
    expected = [max(iou(np.repeat(turned[None], 30, 0), library).max()
                    for turned in dihedral(queries)[:, i]) for i in range(4)]
    assert np.allclose(nearest_iou(queries, library, batch=7), expected)
    assert nearest_iou(queries, library)[3] == 1.0


def test_novelty_of_a_copy_of_the_training_set_is_one():
    train, test = blobs(200, 9), blobs(100, 10)
    reference = nearest_iou(test, train)
    copy = novelty(np.rot90(train[:50], axes=(1, 2)), reference, train)  # rotated copies too
    assert copy["fraction_closer"] == 1.0 and copy["median_best_iou"] == 1.0
    fresh = novelty(blobs(100, 11), reference, train)
    assert fresh["fraction_closer"] <= 0.2
    assert fresh["reference_fraction_closer"] == pytest.approx(0.05, abs=0.011)


def test_reconstruction_bce_from_logits_is_used_where_stored():
    truth = np.ones((2, 4, 4), np.uint8)
    rounded = np.ones((2, 4, 4), np.float32)  # float16 storage rounded 0.9999 up to 1
    assert reconstruction_metrics(rounded, truth)["bce_per_pixel"] < 1e-6
    stored = reconstruction_metrics(rounded, truth, bce_per_image=np.array([1e-4, 3e-4]))
    assert stored["bce_per_pixel"] == pytest.approx(2e-4)


def test_evaluate_stage_refuses_samples_of_another_split(tiny_dataset, tmp_path):
    from conftest import microvae
    from microvae.h5io import write_arrays

    write_arrays(tmp_path / "s.h5", {"prior": np.zeros((8, 16, 16), np.float16)},
                 attrs={"split": "val", "latent_size": 2})
    out = tmp_path / "out"
    out.mkdir()
    result = microvae("evaluate", "--samples", str(tmp_path / "s.h5"), "--dataset",
                      str(tiny_dataset), "--metrics", str(out / "m.json"), "--s2",
                      str(out / "s2.csv"))
    assert result.returncode == 1 and "started from the val split" in result.stderr
    assert list(out.iterdir()) == []


def test_a_small_test_set_covered_by_the_sources_is_still_evaluated():
    """A single user image gives a test set of a few dozen tiles, fewer than the images the
    seeded modes start from: the halves then come from all images, and each seeded mode is
    compared per half by its draws whose sources lie outside it."""
    real = blobs(30, 12)
    sources = np.arange(30)
    generated = {"posterior": np.repeat(real, 2, axis=0).astype(np.float32),
                 "interpolation_midpoint": real[:10].astype(np.float32),
                 "prior": blobs(30, 13).astype(np.float32)}
    seeds = {"posterior": Seeds.per_image(sources, 2),
             "interpolation_midpoint": Seeds(np.arange(10), np.stack([np.arange(10),
                                                                     np.arange(10, 20)], 1))}
    metrics = evaluate_sets(real, generated, seeds=seeds, n_halves=20).metrics
    assert metrics["sources_kept_out_of_reference"] is False and metrics["n_seed_images"] == 30
    posterior = metrics["modes"]["posterior"]
    assert posterior["n_halves"] == 20 and posterior["n_within"] == len(VERDICT_KEYS)
    assert 0 < metrics["modes"]["interpolation_midpoint"]["n_halves"] <= 20
