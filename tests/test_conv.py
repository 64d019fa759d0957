"""Conv models beyond the training size: sampling at any size (periodic or not), evaluation
against real windows of the same size, export for simulation (.vti read back by VTK and by
DAMASK)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from conftest import microvae
from microvae.crops import split_into_windows, tiled_windows
from microvae.dataset import evenly_spaced
from microvae.errors import MicrovaeError
from microvae.h5io import load_split, load_training_regions
from microvae.model import VAE, ConvVAE, initialize
from microvae.modelfile import load_model, save_model
from microvae.sample import (
    SampleConfig,
    decode,
    field,
    field_windows,
    fit_field_prior,
    generate,
    modes_for,
)
from microvae.stages import real_test_windows
from microvae.stages.evaluate import evaluate_large
from microvae.stages.export import export
from microvae.stages.sample import sample_model
from microvae.vti import read_vti, write_vti

CFG = SampleConfig(n_prior=6, n_posterior_images=2, n_draws=2, noise_sigmas=[1.0], n_pairs=2,
                   n_steps=3, seed=3, sizes=[64, 128], n_large=3)


@pytest.fixture(scope="module")
def conv_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("conv") / "model.pt"
    save_model(initialize(ConvVAE(32, 3)), path)
    return path


@pytest.fixture(scope="module")
def conv_samples(conv_file, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv_samples") / "samples.h5"
    sample_model(conv_file, out, tiny_dataset, CFG)
    return out


def test_conv_samples_at_the_tile_size_and_larger(conv_samples, tiny_dataset):
    with h5py.File(conv_samples) as h5, h5py.File(tiny_dataset) as data:
        tile = data["test"].shape[-1]
        assert h5["prior"].shape == h5["field"].shape == (6, tile, tile)
        assert h5["field_z"].shape == (6, 3, tile // 8, tile // 8)
        assert sorted(h5["large"]) == ["field_128", "field_64", "prior_128", "prior_64"]
        assert h5["large/field_128"].shape == (3, 128, 128)
        assert h5["large/field_64"].dtype == np.float16
        assert h5["posterior"].shape == (2, 2, tile, tile)
        assert h5["test_z_mean"].shape[1:] == (3, tile // 8, tile // 8)
        assert "aggregate" not in h5 and "mixture" not in h5
        assert h5.attrs["architecture"] == "conv" and json.loads(h5.attrs["sizes"]) == [64, 128]


def test_modes_that_do_not_fit_the_architecture_are_refused(conv_file, tiny_dataset):
    conv = initialize(ConvVAE(16, 2))
    table1 = VAE(16, 2)
    assert "field" in modes_for(conv) and "aggregate" not in modes_for(conv)
    assert "diffusion" not in modes_for(conv) and "diffusion" in modes_for(conv, ("diffusion",))
    assert "aggregate" in modes_for(table1) and "field" not in modes_for(table1)
    with pytest.raises(MicrovaeError, match="do not apply to a conv model"):
        generate(conv, None, SampleConfig(), ("aggregate",))
    with pytest.raises(MicrovaeError, match="do not apply to a table1 model"):
        generate(table1, None, SampleConfig(), ("field",))
    with pytest.raises(MicrovaeError, match="sample.sizes: a table1 model"):
        generate(table1, None, SampleConfig(sizes=[64]), ("prior",))
    with pytest.raises(MicrovaeError, match="training regions"):
        generate(conv, None, SampleConfig(), ("field",))


def test_periodic_large_images_tile_the_plane(conv_file, tiny_dataset, tmp_path):
    """A periodic field image is the middle of the plain decoding of its latent grid repeated
    3x3: opposite edges join exactly. The stage passes the flag on and records it."""
    model, _ = load_model(conv_file)
    generator = torch.Generator().manual_seed(0)
    fit = fit_field_prior(model, field_windows(*load_training_regions(tiny_dataset), 16,
                                               generator), generator)
    images, z = field(model, fit, 2, generator, 64, periodic=True)
    assert z.shape == (2, 3, 8, 8) and images.shape == (2, 64, 64)
    tiled = decode(model, z.repeat(1, 1, 3, 3))
    assert np.allclose(images, tiled[:, 64:128, 64:128], atol=1e-5)
    assert not np.allclose(images[:, :, :3], decode(model, z)[:, :, :3], atol=1e-5)
    sample_model(conv_file, tmp_path / "p.h5", tiny_dataset,
                 SampleConfig(n_prior=2, sizes=[64], n_large=2, periodic=True), modes=("field",))
    with h5py.File(tmp_path / "p.h5") as h5:
        assert h5.attrs["periodic"] and h5["large/field_64"].shape == (2, 64, 64)


def test_real_windows_tile_the_test_region_without_overlap():
    canvases = np.arange(2 * 20 * 30).reshape(2, 20, 30) % 251
    mask = np.zeros((2, 20, 30), np.uint8)
    mask[0, 2:20, 3:30] = 1
    mask[1, :8, :8] = 1
    windows, owner = tiled_windows(canvases.astype(np.uint8), mask, 9)
    assert owner.tolist() == [0, 0, 0, 0, 0, 0]  # 2 rows x 3 columns fit in canvas 0
    assert np.array_equal(windows[0], canvases[0, 2:11, 3:12])
    assert np.array_equal(windows[5], canvases[0, 11:20, 21:30])
    cut = split_into_windows(np.arange(2 * 8 * 8).reshape(2, 8, 8), 4)
    assert cut.shape == (8, 4, 4) and np.array_equal(cut[1], np.arange(64).reshape(8, 8)[:4, 4:])


def test_evaluate_large_compares_with_real_windows_of_the_same_size(conv_samples, tiny_dataset,
                                                                    tmp_path):
    """The tiny test region is one volume of 64 px sections: 64 and 32 px windows fall into a
    single block (no two halves independent of each other), so both sizes are compared at the
    largest window that gives blocks, each generated image cut into windows of it."""
    metrics = evaluate_large(conv_samples, tiny_dataset, tmp_path / "large.json",
                             tmp_path / "large.png", seed=0)
    val = evaluate_large(conv_samples, tiny_dataset, tmp_path / "large_val.json", seed=0,
                         split="val")
    assert val["split"] == "val" and not any(k.startswith("real_heldout") for k in val["sets"])
    window, real, _ = real_test_windows(tiny_dataset, 64)
    assert window == 64 and len(real) >= 8
    on_disk = json.loads((tmp_path / "large.json").read_text())
    assert on_disk["sets"].keys() == metrics["sets"].keys() == {
        "field_64", "field_128", "prior_64", "prior_128", "real_heldout_64", "real_heldout_128",
        "baseline_grf_64", "baseline_grf_128"}
    assert metrics["sets"]["real_heldout_64"]["role"] == "ceiling"
    assert metrics["sets"]["baseline_grf_128"]["role"] == "baseline"
    # as many baseline images as generated ones, cut into the same windows
    assert metrics["sets"]["baseline_grf_128"]["n_images"] == \
        metrics["sets"]["field_128"]["n_images"]
    big = metrics["sets"]["field_128"]
    compared = big["compared_window"]
    assert compared < 64 and big["size"] == 128
    assert big["n_images"] == (128 // compared) ** 2 * 3
    assert metrics["reference"][str(compared)]["n_blocks"] >= 2
    assert big["verdict"].endswith("descriptors within the floor")
    assert big["novelty"]["n_images"] > 0 and "fraction_closer" in big["novelty"]
    assert (tmp_path / "large.png").stat().st_size > 0


def test_evaluate_large_draws_the_baseline_that_the_baselines_stage_fitted(tiny_dataset,
                                                                          tmp_path):
    """The field baseline read back from baselines.h5 is the one fitted there (sigma, cut,
    morphology), so evaluate-large draws it at every size instead of fitting it again."""
    from microvae.baselines import fit_field_baseline
    from microvae.stages import segmentation_morphology
    from microvae.stages.evaluate import make_baselines, read_field_baseline

    make_baselines(tiny_dataset, tmp_path / "baselines.h5", n=16, seed=3, calibration_draws=300)
    morphology = segmentation_morphology(tiny_dataset)
    stored = read_field_baseline(tmp_path / "baselines.h5", morphology)
    train = load_split(tiny_dataset, "train")
    fitted = fit_field_baseline(evenly_spaced(train, 2000), morphology,
                                np.random.default_rng(3), calibration_draws=300)
    assert stored.sigma == fitted.sigma and stored.fit_error == pytest.approx(fitted.fit_error)
    for name in ("threshold", "phase_fraction", "morphology", "draws", "phase_fraction_at_half"):
        assert getattr(stored.finishing, name) == getattr(fitted.finishing, name), name
    assert dict(stored.finishing.calibration_steps) == dict(fitted.finishing.calibration_steps)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    assert np.array_equal(stored.draw(3, 48, rng_a), fitted.draw(3, 48, rng_b))


def test_sizes_beyond_the_test_region_fall_back_to_the_largest_window(tiny_dataset,
                                                                      monkeypatch):
    assert real_test_windows(tiny_dataset, 1024)[0] == 64  # 1024, 512, 256, 128 do not fit
    from microvae import stages

    monkeypatch.setattr(stages, "MIN_REAL_WINDOWS", 10**6)
    with pytest.raises(MicrovaeError, match="fewer than 1000000 real windows of 64 px"):
        real_test_windows(tiny_dataset, 64)


def test_vti_round_trip_is_exact_with_the_pixel_size(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((24, 40)) > 0.7).astype(np.uint8)
    volume = (rng.random((3, 8, 5)) > 0.5).astype(np.uint8)
    write_vti(tmp_path / "map.vti", image, 0.5, "um")
    write_vti(tmp_path / "volume.vti", volume, 2.0)
    phase, size, unit = read_vti(tmp_path / "map.vti")
    assert np.array_equal(phase[0], image) and phase.shape == (1, 24, 40)
    assert (size, unit) == (0.5, "um")
    assert np.array_equal(read_vti(tmp_path / "volume.vti")[0], volume)
    with pytest.raises(MicrovaeError, match="phase map"):
        write_vti(tmp_path / "bad.vti", np.full((4, 4), 2))
    assert not (tmp_path / "bad.vti").exists()


def test_damask_reads_the_exported_grid(tmp_path):
    damask = pytest.importorskip("damask")
    rng = np.random.default_rng(1)
    image = (rng.random((24, 40)) > 0.7).astype(np.uint8)
    write_vti(tmp_path / "map.vti", image, 0.5, "um")
    grid = damask.GeomGrid.load(tmp_path / "map.vti")
    assert list(grid.cells) == [40, 24, 1]
    assert np.allclose(grid.size, [20.0, 12.0, 0.5])
    assert np.array_equal(grid.material[:, :, 0].T, image)  # DAMASK indexes (x, y, z)


def test_export_writes_every_format_and_a_manifest(conv_samples, tiny_dataset, tmp_path):
    out = tmp_path / "export"
    manifest = export(conv_samples, out, ("vti", "png", "npy"), n=2, dataset=tiny_dataset,
                      real=True, pixel_size=0.25, pixel_unit="um")
    with h5py.File(conv_samples) as h5:
        expected = h5["finished/large/field_128"][()]
    assert np.array_equal(read_vti(out / "field_128_001.vti")[0][0], expected[1])
    assert np.array_equal(np.load(out / "field_128_001.npy"), expected[1])
    import imageio.v3 as iio

    assert np.array_equal(iio.imread(out / "field_128_000.png") // 255, expected[0])
    window, real, _ = real_test_windows(tiny_dataset, 64)
    assert np.array_equal(np.load(out / f"real_{window}_000.npy"), real[0])
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    assert manifest["pixel_size"] == 0.25 and len(manifest["files"]) == (4 + 1) * 2 * 3


def test_export_command_line(conv_samples, tiny_dataset, tmp_path):
    result = microvae("export", "--samples", str(conv_samples), "--out-dir", str(tmp_path / "e"),
                      "--format", "vti", "--n", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "e").iterdir())[:2] == ["field_128_000.vti",
                                                                      "field_64_000.vti"]
    result = microvae("export", "--samples", str(conv_samples), "--out-dir", str(tmp_path / "f"),
                      "--real")
    assert result.returncode != 0 and "--real needs --dataset" in result.stderr


def test_diffusion_prior_crops_shrink_to_small_training_regions_unless_set(conv_file,
                                                                           tiny_dataset,
                                                                           tmp_path, caplog):
    """diffusion.crop_cells null: 16 cells where the training windows allow, else the largest
    multiple of 4 cells inside them (the tiny data set's sections are 64 px), said in the log;
    a crop size that was set and does not fit is refused by name."""
    import logging

    from microvae.diffusion import DiffusionConfig
    from microvae.stages.train import train_prior

    cfg = DiffusionConfig(width=8, max_steps=2, max_minutes=None, windows=8)
    with caplog.at_level(logging.INFO, logger="microvae.stages.train"):
        prior = train_prior(conv_file, tiny_dataset, cfg, tmp_path / "prior.pt")
    assert prior.crop_cells in (4, 8) and "diffusion.crop_cells null" in caplog.text
    saved = torch.load(tmp_path / "prior.pt", weights_only=True)
    assert json.loads(saved["extra"]["diffusion"])["crop_cells"] == prior.crop_cells
    with pytest.raises(MicrovaeError, match="diffusion.crop_cells: 16 cells .* do not fit"):
        train_prior(conv_file, tiny_dataset, DiffusionConfig(width=8, max_steps=2, crop_cells=16),
                    tmp_path / "other.pt")
    assert not (tmp_path / "other.pt").exists()
