"""The diffusion prior (mode diffusion): schedule, denoiser, periodic sampling, conditioning on
phase fraction, training that learns a known conditional law, the saved file."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from microvae.diffusion import (
    TIMESTEPS,
    Denoiser,
    DiffusionConfig,
    as_condition_map,
    check_schedule,
    condition_maps,
    ddim,
    fit_diffusion,
    fit_vector_diffusion,
    guidance_weight,
    linear_gradient,
    noise_levels,
    sample_grids,
    sample_vectors,
)
from microvae.errors import MicrovaeError
from microvae.modelfile import load_prior, save_prior


def test_cosine_schedule_runs_from_almost_clean_to_almost_pure_noise():
    alpha_bar = noise_levels()
    assert len(alpha_bar) == TIMESTEPS
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])
    assert alpha_bar[0] > 0.999 and alpha_bar[-1] < 1e-3


@pytest.mark.parametrize("cells", [4, 8, 12])
def test_denoiser_takes_any_grid_in_steps_of_four_cells(cells):
    denoiser = Denoiser(3, 8)
    x = torch.randn(2, 3, cells, cells + 4)
    t = torch.tensor([0, 999])
    cond = torch.zeros(2, 1, cells, cells + 4)
    assert denoiser(x, t, cond, cond).shape == x.shape


def test_denoiser_refuses_a_grid_it_cannot_halve_twice():
    with pytest.raises(MicrovaeError, match="multiples of 4"):
        Denoiser(3, 8)(torch.randn(1, 3, 6, 8), torch.tensor([1]), torch.zeros(1, 1, 6, 8),
                       torch.zeros(1, 1, 6, 8))


def _randomised(denoiser: Denoiser) -> Denoiser:
    """Non-zero weights everywhere (the output layers start at zero)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in denoiser.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return denoiser


def test_periodic_sampling_commutes_with_circular_shifts():
    """With circular padding the whole sampler (denoiser and DDIM updates) is a function on the
    torus: shifting the starting noise by whole blocks of 4 cells shifts the grid; so opposite
    edges of a periodic draw are neighbours like any two cells inside. Zero padding breaks it."""
    denoiser = _randomised(Denoiser(2, 8))
    noise = torch.randn(2, 2, 12, 16, generator=torch.Generator().manual_seed(0))
    cond, mask = torch.full((2, 1, 12, 16), 0.3), torch.ones(2, 1, 12, 16)
    shift = (4, 8)
    for periodic, equal in ((True, True), (False, False)):
        grid = ddim(denoiser, noise, cond, mask, 5, periodic=periodic)
        shifted = ddim(denoiser, torch.roll(noise, shift, (2, 3)), cond, mask, 5,
                       periodic=periodic)
        same = torch.allclose(torch.roll(grid, shift, (2, 3)), shifted, atol=1e-4)
        assert same is equal
    assert all(m.padding_mode == "zeros" for m in denoiser.modules()
               if isinstance(m, torch.nn.Conv2d))  # restored after sampling


def test_condition_maps_are_local_phase_fractions():
    windows = np.zeros((2, 256, 256), np.uint8)
    windows[1, :, 128:] = 1  # right half phase 1
    maps = condition_maps(windows)
    assert maps.shape == (2, 32, 32)
    np.testing.assert_allclose(maps[0], 0.0)
    assert np.all(np.diff(maps[1], axis=1) >= 0)  # rises from left to right
    assert maps[1, :, 0].max() < 0.1 and maps[1, :, -1].min() > 0.9
    np.testing.assert_allclose(maps[1].mean(), 0.5, atol=1e-6)  # symmetric: the mean holds


def test_condition_targets_number_map_and_bad_values():
    assert as_condition_map(None, 4, 4) is None
    np.testing.assert_allclose(as_condition_map(0.3, 4, 6), np.full((4, 6), 0.3))
    graded = linear_gradient(0.15, 0.35, 4, 16)
    assert graded[0, 0] == pytest.approx(0.15) and graded[0, -1] == pytest.approx(0.35)
    resampled = as_condition_map(graded, 4, 8)
    assert resampled.shape == (4, 8) and np.all(np.diff(resampled.numpy()[0]) > 0)
    with pytest.raises(MicrovaeError, match="between 0 and 1"):
        as_condition_map(1.2, 4, 4)
    with pytest.raises(MicrovaeError, match="outside"):
        as_condition_map(np.zeros((4, 4)), 4, 4)
    with pytest.raises(MicrovaeError, match="graded"):
        linear_gradient(0.0, 0.5, 4, 4)


