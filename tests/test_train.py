import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from microvae.errors import MicrovaeError
from microvae.stages.train import train_model
from microvae.tables import read_history
from microvae.train import TrainConfig, kl_weight_at

# epochs of one pass over the tiny data set, no step or time limit (the defaults' are sized for
# real micrographs)
SETTINGS = {"epochs": 4, "batch_size": 16, "seed": 3, "steps_per_epoch": None, "max_steps": None,
            "max_minutes": None, "patience": 5, "max_val_images": None, "augment": "none",
            "architecture": "table1"}


def run_training(dataset, out, **changes):
    cfg = TrainConfig(**{**SETTINGS, **changes})
    return train_model(dataset, 4, cfg, out / "ck", out / "model.pt", out / "history.csv",
                       out / "loss.png", threads=1)


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bit_identical_runs(tiny_dataset, tmp_path):
    run_training(tiny_dataset, tmp_path / "a")
    run_training(tiny_dataset, tmp_path / "b")
    assert same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    history = read_history(tmp_path / "a" / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    for column in ("train_loss", "val_loss", "images_per_s", "latent_rank", "bce_over_mean_image"):
        assert all(row[column] == row[column] for row in history)  # no NaN
    assert len(history[0]["kl_per_dim"].split(";")) == 4
    assert (tmp_path / "a" / "loss.png").stat().st_size > 0


def test_resume_after_stop_equals_uninterrupted(tiny_dataset, tmp_path):
    run_training(tiny_dataset, tmp_path / "full")
    cfg = TrainConfig(**SETTINGS)
    out = tmp_path / "resumed"
    train_model(tiny_dataset, 4, cfg, out / "ck", out / "model.pt", out / "history.csv", threads=1,
                stop_after_epoch=2)
    assert not (out / "model.pt").exists()
    run_training(tiny_dataset, out)
    assert same_weights(tmp_path / "full" / "model.pt", out / "model.pt")
    assert (tmp_path / "full" / "history.csv").read_text().count("\n") == \
        (out / "history.csv").read_text().count("\n")


@pytest.mark.slow
def test_resume_after_sigkill(tiny_dataset, tmp_path):
    """A real SIGKILL during training: the re-run continues from the last checkpoint and
    ends with the same weights and history (but the timing columns) as an uninterrupted run."""
    settings = {**SETTINGS, "epochs": 8}
    run_training(tiny_dataset, tmp_path / "full", epochs=8)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "microvae", "train", "--dataset", str(tiny_dataset),
               "--latent", "4", "--params", json.dumps(settings), "--threads", "1",
               "--checkpoint-dir", str(out / "ck"), "--model", str(out / "model.pt"),
               "--history", str(out / "history.csv")]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    checkpoint = out / "ck" / "checkpoint.pt"
    deadline = time.time() + 300
    epoch = 0
    while time.time() < deadline and process.poll() is None:
        if checkpoint.exists():
            epoch = torch.load(checkpoint, weights_only=True)["epoch"]
            if epoch >= 3:
                break
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "model.pt").exists()
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 3 <= killed_at < 8
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"resuming from {checkpoint} after epoch {killed_at}" in result.stderr
    assert same_weights(tmp_path / "full" / "model.pt", out / "model.pt")
    drop = ("seconds", "images_per_s")
    full = [{k: v for k, v in r.items() if k not in drop}
            for r in read_history(tmp_path / "full" / "history.csv")]
    resumed = [{k: v for k, v in r.items() if k not in drop}
               for r in read_history(out / "history.csv")]
    assert full == resumed


def test_checkpoint_of_other_settings_is_not_resumed(tiny_dataset, tmp_path):
    cfg = TrainConfig(**SETTINGS)
    out = tmp_path / "x"
    train_model(tiny_dataset, 4, cfg, out / "ck", out / "m.pt", out / "h.csv", threads=1,
                stop_after_epoch=1)
    other = TrainConfig(**{**SETTINGS, "learning_rate": 0.01, "epochs": 1})
    training = train_model(tiny_dataset, 4, other, out / "ck", out / "m.pt", out / "h.csv", threads=1)
    assert len(training.history) == 1  # started over: one fresh epoch, not a resumed one


