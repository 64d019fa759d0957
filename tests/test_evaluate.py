import json

import numpy as np
import pytest

from microvae.evaluate import evaluate_sets, reconstruction_metrics


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