def test_guidance_weight_follows_its_schedule():
    schedule = [[0.2, 0.5], [0.3, 1.5]]
    assert guidance_weight(0.75, 0.3) == 0.75 and guidance_weight(0.75, None) == 0.75
    assert guidance_weight(schedule, 0.25) == pytest.approx(1.0)  # linear between the pairs
    assert guidance_weight(schedule, 0.1) == 0.5 and guidance_weight(schedule, 0.4) == 1.5
    assert guidance_weight(schedule, None) == 1.0
    weights = guidance_weight(schedule, linear_gradient(0.15, 0.35, 2, 5))  # 0.15 .. 0.35
    assert weights.shape == (2, 5) and weights.dtype == np.float32
    np.testing.assert_allclose(weights[1], [0.5, 0.5, 1.0, 1.5, 1.5], atol=1e-6)
    for bad, message in (([[0.3, 1.0], [0.2, 1.0]], "rise"), ([[0.0, 1.0]], "between 0 and 1"),
                         ([[0.2, -1.0]], ">= 0"), ([[0.2, 1.0, 3.0]], "pairs"), ([], "pairs")):
        with pytest.raises(MicrovaeError, match=f"diffusion.guidance_schedule: .*{message}"):
            check_schedule(bad)
    with pytest.raises(MicrovaeError, match="diffusion.guidance_schedule"):
        DiffusionConfig.from_options({"guidance_schedule": [[0.3, 1.0], [0.2, 1.0]]})


def test_a_guidance_weight_per_cell():
    """A map of equal weights is the constant weight; a map of two weights is neither."""
    denoiser = _randomised(Denoiser(2, 8))
    noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, mask = torch.full((2, 1, 8, 8), 0.3), torch.ones(2, 1, 8, 8)
    constant = ddim(denoiser, noise, cond, mask, 4, guidance=1.5)
    per_cell = ddim(denoiser, noise, cond, mask, 4, guidance=torch.full((2, 1, 8, 8), 1.5))
    torch.testing.assert_close(per_cell, constant)
    halves = torch.full((2, 1, 8, 8), 1.5)
    halves[..., :4] = 0.5
    mixed = ddim(denoiser, noise, cond, mask, 4, guidance=halves)
    assert not torch.allclose(mixed, constant, atol=1e-4)
    assert not torch.allclose(mixed, ddim(denoiser, noise, cond, mask, 4, guidance=0.5),
                              atol=1e-4)


def test_sample_grids_takes_a_weight_map_with_its_phase_fraction_map(quick):
    graded = linear_gradient(0.2, 0.4, 8, 8)

    def draw(weights):
        return sample_grids(quick, 2, 8, 8, torch.Generator().manual_seed(3),
                            phase_fraction=graded, steps=3, guidance=weights)

    torch.testing.assert_close(draw(np.full((8, 8), 1.5, np.float32)), draw(1.5))
    assert draw(guidance_weight([[0.2, 0.5], [0.4, 1.5]], graded)).shape == (2, 2, 8, 8)
    with pytest.raises(MicrovaeError, match="needs a phase-fraction map of that shape"):
        sample_grids(quick, 2, 8, 8, torch.Generator(), phase_fraction=0.3, steps=2,
                     guidance=np.ones((8, 8)))