def test_divergence_names_epoch_and_step(tiny_dataset, tmp_path, monkeypatch):
    from microvae import train

    calls = {"n": 0}
    original = train.vae_loss

    def poisoned(*args, **kwargs):
        loss, bce, kl = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            loss = loss * float("nan")
        return loss, bce, kl

    monkeypatch.setattr(train, "vae_loss", poisoned)
    with pytest.raises(MicrovaeError, match=r"epoch 1, step 3"):
        run_training(tiny_dataset, tmp_path / "nan")
    assert not (tmp_path / "nan" / "model.pt").exists()


def test_kl_warmup_ramp():
    cfg = TrainConfig(kl_weight=0.1, kl_warmup_epochs=4)
    assert [round(kl_weight_at(e, cfg), 3) for e in range(6)] == [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    assert kl_weight_at(0, TrainConfig(kl_weight=0.1)) == 0.1


@pytest.mark.parametrize("change,key", [({"kl_weight": -0.1}, "kl_weight"),
                                        ({"epochs": 0}, "epochs"),
                                        ({"learning_rate": 0.0}, "learning_rate")])
def test_bad_settings(tiny_dataset, tmp_path, change, key):
    with pytest.raises(MicrovaeError, match=key):
        run_training(tiny_dataset, tmp_path, **change)


def test_best_epoch_is_chosen_on_the_full_weight_validation_loss(tiny_dataset, tmp_path):
    """During a KL warm-up the history's val_loss is BCE + the full kl_weight x KL, and the
    saved model is the epoch where that is lowest."""
    training = run_training(tiny_dataset, tmp_path, epochs=5, kl_warmup_epochs=4, kl_weight=0.5)
    history = training.history
    assert [row["kl_weight"] for row in history] == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5])
    for row in history:
        assert row["val_loss"] == pytest.approx(row["val_bce"] + 0.5 * row["val_kl"], rel=1e-6)
    best = min(history, key=lambda row: row["val_loss"])["epoch"]
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["extra"]
    assert saved["best_epoch"] == best == training.best_epoch


def test_latent_rank_counts_directions_not_coordinates():
    from microvae.train import latent_rank

    g = torch.Generator().manual_seed(0)
    plane = torch.randn(2000, 2, generator=g) * torch.tensor([1.0, 0.7])
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    codes = plane @ rotation[:2] + 1e-3 * torch.randn(2000, 5, generator=g)
    assert (codes.var(0) > 0.01).sum() == 5  # every coordinate varies ...
    assert latent_rank(codes) == 2  # ... along two directions
    assert latent_rank(torch.full((100, 5), 0.3)) == 0


def test_mean_image_bce_is_the_summed_binary_entropy():
    from microvae.train import mean_image_bce

    x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]).reshape(2, 1, 2, 2)
    # pixel means 0.5, 1, 0.5, 0: two pixels of entropy ln 2, two of (almost) 0
    assert mean_image_bce(x) == pytest.approx(2 * math.log(2), abs=1e-5)


def test_posterior_collapse_is_reported(tiny_dataset, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="microvae.train"):
        training = run_training(tiny_dataset, tmp_path, epochs=2, kl_weight=200.0)
    assert training.history[-1]["latent_rank"] == 0
    assert "posterior collapse" in caplog.text
    assert training.history[-1]["bce_over_mean_image"] > 0.9


def test_steps_are_counted_and_max_steps_ends_the_last_epoch_early(tiny_dataset, tmp_path):
    training = run_training(tiny_dataset, tmp_path, epochs=None, max_steps=7, steps_per_epoch=3)
    history = read_history(tmp_path / "history.csv")
    assert [row["steps"] for row in history] == [3, 6, 7]
    assert [row["stop_reason"] for row in history] == ["", "", "max_steps"]
    assert training.stop_reason == "max_steps"
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["extra"]
    assert saved["stop_reason"] == "max_steps" and saved["steps"] == 7


def test_epochs_stop_reason_and_fixed_tiles(tiny_dataset, tmp_path):
    training = run_training(tiny_dataset, tmp_path, epochs=2, crops=False)
    assert training.sampler is None and training.stop_reason == "epochs"
    n_steps = math.ceil(len(training.x_train) / SETTINGS["batch_size"])
    assert [row["steps"] for row in training.history] == [n_steps, 2 * n_steps]
    # an epoch of fixed tiles longer than a pass goes on with a new shuffle
    longer = run_training(tiny_dataset, tmp_path / "longer", epochs=1, crops=False,
                          steps_per_epoch=2 * n_steps + 1)
    assert longer.steps == 2 * n_steps + 1