def test_one_condition_map_per_grid():
    """A stack of maps conditions each grid on its own map: the same maps for every grid give
    the grids of the one map, and a grid's draw depends on its own map only."""
    grids, conditions = _conditional_data(n=16)
    prior = fit_diffusion(grids, conditions, DiffusionConfig(width=8, max_steps=2,
                                                             max_minutes=None, crop_cells=8), 0.5)
    low, high = np.full((8, 8), 0.3, np.float32), np.full((8, 8), 0.7, np.float32)

    def draw(condition):
        return sample_grids(prior, 2, 8, 8, torch.Generator().manual_seed(3),
                            phase_fraction=condition, steps=3, batch_size=2)

    torch.testing.assert_close(draw(np.stack([low, low])), draw(low))
    mixed = draw(np.stack([low, high]))
    torch.testing.assert_close(mixed[0], draw(low)[0])
    torch.testing.assert_close(mixed[1], draw(high)[1])
    assert not torch.allclose(mixed[0], mixed[1])
    assert as_condition_map(np.stack([low, high]), 4, 4).shape == (2, 4, 4)
    with pytest.raises(MicrovaeError, match="3 phase-fraction maps for 2 grids"):
        draw(np.stack([low, low, high]))
    with pytest.raises(MicrovaeError, match="one per image"):
        as_condition_map(np.full((1, 2, 8, 8), 0.3), 8, 8)


def _conditional_data(n=256, cells=8, seed=0):
    """Grids whose value is set by their condition: channel 0 = 4 c - 2, channel 1 = -(4 c - 2),
    plus noise of 0.1; the conditions c are constant per grid, uniform on (0.2, 0.8)."""
    generator = torch.Generator().manual_seed(seed)
    c = 0.2 + 0.6 * torch.rand(n, generator=generator)
    level = (4 * c - 2)[:, None, None, None]
    grids = torch.cat([level, -level], 1).expand(n, 2, cells, cells).clone()
    grids += 0.1 * torch.randn(grids.shape, generator=generator)
    return grids, c[:, None, None].expand(n, cells, cells).clone()


@pytest.fixture(scope="module")
def trained():
    grids, conditions = _conditional_data()
    cfg = DiffusionConfig(width=16, max_steps=500, max_minutes=None, batch_size=32,
                          crop_cells=8, learning_rate=3e-3, ema_decay=0.99, seed=0)
    return fit_diffusion(grids, conditions, cfg, training_phase_fraction=0.5, device="cpu")


@pytest.fixture(scope="module")
def quick():
    """A prior after two steps: enough for the file and the shapes."""
    grids, conditions = _conditional_data(n=16)
    cfg = DiffusionConfig(width=8, max_steps=2, max_minutes=None, crop_cells=8, seed=0)
    return fit_diffusion(grids, conditions, cfg, training_phase_fraction=0.5, device="cpu")


@pytest.mark.slow
def test_training_learns_a_known_conditional_law(trained):
    """Conditioned on a phase fraction it never saw exactly, the draws sit at the value the
    data tie to it (a prior that ignored its condition would draw the whole range, mean 0);
    unconditioned draws spread over the range."""
    generator = torch.Generator().manual_seed(1)
    for target in (0.3, 0.7):
        grids = sample_grids(trained, 16, 8, 8, generator, phase_fraction=target, steps=20)
        expected = 4 * target - 2
        assert grids[:, 0].mean() == pytest.approx(expected, abs=0.25)
        assert grids[:, 1].mean() == pytest.approx(-expected, abs=0.25)
    free = sample_grids(trained, 64, 8, 8, generator, steps=20)[:, 0].mean((1, 2))
    assert free.std() > 0.4 and free.min() < -0.3 and free.max() > 0.3
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]


def test_saved_prior_samples_the_same(quick, tmp_path):
    path = tmp_path / "diffusion.pt"
    save_prior(quick, path, extra={"model_fingerprint": "abc"})
    loaded, payload = load_prior(path)
    assert payload["extra"]["model_fingerprint"] == "abc"
    draws = [sample_grids(p, 3, 4, 8, torch.Generator().manual_seed(5), steps=4)
             for p in (quick, loaded)]
    torch.testing.assert_close(draws[0], draws[1])
    assert loaded.describe() == quick.describe() and loaded.crop_cells == 8


def test_unreadable_prior_file_is_named(tmp_path):
    bad = tmp_path / "diffusion.pt"
    bad.write_bytes(b"not a prior")
    with pytest.raises(MicrovaeError, match="diffusion.pt: not a valid"):
        load_prior(bad)
    with pytest.raises(MicrovaeError, match="not found"):
        load_prior(tmp_path / "missing.pt")


def test_sampling_sizes_and_refusals(quick):
    generator = torch.Generator().manual_seed(0)
    # any size: rounded up to whole blocks of 4 cells, then cut; small ones from canvases
    assert sample_grids(quick, 2, 5, 7, generator, steps=2).shape == (2, 2, 5, 7)
    assert sample_grids(quick, 5, 2, 2, generator, steps=2).shape == (5, 2, 2)[:1] + (2, 2, 2)
    with pytest.raises(MicrovaeError, match="multiple of 32 px"):
        sample_grids(quick, 1, 5, 8, generator, periodic=True)
    with pytest.raises(MicrovaeError, match="sampling steps"):
        sample_grids(quick, 1, 4, 4, generator, steps=0)


def test_training_refuses_crops_larger_than_the_grids():
    grids, conditions = _conditional_data(n=4, cells=8)
    with pytest.raises(MicrovaeError, match="crop_cells"):
        fit_diffusion(grids, conditions, DiffusionConfig(crop_cells=12, max_steps=1), 0.5)


def test_channels_the_encoder_leaves_at_the_prior_are_drawn_as_noise():
    """Only the active channels are modelled; the others get i.i.d. draws of their own mean
    and spread (what a channel at the prior holds), and the denoiser takes fewer channels."""
    grids, conditions = _conditional_data(n=32)
    grids[:, 1] = 3.0 + 2.0 * torch.randn(grids[:, 1].shape,
                                          generator=torch.Generator().manual_seed(7))
    data_mean, data_std = grids[:, 1].mean(), grids[:, 1].std()
    cfg = DiffusionConfig(width=8, max_steps=2, max_minutes=None, crop_cells=8)
    prior = fit_diffusion(grids, conditions, cfg, 0.5, active=torch.tensor([True, False]))
    assert prior.denoiser.config["channels"] == 1 and prior.describe()["active_channels"] == 1
    draws = sample_grids(prior, 64, 8, 8, torch.Generator().manual_seed(0), steps=2)[:, 1]
    # 4096 draws: the standard error of their mean is 2 / 64 = 0.03
    assert draws.mean() == pytest.approx(float(data_mean), abs=0.12)
    assert draws.std() == pytest.approx(float(data_std), rel=0.06)
    neighbours = np.corrcoef(draws[:, :, :-1].flatten(), draws[:, :, 1:].flatten())[0, 1]
    assert abs(neighbours) < 0.05
    with pytest.raises(MicrovaeError, match="at least one set"):
        fit_diffusion(grids, conditions, cfg, 0.5, active=torch.tensor([False, False]))