def test_patience_stops_on_a_plateau_and_keeps_the_best_epoch(tiny_dataset, tmp_path,
                                                              monkeypatch):
    from microvae import train as train_module

    original = train_module.validate
    losses = iter([50.0, 40.0, 41.0, 42.0, 39.5, 45.0, 46.0, 47.0, 48.0])

    def scripted(*args, **kwargs):
        return {**original(*args, **kwargs), "val_loss": next(losses)}

    monkeypatch.setattr(train_module, "validate", scripted)
    training = run_training(tiny_dataset, tmp_path, epochs=20, patience=3, steps_per_epoch=1)
    assert training.stop_reason == "patience"
    assert training.best_epoch == 5 and training.epoch == 8
    assert training.history[-1]["stop_reason"] == "patience"


def test_max_minutes_bounds_the_training_time(tiny_dataset, tmp_path):
    training = run_training(tiny_dataset, tmp_path, epochs=None, max_minutes=1e-5,
                            steps_per_epoch=50)
    assert training.stop_reason == "max_minutes"
    assert training.epoch == 1 and training.steps < 50  # the epoch was cut short


def test_training_that_never_stops_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(MicrovaeError, match="never stop"):
        run_training(tiny_dataset, tmp_path, epochs=None)


def test_failure_detector_needs_the_failure_to_hold():
    from microvae.train import FAILURE_STEPS, failure

    collapsed = {"latent_rank": 0, "bce_over_mean_image": 0.5}
    stuck = {"latent_rank": 3, "bce_over_mean_image": 0.995}
    healthy = {"latent_rank": 3, "bce_over_mean_image": 0.6}
    assert failure([collapsed, collapsed], FAILURE_STEPS) == "posterior collapse"
    assert failure([stuck, stuck], FAILURE_STEPS) == "stuck at the mean image"
    assert failure([healthy, collapsed], FAILURE_STEPS) is None  # one epoch is not enough
    assert failure([collapsed, collapsed], FAILURE_STEPS - 1) is None  # nor is early training
    assert failure([stuck, healthy], FAILURE_STEPS) is None


@pytest.mark.slow
def test_detector_fires_on_a_collapsed_model_not_on_a_healthy_one(tiny_dataset, tmp_path):
    from microvae.train import failure

    collapsed = run_training(tiny_dataset, tmp_path / "c", epochs=3, kl_weight=200.0,
                             recover=False, steps_per_epoch=120)
    healthy = run_training(tiny_dataset, tmp_path / "h", epochs=3, recover=False,
                           steps_per_epoch=120)
    assert failure(collapsed.history, collapsed.steps) == "posterior collapse"
    assert failure(healthy.history, healthy.steps) is None
    assert healthy.history[-1]["latent_rank"] > 0


@pytest.mark.slow
def test_a_failed_training_restarts_with_a_kl_warmup(tiny_dataset, tmp_path, caplog):
    """A collapse that holds restarts the network (new weights, KL weight from 0); the restarts
    are counted in the history and the best model comes from after the last one."""
    import logging

    from microvae.train import MAX_RESTARTS, RECOVERY_WARMUP_EPOCHS

    with caplog.at_level(logging.WARNING, logger="microvae.train"):
        training = run_training(tiny_dataset, tmp_path, epochs=12, kl_weight=200.0,
                                steps_per_epoch=160, patience=None)
    restarts = [row["restarts"] for row in training.history]
    assert restarts == sorted(restarts) and restarts[-1] == training.restarts == MAX_RESTARTS
    first = restarts.index(1)
    ramp = [row["kl_weight"] for row in training.history[first:first + RECOVERY_WARMUP_EPOCHS]]
    assert ramp == pytest.approx([200.0 * (k + 1) / RECOVERY_WARMUP_EPOCHS
                                  for k in range(RECOVERY_WARMUP_EPOCHS)])
    assert "restart 1 of at most 2" in caplog.text
    assert training.best_epoch > restarts.index(MAX_RESTARTS)