def test_generate_draws_diffusion_sets_and_finishes_targets_with_the_unconditional_cut():
    """Mode diffusion beside the others, at the tile size and at sample.sizes; the sets at a
    target and the graded set are finished by the unconditional prior's threshold (the same
    cut for every target: nothing forces the target fraction), their targets recorded."""
    from microvae.model import ConvVAE
    from microvae.sample import SampleConfig, generate

    torch.manual_seed(0)
    model = ConvVAE(32, 3).eval()
    grids = torch.randn(8, 3, 8, 8)
    conditions = torch.full((8, 8, 8), 0.25)
    prior = fit_diffusion(grids, conditions, DiffusionConfig(width=8, max_steps=2, crop_cells=8),
                          0.25)
    images = (np.random.default_rng(0).random((6, 32, 32)) < 0.25).astype(np.uint8)
    cfg = SampleConfig(n_prior=4, sizes=[64], n_large=2, phase_fractions=[0.3],
                       graded=[0.2, 0.4], calibration_draws=100)
    out = generate(model, images, cfg, ("prior", "diffusion"), training_phase_fraction=0.25,
                   diffusion_prior=prior, sampling_steps=2)
    assert out["diffusion"].shape == (4, 32, 32)
    assert out["large/diffusion_64"].shape == (2, 64, 64)
    for key in ("conditioned/diffusion_0.3_64", "graded/diffusion_64"):
        assert out[key].shape == (2, 64, 64)
        cut = float(out["finish/diffusion/threshold"])
        np.testing.assert_array_equal(out[f"finished/{key}"], out[key] > cut)
    assert float(out["targets/conditioned/diffusion_0.3_64"]) == pytest.approx(0.3)
    assert out["targets/graded/diffusion_64"].shape == (8, 8)
    assert out["diffusion_fit/active_channels"] == 3
    # a schedule: a number gets the weight at the number (0.3 -> 1.25), a map the constant one
    # (a denoiser with weights everywhere, so that the guidance weight shows)
    sharp = copy.deepcopy(prior)
    _randomised(sharp.denoiser)
    light = replace(cfg, n_prior=1, sizes=[64], n_large=1)

    def drawn(**guidance):
        return generate(model, images, light, ("prior", "diffusion"),
                        training_phase_fraction=0.25, diffusion_prior=sharp, sampling_steps=2,
                        **guidance)

    scheduled = drawn(guidance=0.75, guidance_schedule=[[0.3, 1.25], [0.4, 2.0]])
    at_one, constant = drawn(guidance=1.25), drawn(guidance=0.75)
    np.testing.assert_allclose(scheduled["conditioned/diffusion_0.3_64"],
                               at_one["conditioned/diffusion_0.3_64"], atol=1e-4)
    np.testing.assert_allclose(scheduled["graded/diffusion_64"], constant["graded/diffusion_64"],
                               atol=1e-4)
    assert np.abs(at_one["graded/diffusion_64"] - constant["graded/diffusion_64"]).max() > 1e-3
    with pytest.raises(MicrovaeError, match="needs its trained prior"):
        generate(model, images, cfg, ("prior", "diffusion"), training_phase_fraction=0.25)
    with pytest.raises(MicrovaeError, match="need mode diffusion"):
        generate(model, images, cfg, ("prior",), training_phase_fraction=0.25,
                 diffusion_prior=prior)


def test_a_uniform_target_is_asked_for_with_the_texture_of_free_draws():
    """diffusion.target_texture: each image's condition is the local phase fraction of its own
    unconditional draw (cut at 0.5, smoothed as the training conditions), moved to the target;
    without it, the constant map. Small grids cut from canvases keep the constant."""
    from microvae.sample import decode, diffusion, textured_conditions

    class PixelDecoder:
        """A stand-in conv VAE whose image is its first latent channel, 8 x 8 px per cell."""

        spatial, latent_size, config = True, 3, {"image_size": [32, 32]}

        def latent_shape(self, height, width):
            return 3, height // 8, width // 8

        def decode(self, z, periodic=False):
            return torch.sigmoid(4 * z[:, :1].repeat_interleave(8, 2).repeat_interleave(8, 3))

    torch.manual_seed(0)
    model = PixelDecoder()
    grids = torch.randn(8, 3, 8, 8)
    prior = fit_diffusion(grids, torch.full((8, 8, 8), 0.25),
                          DiffusionConfig(width=8, max_steps=2, crop_cells=8), 0.25)
    maps = textured_conditions(model, prior, 0.3, 3, torch.Generator().manual_seed(1), 64,
                               steps=10)
    free = sample_grids(prior, 3, 8, 8, torch.Generator().manual_seed(1), steps=10)
    local = condition_maps((decode(model, free) > 0.5).astype(np.float32))
    inside = (maps > 0.01) & (maps < 0.99)
    np.testing.assert_allclose(maps[inside], (0.3 + local - local.mean((1, 2), keepdims=True))[
        inside], atol=1e-6)
    assert maps.shape == (3, 8, 8) and local.std() > 0.01
    periodic = textured_conditions(model, prior, 0.3, 2, torch.Generator().manual_seed(1), 64,
                                   periodic=True, steps=10)
    assert periodic.shape == (2, 8, 8)

    def images(texture, size=64):
        return diffusion(model, prior, 2, torch.Generator().manual_seed(4), size,
                         phase_fraction=0.3, steps=10, texture=texture)[0]

    assert not np.allclose(images(True), images(False))
    np.testing.assert_array_equal(images(True, 32), images(False, 32))  # from canvases


def test_generate_draws_a_table1_models_diffusion_sets(quick_vector_prior):
    """A Table 1 model's diffusion prior: mode diffusion beside aggregate at the model's size,
    its sets at a target phase fraction finished by its unconditional cut; a graded map and
    the prior of another model are refused by name."""
    from microvae.model import VAE
    from microvae.sample import SampleConfig, generate

    torch.manual_seed(0)
    model = VAE(16, 3).eval()
    images = (np.random.default_rng(0).random((6, 16, 16)) < 0.4).astype(np.uint8)
    cfg = SampleConfig(n_prior=5, n_large=3, phase_fractions=[0.3], calibration_draws=100)
    out = generate(model, images, cfg, ("aggregate", "diffusion"), fit_images=images,
                   training_phase_fraction=0.4, diffusion_prior=quick_vector_prior, sampling_steps=2)
    assert out["diffusion"].shape == (5, 16, 16) and out["diffusion_z"].shape == (5, 3)
    key = "conditioned/diffusion_0.3_16"
    assert out[key].shape == (3, 16, 16)
    np.testing.assert_array_equal(out[f"finished/{key}"],
                                  out[key] > float(out["finish/diffusion/threshold"]))
    with pytest.raises(MicrovaeError, match="graded maps need a conv model"):
        generate(model, images, SampleConfig(graded=[0.2, 0.4]), ("diffusion",),
                 training_phase_fraction=0.4, diffusion_prior=quick_vector_prior)
    with pytest.raises(MicrovaeError, match="the prior of another model"):
        generate(VAE(16, 4).eval(), images, SampleConfig(n_prior=2), ("diffusion",),
                 training_phase_fraction=0.4, diffusion_prior=quick_vector_prior, sampling_steps=2)


def test_conditioning_metrics_by_hand():
    from microvae.evaluate import conditioning_metrics

    maps = np.zeros((2, 4, 8), np.uint8)
    maps[0, :, 4:] = 1  # right half: 0.5
    maps[1, :2, :] = 1  # top half: 0.5
    values = conditioning_metrics(maps, 0.4)
    assert values["phase_fraction_mean"] == pytest.approx(0.5)
    assert values["error"] == pytest.approx(0.1) and values["phase_fraction_sd"] == 0
    graded = conditioning_metrics(maps, np.array([[0.2, 0.6]]), bands=2)
    # the target map's two columns, resampled to the 8 image columns: 0.2 ... 0.6 linearly
    columns = np.interp((np.arange(8) + 0.5) / 8, [0.25, 0.75], [0.2, 0.6])
    assert graded["target_bands"] == pytest.approx([columns[:4].mean(), columns[4:].mean()])
    assert graded["achieved_bands"] == pytest.approx([0.25, 0.75])
    assert graded["max_band_error"] == pytest.approx(
        max(abs(0.25 - columns[:4].mean()), abs(0.75 - columns[4:].mean())))


def _two_clusters(n=512, seed=0):
    """Codes of a 3-D latent of a Table 1 model: dimension 0 at -2 or +2 (two kinds of image,
    phase fraction 0.2 and 0.6), dimension 1 N(0, 0.5), dimension 2 left at the prior (z_mean
    0, posterior variance 1); posterior spread 0.1 in the others."""
    generator = torch.Generator().manual_seed(seed)
    kind = torch.rand(n, generator=generator) < 0.5
    z_mean = torch.zeros((n, 3))
    z_mean[:, 0] = torch.where(kind, 2.0, -2.0)
    z_mean[:, 1] = 0.5 * torch.randn(n, generator=generator)
    z_log_var = torch.full((n, 3), 2 * np.log(0.1))
    z_log_var[:, 2] = 0.0
    return z_mean, z_log_var, torch.where(kind, 0.6, 0.2).double()


@pytest.fixture(scope="module")
def vector_prior():
    z_mean, z_log_var, fractions = _two_clusters()
    cfg = DiffusionConfig(width=16, max_steps=800, max_minutes=None, batch_size=64,
                          learning_rate=2e-3, ema_decay=0.99, seed=0)
    return fit_vector_diffusion(z_mean, z_log_var, fractions, cfg, 0.4,
                                active=z_mean.var(0) > 0.01, device="cpu")