def test_conv_model_trains_on_crops_larger_than_the_tiles(tiny_dataset, tmp_path):
    """A conv model trains on 32 px crops of the training regions and validates on the 16 px
    tiles; its saved configuration is the crop size, its KL per channel is logged."""
    training = run_training(tiny_dataset, tmp_path, architecture="conv", crop_size=32, epochs=2,
                            steps_per_epoch=3, batch_size=4)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["config"]["architecture"] == "conv"
    assert payload["config"]["image_size"] == [32, 32]
    assert training.x_val.shape[-1] == 16
    history = read_history(tmp_path / "history.csv")
    assert [row["steps"] for row in history] == [3, 6]
    assert len(str(history[-1]["kl_per_dim"]).split(";")) == 4  # latent size 4: channels
    assert 0 <= history[-1]["latent_rank"] <= 4


@pytest.mark.parametrize("changes,message", [
    ({"crop_size": 32}, "a table1 model trains at the image size of the data set"),
    ({"architecture": "conv", "crop_size": 32, "crops": False}, "needs train.crops: true"),
    ({"architecture": "auto", "crop_size": 32}, "auto chooses the crop size"),
])
def test_crop_size_that_cannot_apply_is_refused(tiny_dataset, tmp_path, changes, message):
    with pytest.raises(MicrovaeError, match=message):
        run_training(tiny_dataset, tmp_path, **changes)


def test_a_restart_at_the_last_epoch_still_saves_a_model(tiny_dataset, tmp_path, monkeypatch,
                                                         caplog):
    """Issue 26: a restart sets the search for the best epoch back; where the limit comes before
    the new network's first validation, the best weights before the restart are saved (with a
    warning), instead of the job failing with nothing saved."""
    import logging

    from microvae import train as train_module

    failures = iter([None, "posterior collapse"])  # the second (last) epoch fails
    monkeypatch.setattr(train_module, "failure", lambda *args: next(failures, None))
    with caplog.at_level(logging.WARNING, logger="microvae.train"):
        training = run_training(tiny_dataset, tmp_path, epochs=2, steps_per_epoch=5)
    assert training.restarts == 1 and training.stop_reason == "epochs"
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["extra"]["best_epoch"] == training.best_state_epoch <= 2
    assert math.isfinite(payload["extra"]["best_val_loss"])
    assert "before the new network was validated" in caplog.text


def test_feature_size_is_the_mean_chord_of_each_phase():
    import numpy as np

    from microvae.descriptors import feature_size

    stripes = np.zeros((2, 24, 24), np.uint8)
    stripes[:, :, 3:6] = 1  # vertical stripes of 3 px of phase 1 ...
    stripes[:, :, 12:14] = 1  # ... and 2 px: inner chords along x only
    sizes = feature_size(stripes)
    assert sizes[1] == pytest.approx(2.5)
    assert sizes[0] == pytest.approx(6.0)  # the inner run of phase 0 between them (6:12)
    assert np.isnan(feature_size(np.ones((1, 8, 8), np.uint8))[0])


@pytest.mark.parametrize("architecture,latent,ratio,expected", [
    ("table1", 64, 0.63, "use the conv model"),
    ("conv", 32, 0.63, "more latent channels"),
    ("table1", 64, 0.09, None),
    ("table1", 2, 0.70, None),  # the bottleneck itself: the paper's small latent sizes
])
def test_capacity_advice_names_the_fix_only_where_the_model_cannot_hold_the_data(
        architecture, latent, ratio, expected):
    from microvae.train import capacity_advice

    advice = capacity_advice(architecture, latent, 32, {0: 9.0, 1: 3.0}, ratio)
    if expected is None:
        assert advice is None
    else:
        assert expected in advice and "3.0 px" in advice and "10.7 across" in advice


def test_scale_advice_flags_tiles_smaller_than_the_features_and_specks():
    from microvae.train import scale_advice

    assert scale_advice(32, {0: 9.0, 1: 6.0}) is None
    assert "raise image_size" in scale_advice(32, {0: float("nan"), 1: 6.0})
    assert "pixel size" in scale_advice(32, {0: 9.0, 1: 1.2})


def test_training_logs_the_feature_size_and_the_capacity_advice(tiny_dataset, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="microvae"):
        run_training(tiny_dataset, tmp_path, epochs=1)
    assert "feature size of the train split: mean chord" in caplog.text


def test_auto_augmentation_rotates_only_structures_that_look_the_same_along_x_and_y():
    import numpy as np

    from microvae.train import choose_augmentation

    rng = np.random.default_rng(0)
    isotropic = (rng.random((64, 32, 32)) < 0.4).astype(np.uint8)
    mode, reason = choose_augmentation(isotropic)
    assert mode == "dihedral" and "isotropic" in reason
    banded = np.repeat(isotropic[:, :, :8], 4, axis=2)  # features 4x longer along x
    mode, reason = choose_augmentation(banded)
    assert mode == "flips" and "anisotropic" in reason
    mode, reason = choose_augmentation(np.zeros((4, 32, 32), np.uint8))
    assert mode == "flips" and "too few chords" in reason


def test_auto_augmentation_is_resolved_and_recorded_by_the_training(tiny_dataset, tmp_path,
                                                                      caplog):
    import json
    import logging

    with caplog.at_level(logging.INFO, logger="microvae"):
        run_training(tiny_dataset, tmp_path, epochs=1, augment="auto")
    assert "train.augment auto: " in caplog.text
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    assert json.loads(saved["extra"]["train"])["augment"] in ("dihedral", "flips")


def stripes(width: int, tile: int = 32, n: int = 4):
    """Tiles (n, tile, tile) of vertical stripes ``width`` px wide, phases alternating."""
    import numpy as np

    columns = (np.arange(tile) // width) % 2
    return np.broadcast_to(columns, (n, tile, tile)).astype(np.uint8)


def test_interface_per_tile_by_crofton_on_stripes():
    """Vertical stripes of w px in a tile of S px: S/w - 1 changes along each of the S rows of
    S - 1 steps, none along y; Crofton's L_A = pi/2 * (P_L,x + P_L,y) / 2, times S^2."""
    from microvae.train import interface_per_tile

    for width, tile in ((4, 32), (2, 32), (8, 16)):
        changes_per_px = (tile / width - 1) / (tile - 1)
        expected = math.pi / 4 * changes_per_px * tile * tile
        assert interface_per_tile(stripes(width, tile)) == pytest.approx(expected)


def test_auto_architecture_takes_the_conv_model_where_a_tile_holds_many_features():
    from microvae.train import TABLE1_INTERFACE_PER_TILE, choose_architecture, interface_per_tile

    fine, coarse = stripes(2), stripes(8)
    assert interface_per_tile(fine) > TABLE1_INTERFACE_PER_TILE > interface_per_tile(coarse)
    chosen, why = choose_architecture(fine)
    assert chosen == "conv" and "px of phase boundary per 32 px tile" in why
    assert choose_architecture(coarse)[0] == "table1"


def test_auto_architecture_trains_the_chosen_model_and_records_it(tiny_dataset, tmp_path,
                                                                 caplog, monkeypatch):
    """The tiny data set under a low threshold: auto takes the conv model, on crops of twice
    the tile where they fit in the training regions, and says so; under a high one Table 1."""
    import logging

    from microvae import train as train_module

    monkeypatch.setattr(train_module, "TABLE1_INTERFACE_PER_TILE", 0.0)
    with caplog.at_level(logging.INFO, logger="microvae.train"):
        run_training(tiny_dataset, tmp_path / "conv", architecture="auto", epochs=1,
                     steps_per_epoch=2, batch_size=4)
    payload = torch.load(tmp_path / "conv" / "model.pt", weights_only=True)
    assert payload["config"]["architecture"] == "conv"
    assert payload["config"]["image_size"] == [32, 32]  # crops of two 16 px tiles
    assert json.loads(payload["extra"]["train"])["architecture"] == "conv"
    assert "model.architecture auto: conv" in caplog.text and "crops of 32 px" in caplog.text
    monkeypatch.setattr(train_module, "TABLE1_INTERFACE_PER_TILE", 1e9)
    run_training(tiny_dataset, tmp_path / "t1", architecture="auto", epochs=1,
                 steps_per_epoch=2, batch_size=4)
    payload = torch.load(tmp_path / "t1" / "model.pt", weights_only=True)
    assert payload["config"].get("architecture", "table1") == "table1"
    assert payload["config"]["image_size"] == [16, 16]