@pytest.fixture(scope="module")
def quick_vector_prior():
    """A vector prior after two steps: enough for the file, the shapes and the refusals."""
    z_mean, z_log_var, fractions = _two_clusters(n=16)
    cfg = DiffusionConfig(width=8, max_steps=2, max_minutes=None, seed=0)
    return fit_vector_diffusion(z_mean, z_log_var, fractions, cfg, 0.4, device="cpu")


@pytest.mark.slow
def test_vector_prior_learns_two_kinds_of_image_and_its_condition(vector_prior):
    """The MLP prior of a Table 1 model's latent vectors draws the two clusters, not the
    Gaussian between them that the aggregate prior fits (which puts 38% of its draws within 1
    of 0 along dimension 0); asked for a phase fraction, the draws come from the kind of image
    that has it; the unused dimension is drawn from its own spread."""
    assert vector_prior.kind == "vector" and vector_prior.describe()["active_channels"] == 2
    generator = torch.Generator().manual_seed(1)
    free = sample_vectors(vector_prior, 400, generator, steps=20)
    assert free.shape == (400, 3)
    assert (free[:, 0].abs() < 1).float().mean() < 0.1
    assert 0.3 < (free[:, 0] > 0).float().mean() < 0.7
    assert free[:, 1].std() == pytest.approx(0.5, rel=0.25)
    assert free[:, 2].std() == pytest.approx(1.0, rel=0.15)
    for target, sign in ((0.2, -1), (0.6, 1)):
        drawn = sample_vectors(vector_prior, 200, generator, phase_fraction=target, steps=20)
        assert (sign * drawn[:, 0] > 1).float().mean() > 0.9


def test_vector_prior_file_and_refusals(quick_vector_prior, quick, tmp_path):
    vector_prior = quick_vector_prior
    path = tmp_path / "diffusion.pt"
    save_prior(vector_prior, path)
    loaded, _ = load_prior(path)
    assert loaded.kind == "vector" and loaded.describe() == vector_prior.describe()
    draws = [sample_vectors(p, 5, torch.Generator().manual_seed(3), phase_fraction=0.3, steps=4)
             for p in (vector_prior, loaded)]
    torch.testing.assert_close(draws[0], draws[1])
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(MicrovaeError, match="samples vectors, not grids"):
        sample_grids(vector_prior, 1, 4, 4, generator)
    with pytest.raises(MicrovaeError, match="samples grids, not vectors"):
        sample_vectors(quick, 1, generator)
    with pytest.raises(MicrovaeError, match="not at a map"):
        sample_vectors(vector_prior, 1, generator, phase_fraction=np.full((2, 2), 0.3))
    with pytest.raises(MicrovaeError, match="not between 0 and 1"):
        sample_vectors(vector_prior, 1, generator, phase_fraction=1.5)
    z_mean, z_log_var, fractions = _two_clusters(n=8)
    with pytest.raises(MicrovaeError, match="do not match"):
        fit_vector_diffusion(z_mean, z_log_var, fractions[:4], DiffusionConfig(max_steps=1), 0.4)


@pytest.mark.parametrize("periodic", [False, True])
def test_the_3d_denoiser_draws_one_grid_as_the_stock_convolutions_do(periodic):
    """The 3-D denoiser sends one grid through oneDNN's convolution (PyTorch's own choice for a
    batch of one is 4-9x slower): the same values as nn.Conv3d, with zero and circular padding,
    dilations and strides."""
    import copy

    from torch import nn

    torch.manual_seed(0)
    denoiser = Denoiser(3, 8, dims=3).eval().set_periodic(periodic)
    for module in denoiser.modules():  # the zero-initialised output convolutions: non-zero
        if isinstance(module, nn.Conv3d):
            nn.init.normal_(module.weight, std=0.1)
    stock = copy.deepcopy(denoiser)
    for module in stock.modules():
        if isinstance(module, nn.Conv3d):
            module.__class__ = nn.Conv3d
    x = torch.randn(1, 3, 8, 8, 12)
    t = torch.tensor([500])
    condition, mask = torch.full((1, 1, 8, 8, 12), 0.3), torch.ones((1, 1, 8, 8, 12))
    with torch.no_grad():
        ours, theirs = denoiser(x, t, condition, mask), stock(x, t, condition, mask)
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
