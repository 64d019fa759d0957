from dataclasses import asdict

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import microvae
from microvae.errors import MicrovaeError
from microvae.h5io import load_split
from microvae.model import VAE, reparameterize
from microvae.modelfile import save_model
from microvae.sample import (
    SampleConfig,
    aggregate,
    fit_aggregate_posterior,
    generate,
    interpolation,
    latent_manifold,
)
from microvae.stages.sample import sample_model

CFG = SampleConfig(n_prior=10, n_posterior_images=3, n_draws=4, noise_sigmas=[0.5, 2.0],
                   n_pairs=2, n_steps=5, seed=11, calibration_draws=1000)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(VAE(16, 3), path)
    return path


def test_groups_shapes_dtypes_attributes(model_file, tiny_dataset, tmp_path):
    out = tmp_path / "s.h5"
    sample_model(model_file, out, tiny_dataset, CFG)
    with h5py.File(out) as h5:
        assert h5["prior"].shape == (10, 16, 16) and h5["prior"].dtype == np.float16
        assert h5["aggregate"].shape == (10, 16, 16) and h5["aggregate"].dtype == np.float16
        assert h5["aggregate_mean"].shape == (3,) and h5["aggregate_cov"].shape == (3, 3)
        assert h5["posterior"].shape == (3, 4, 16, 16)
        assert h5["posterior_index"].shape == (3,)
        assert sorted(h5["noise"]) == ["0.5", "2"]
        assert h5["noise/2"].shape == (3, 4, 16, 16)
        assert h5["interpolation/midpoint"].shape == (2, 16, 16)
        assert h5["interpolation/path"].shape == (2, 5, 16, 16)
        assert h5["interpolation/pairs"].shape == (2, 2)
        n_test = len(h5py.File(tiny_dataset)["test"])
        assert h5["reconstruction"].shape == (n_test, 16, 16)
        for name in ("prior", "posterior", "noise/0.5", "interpolation/path"):
            values = h5[name][()]
            assert values.min() >= 0 and values.max() <= 1
        assert h5.attrs["seed"] == 11 and h5.attrs["latent_size"] == 3
        assert "float16" in h5.attrs["storage"] and str(model_file) == h5.attrs["model"]


def test_same_seed_same_file(model_file, tiny_dataset, tmp_path):
    sample_model(model_file, tmp_path / "a.h5", tiny_dataset, CFG)
    sample_model(model_file, tmp_path / "b.h5", tiny_dataset, CFG)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        names = []
        a.visit(names.append)
        for name in names:
            if isinstance(a[name], h5py.Dataset):
                assert np.array_equal(a[name][()], b[name][()]), name


def test_posterior_draws_follow_equation_1(monkeypatch):
    torch.manual_seed(0)
    model = VAE(16, 3).eval()
    images = (np.random.default_rng(0).random((2, 16, 16)) > 0.5).astype(np.uint8)
    captured = {}
    from microvae import sample

    original = sample.decode

    def spy(model, z, batch_size=250):
        captured.setdefault("z", []).append(z.clone())
        return original(model, z, batch_size)

    monkeypatch.setattr(sample, "decode", spy)
    cfg = SampleConfig(n_prior=1, n_posterior_images=2, n_draws=3, noise_sigmas=[1.0],
                       n_pairs=1, n_steps=3, seed=5, match_training=False)
    generate(model, images, cfg, modes=("posterior",))
    z_mean, z_log_var = sample.encode(model, images)
    picker = torch.Generator().manual_seed(5 + 1)  # chooses the images
    chosen = np.sort(torch.randperm(2, generator=picker)[:2].numpy())
    eps = torch.randn((2, 3, 3), generator=torch.Generator().manual_seed(5))
    expected = reparameterize(z_mean[chosen][:, None], z_log_var[chosen][:, None], eps)
    assert torch.allclose(captured["z"][0], expected.reshape(-1, 3))
    assert torch.allclose(captured["z"][0].reshape(2, 3, 3),
                          z_mean[chosen][:, None] + torch.exp(z_log_var[chosen][:, None] / 2) * eps)


def test_noise_draws_are_z_mean_plus_sigma_eps(monkeypatch):
    torch.manual_seed(0)
    model = VAE(16, 3).eval()
    images = (np.random.default_rng(1).random((4, 16, 16)) > 0.5).astype(np.uint8)
    captured = []
    from microvae import sample as sample_module

    original = sample_module.decode
    monkeypatch.setattr(sample_module, "decode",
                        lambda m, z, batch_size=64: captured.append(z.clone()) or original(m, z))
    cfg = SampleConfig(n_prior=1, n_posterior_images=4, n_draws=2, noise_sigmas=[0.5, 2.0],
                       n_pairs=1, n_steps=3, seed=9, match_training=False)
    out = generate(model, images, cfg, modes=("noise",))
    z_mean, _ = sample_module.encode(model, images)
    chosen = out["noise_index"]
    generator = torch.Generator().manual_seed(9)
    for sigma, z in zip((0.5, 2.0), captured):  # the reconstructions decode logits directly
        eps = torch.randn((4, 2, 3), generator=generator)
        assert torch.allclose(z, (z_mean[chosen][:, None] + sigma * eps).reshape(-1, 3))


def test_reconstruction_bce_comes_from_fp32_logits():
    from torch.nn import functional as F

    from microvae.sample import reconstruction_bce

    torch.manual_seed(3)
    model = VAE(16, 2).eval()
    with torch.no_grad():
        model.decoder[-1].bias.fill_(12.0)  # confident: probabilities above 0.99976 round to 1
    images = np.ones((3, 16, 16), np.uint8)
    z = torch.randn(3, 2)
    bce = reconstruction_bce(model, images, z)
    with torch.no_grad():
        logits = model.decode_logits(z).double()
    expected = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits),
                                                  reduction="none").mean((1, 2, 3)).numpy()
    assert np.allclose(bce, expected, rtol=1e-5)
    with torch.no_grad():
        rounded = model.decode(z).half().double().clamp(1e-7, 1 - 1e-7)
    assert not np.allclose(-torch.log(rounded).mean((1, 2, 3)).numpy(), expected, rtol=0.5)


def test_mixture_finds_two_clusters_of_codes_and_shuffles_its_draws():
    from microvae.sample import fit_mixture, mixture

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    spread = torch.tensor([0.3, 0.05, 0.05])  # variances 0.09, 0.0025, 0.0025

    def codes(n):
        return centres[torch.randint(0, 2, (n,), generator=g)] + spread * torch.randn(n, 3, generator=g)

    small = torch.full((1, 3), 2 * np.log(0.01))  # posterior sd 0.01
    fit = fit_mixture((codes(2000), small.expand(2000, 3)), (codes(500), small.expand(500, 3)),
                      random_state=1)
    assert fit.mixture.n_components >= 2 and fit.used == 1  # one direction carries the codes

    class Identity(torch.nn.Module):
        latent_size = 3
        config = {"image_size": [1, 3]}

        def decode(self, z):
            return z[:, None, None, :]

    images, z = mixture(Identity(), fit, 400, torch.Generator().manual_seed(2))
    first = z[:, 0].numpy()
    assert 0.35 < (first > 0).mean() < 0.65 and abs(np.abs(first).mean() - 3.0) < 0.2
    assert (np.diff(first[:200] > 0) != 0).sum() > 20  # not sorted by component


def test_aggregate_posterior_moments_are_those_of_the_mixture():
    """Mean and covariance of q(z) = mean_i N(mu_i, diag s_i^2), checked against a direct
    Monte-Carlo draw from the mixture; samples from the fit reproduce its moments."""
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(400, 3, generator=g) @ torch.tensor([[2.0, 0, 0], [1.0, 0.5, 0], [0, 0, 0.1]])
    log_var = torch.log(torch.rand(400, 3, generator=g) * 0.2 + 0.05)
    mean, cov = fit_aggregate_posterior(mu, log_var)
    index = torch.randint(0, 400, (200_000,), generator=g)
    draws = mu[index].double() + (0.5 * log_var[index].double()).exp() * torch.randn(
        200_000, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(mean, draws.mean(0), atol=0.02)
    assert torch.allclose(cov, torch.cov(draws.T), atol=0.05)
    assert cov[0, 1] > 0.4  # the correlation of the z_mean is kept, not only the variances

    class Identity(torch.nn.Module):
        latent_size = 3
        config = {"image_size": [1, 3]}

        def decode(self, z):
            return z[:, None, None, :]

    images, z = aggregate(Identity(), mean, cov, 50_000, torch.Generator().manual_seed(0))
    assert np.allclose(images[:, 0, :], z.numpy())
    assert torch.allclose(torch.cov(z.double().T), cov, atol=0.08)


def test_aggregate_needs_training_images(model_file, tiny_dataset):
    model = VAE(16, 3)
    with pytest.raises(MicrovaeError, match="aggregate needs at least 2 training images"):
        generate(model, None, CFG, ("aggregate",))


def test_interpolation_endpoints_decode_the_inputs():
    torch.manual_seed(1)
    model = VAE(16, 4).eval()
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    midpoint, path = interpolation(model, z1, z2, n_steps=5)
    with torch.no_grad():
        assert np.allclose(path[:, 0], model.decode(z1)[:, 0].numpy(), atol=1e-6)
        assert np.allclose(path[:, -1], model.decode(z2)[:, 0].numpy(), atol=1e-6)
        assert np.allclose(midpoint, model.decode((z1 + z2) / 2)[:, 0].numpy(), atol=1e-6)
        assert np.allclose(path[:, 2], midpoint, atol=1e-6)


def test_cli_prior_and_export(model_file, tmp_path):
    result = microvae("sample", "--model", str(model_file), "--n", "7", "--out",
                      str(tmp_path / "p.h5"), "--export-dir", str(tmp_path / "png"))
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "png").glob("prior_*.png"))) == 7
    result = microvae("sample", "--model", str(model_file), "--n", "5", "--out",
                      str(tmp_path / "n.h5"), "--export-dir", str(tmp_path / "npy"),
                      "--export-format", "npy")
    assert np.load(tmp_path / "npy" / "prior.npy").shape == (5, 16, 16)


def test_cli_help_explains_options():
    result = microvae("sample", "--help")
    assert result.returncode == 0
    for option in ("--model", "--mode", "--n ", "--seed", "--export-format", "--dataset"):
        assert option in result.stdout


COMMANDS_WITH_SECTIONS = (
    (["sample", "--model", "m.pt", "--out", "o.h5"], ("sample", "diffusion")),
    (["export", "--samples", "s.h5", "--out-dir", "x"], ("export",)),
    (["evaluate", "--samples", "s", "--dataset", "d", "--baselines", "b", "--metrics", "m",
      "--curves", "c"], ("evaluate",)),
    (["evaluate-large", "--samples", "s", "--dataset", "d", "--metrics", "m"], ("evaluate",)),
    (["score", "--generated", "g", "--dataset", "d", "--out-dir", "o"], ("evaluate",)),
)


@pytest.mark.parametrize("command,sections", COMMANDS_WITH_SECTIONS,
                         ids=[c[0][0] for c in COMMANDS_WITH_SECTIONS])
def test_cli_flags_are_named_as_the_schema_keys_and_default_to_the_schema(command, sections):
    """One source for each option: every key of the stage's config section is a flag of the
    same name whose default is None, so that --params and then the schema's default apply
    (the export defaults had drifted: formats [vti] against [vti, png])."""
    from microvae.cli import build_parser, evaluation_seed, section_options
    from microvae.config import schema_defaults, section_schema
    from microvae.modes import DIFFUSION_SAMPLING_KEYS

    parser = build_parser()
    args = parser.parse_args(command)
    flags = {action.dest: action.option_strings
             for action in parser._subparsers._group_actions[0].choices[command[0]]._actions}
    for section in sections:
        keys = section_schema(section)["properties"]
        if section == "diffusion":
            keys = DIFFUSION_SAMPLING_KEYS
        for key in keys:
            assert f"--{key.replace('_', '-')}" in flags[key], (command[0], key)
            assert getattr(args, key) is None, (command[0], key)
    if command[0] == "sample":
        options = section_options(args, "sample", extra=("diffusion", DIFFUSION_SAMPLING_KEYS))
        assert options == {}
        assert asdict(SampleConfig.from_options(options)) == schema_defaults("sample")
    elif command[0] != "export":
        assert evaluation_seed(args) == schema_defaults("evaluate")["seed"]


def test_cli_params_json_and_flags_merge_and_bad_keys_are_named():
    from microvae.cli import build_parser, section_options
    from microvae.modes import DIFFUSION_SAMPLING_KEYS

    extra = ("diffusion", DIFFUSION_SAMPLING_KEYS)
    args = build_parser().parse_args(["sample", "--model", "m", "--out", "o", "--params",
                                      '{"n_prior": 7, "seed": 3, "guidance": 1.5}', "--seed",
                                      "5", "--n-draws", "2"])
    assert section_options(args, "sample", extra) == {"n_prior": 7, "seed": 5, "n_draws": 2,
                                                      "guidance": 1.5}
    args = build_parser().parse_args(["sample", "--model", "m", "--out", "o",
                                      "--guidance-schedule", "0.2:0.5", "0.3:1.5"])
    assert section_options(args, "sample", extra) == {"guidance_schedule": [[0.2, 0.5],
                                                                            [0.3, 1.5]]}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sample", "--model", "m", "--out", "o",
                                   "--guidance-schedule", "0.2"])
    args = build_parser().parse_args(["sample", "--model", "m", "--out", "o", "--params",
                                      '{"n_priors": 7}'])
    with pytest.raises(MicrovaeError, match="n_priors"):
        SampleConfig.from_options(section_options(args, "sample", extra))


@pytest.mark.parametrize("args,message", [
    (["--n", "-3"], "sample.n_prior"),
    (["--mode", "dream"], "invalid choice"),
    (["--mode", "posterior"], "needs --dataset"),
])
def test_cli_bad_arguments(model_file, tmp_path, args, message):
    out = tmp_path / "bad.h5"
    result = microvae("sample", "--model", str(model_file), "--out", str(out), *args)
    assert result.returncode != 0 and message in result.stderr
    assert not out.exists()


def test_latent_manifold_decodes_the_grid():
    torch.manual_seed(2)
    model = VAE(16, 2).eval()
    manifold = latent_manifold(model, grid=3, extent=2.0)
    with torch.no_grad():
        top_left = model.decode(torch.tensor([[-2.0, 2.0]]))[0, 0].numpy()
        bottom_right = model.decode(torch.tensor([[2.0, -2.0]]))[0, 0].numpy()
    assert manifold.shape == (3, 3, 16, 16)
    assert np.allclose(manifold[0, 0], top_left, atol=1e-6)
    assert np.allclose(manifold[2, 2], bottom_right, atol=1e-6)
    with pytest.raises(MicrovaeError, match="2-D latent space"):
        latent_manifold(VAE(16, 3))


def test_every_figure_is_written_where_asked(model_file, tiny_dataset, tmp_path):
    names = ("prior", "posterior", "noise", "interpolation", "latent_map")
    figures = {name: tmp_path / f"renamed_{name}.png" for name in names}
    sample_model(model_file, tmp_path / "s.h5", tiny_dataset, CFG, figures=figures)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in figures.values())


@pytest.mark.parametrize("modes,figure,message", [
    (("prior",), "noise", "needs --mode noise"),
    (("prior", "aggregate"), "latent_map", "needs the encoded test images"),
    (("prior",), "sketch", "unknown figure"),
])
def test_figure_of_a_mode_not_generated_is_refused(model_file, tiny_dataset, tmp_path, modes,
                                                   figure, message):
    with pytest.raises(MicrovaeError, match=message):
        sample_model(model_file, tmp_path / "s.h5", tiny_dataset, CFG, modes,
                     figures={figure: tmp_path / "f.png"})
    assert not (tmp_path / "s.h5").exists()


def test_model_of_other_image_size(tiny_dataset, tmp_path):
    save_model(VAE(32, 2), tmp_path / "m32.pt")
    out = tmp_path / "x.h5"
    result = microvae("sample", "--model", str(tmp_path / "m32.pt"), "--dataset",
                      str(tiny_dataset), "--mode", "all", "--out", str(out))
    assert result.returncode == 1 and "32x32" in result.stderr and "16x16" in result.stderr
    assert not out.exists()


def test_corrupt_model_file(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"\x80\x04garbage")
    result = microvae("sample", "--model", str(tmp_path / "m.pt"), "--out",
                      str(tmp_path / "x.h5"))
    assert result.returncode == 1 and "not a valid microvae model file" in result.stderr
    assert not (tmp_path / "x.h5").exists()


def test_match_training_cuts_at_the_training_phase_fraction_and_cleans_as_segmentation():
    from microvae.sample import match_training, phase_fraction_threshold
    from microvae.segment import SegmentationParameters

    rng = np.random.default_rng(0)
    probabilities = rng.random((20, 16, 16)).astype(np.float32)
    threshold = phase_fraction_threshold(probabilities, 0.3)
    assert abs(threshold - 0.7) < 0.01  # uniform probabilities: the 70th percentile
    binary, cut, steps = match_training(probabilities, 0.3, None)
    assert cut == threshold and abs(binary.mean() - 0.3) < 1e-3 and steps[0][0] == "threshold"
    assert set(np.unique(binary)) == {0.0, 1.0} and binary.dtype == np.float32
    # one island of 4 px and one of 36 px: island removal below 10 px keeps only the large one
    maps = np.zeros((1, 16, 16), np.float32)
    maps[0, 1:3, 1:3] = 0.9
    maps[0, 8:14, 8:14] = 0.9
    cleaned, _, steps = match_training(maps, 40 / 256, SegmentationParameters(min_island=10))
    assert cleaned[0, 1:3, 1:3].sum() == 0 and cleaned[0, 8:14, 8:14].all()
    assert [name for name, _ in steps] == ["threshold", "min_island"]
    assert steps[-1][1] == pytest.approx(36 / 256)
    with pytest.raises(MicrovaeError, match="not between 0 and 1"):
        phase_fraction_threshold(probabilities, 0.0)


def test_sample_stage_finishes_every_set_and_keeps_its_probabilities(model_file, tiny_dataset,
                                                                     tmp_path):
    """Every stack is finished (unseeded modes by their own calibration, the encoded ones by
    one on posterior draws of training images) with the segmentation recorded by pack;
    --no-match-training leaves the probabilities only."""
    from microvae.stages import segmentation_morphology

    train_fraction = float(load_split(tiny_dataset, "train").mean())
    finished = tmp_path / "finished.h5"
    sample_model(model_file, finished, tiny_dataset, CFG, ("prior", "aggregate", "posterior"))
    raw = tmp_path / "raw.h5"
    sample_model(model_file, raw, tiny_dataset, SampleConfig(n_prior=10, match_training=False),
                 ("aggregate",))
    with h5py.File(finished) as h5:
        for key in ("prior", "aggregate", "posterior", "reconstruction"):
            maps = h5["finished"][key][()]
            assert maps.dtype == np.uint8 and set(np.unique(maps)) <= {0, 1}
            assert maps.shape == h5[key].shape
        for name in ("prior", "aggregate", "encoded"):
            record = h5["finish"][name]
            assert int(record["calibration_draws"][()]) >= CFG.calibration_draws
            assert float(record["training_phase_fraction"][()]) == pytest.approx(train_fraction)
            assert float(record["after_threshold"][()]) == pytest.approx(train_fraction, abs=0.01)
        probabilities = h5["aggregate"][()].astype(np.float32)
        assert len(np.unique(probabilities)) > 2  # the probabilities stay as they were
        # the tiny data's segmentation: opening and closing of radius 1, holes and islands
        # below 10 px removed; no generated island is smaller
        morphology = segmentation_morphology(tiny_dataset)
        assert (morphology.opening_radius, morphology.closing_radius, morphology.fill_holes,
                morphology.min_island) == (1, 1, 10, 10)
        for image in h5["finished"]["aggregate"][()]:
            labels, count = ndimage.label(image)
            assert count == 0 or np.bincount(labels.ravel())[1:].min() >= 10
        assert h5.attrs["match_training"]
    with h5py.File(raw) as h5:
        assert "finished" not in h5 and "finish" not in h5
        assert not h5.attrs["match_training"]


def test_the_finishing_does_not_depend_on_how_many_images_are_asked_for(model_file,
                                                                        tiny_dataset, tmp_path):
    """The threshold is calibrated once per prior on its own draws, never on the batch: one
    image is cut where 500 are, and the images are the same with and without finishing."""
    thresholds = []
    for n in (1, 40):
        out = tmp_path / f"n{n}.h5"
        sample_model(model_file, out, tiny_dataset, SampleConfig(n_prior=n, calibration_draws=1000),
                     ("prior",))
        with h5py.File(out) as h5:
            thresholds.append(float(h5["finish/prior/threshold"][()]))
    assert thresholds[0] == thresholds[1]
    raw = tmp_path / "raw.h5"
    sample_model(model_file, raw, tiny_dataset, SampleConfig(n_prior=40, match_training=False),
                 ("prior",))
    with h5py.File(raw) as h5, h5py.File(tmp_path / "n40.h5") as finished:
        np.testing.assert_array_equal(h5["prior"][()], finished["prior"][()])


def test_finishing_cuts_at_the_calibrated_threshold_and_cleans_as_segmentation():
    from microvae.sample import Finishing
    from microvae.segment import SegmentationParameters

    rng = np.random.default_rng(1)
    calibration = rng.random((200, 16, 16)).astype(np.float32)
    finishing = Finishing.calibrate(calibration, 0.3, None)
    assert finishing.threshold == pytest.approx(0.7, abs=0.01)
    single, steps = finishing.apply(rng.random((1, 16, 16)).astype(np.float32))
    assert single.shape == (1, 16, 16) and steps[0][0] == "threshold"
    record = finishing.record()
    assert float(record["calibration_draws"]) == 200
    cleaning = Finishing(0.5, 0.2, SegmentationParameters(min_island=10), 1, [], 0.2)
    maps = np.zeros((1, 16, 16), np.float32)
    maps[0, 1:3, 1:3] = 0.9
    maps[0, 8:14, 8:14] = 0.9
    cleaned, steps = cleaning.apply(maps)
    assert cleaned[0, 1:3, 1:3].sum() == 0 and cleaned[0, 8:14, 8:14].all()
    assert [name for name, _ in steps] == ["threshold", "min_island"]


def test_every_registered_mode_has_its_sampler_and_every_list_comes_from_the_registry():
    """Adding a mode touches the registry, its sampler and its test: the sampler is found by
    name, and every list of modes (command line, evaluation, export, figures) derives from the
    registry."""
    from microvae import modes
    from microvae.cli import SAMPLE_MODES
    from microvae.sample import ENCODED_SAMPLERS, UNSEEDED_SAMPLERS

    assert set(UNSEEDED_SAMPLERS) == set(modes.UNSEEDED_MODES)
    assert set(ENCODED_SAMPLERS) == set(modes.ENCODED_MODES)
    assert SAMPLE_MODES == ["all", *modes.MODES]
    assert set(modes.UNSEEDED_MODES) | set(modes.ENCODED_MODES) == set(modes.MODES)
    assert {m for shown in modes.SAMPLE_FIGURES.values() for m in shown} == set(modes.MODES)
    for architecture in ("table1", "conv"):
        own = modes.modes_of(architecture, modes.TRAINED_PRIOR_MODES)
        assert own == tuple(m.name for m in modes.REGISTRY if architecture in m.models)
        assert not set(modes.modes_of(architecture)) & set(modes.TRAINED_PRIOR_MODES)


def test_calibrated_condition_meets_a_target_that_the_prior_overshoots():
    """A fake conditional prior whose achieved fraction rises 1.25x as fast as its condition
    around 0.25 and that sharpens a map's detail as a prior trained on smoothed conditions
    does (the achieved map is 2c - G c for a condition c, G the conditions' smoothing): each
    feedback step shrinks the error of a number by (1 - 1.25); three steps meet a number and a
    graded map within 0.01 per band, where the map asked for as it is misses by more than
    0.02 (the edges) and the smoothed map alone by more than 0.01 (the slope)."""
    from microvae.diffusion import linear_gradient, smoothed_cells
    from microvae.sample import calibrated_condition, condition_of_target

    def draw(n, generator, size, periodic, condition):
        condition = np.broadcast_to(np.asarray(condition, np.float64), (size // 8, size // 8))
        sharpened = 2 * condition - smoothed_cells(condition, periodic)
        achieved = 0.25 + 1.25 * (np.kron(sharpened, np.ones((8, 8))) - 0.25)
        noise = torch.rand((n, size, size), generator=generator).numpy()
        return (noise < achieved).astype(np.float32), None

    def finish(images):
        return images > 0.5

    def bands(images):  # 8 bands of 2 cells
        return images.mean((0, 1)).reshape(8, 16).mean(1)

    generator = torch.Generator().manual_seed(0)
    uncalibrated = abs(draw(256, generator, 64, False, 0.33)[0].mean() - 0.33)
    one_step = calibrated_condition(draw, 0.33, 64, False, finish, generator, n=64, steps=1)
    condition = calibrated_condition(draw, 0.33, 64, False, finish, generator, n=64, steps=3)
    assert one_step == pytest.approx(0.33 - 0.25 * 0.08, abs=0.004)
    assert condition == pytest.approx(0.25 + 0.08 / 1.25, abs=0.003)  # the fixed point
    achieved, _ = draw(256, generator, 64, False, condition)
    assert abs(achieved.mean() - 0.33) < 0.003 < uncalibrated
    target = linear_gradient(0.15, 0.35, 16, 16)
    wanted = bands(np.kron(target, np.ones((8, 8)))[None])
    condition = calibrated_condition(draw, target, 128, False, finish, generator, n=64, steps=3)
    calibrated = bands(draw(256, generator, 128, False, condition)[0])
    as_it_is = bands(draw(256, generator, 128, False, target)[0])
    smoothed = bands(draw(256, generator, 128, False, condition_of_target(target))[0])
    assert np.abs(calibrated - wanted).max() < 0.01
    assert np.abs(as_it_is - wanted).max() > 0.02
    assert np.abs(smoothed - wanted).max() > 0.01


def test_the_calibration_of_a_target_measures_as_many_pixels_at_every_size():
    from microvae.sample import calibration_images

    assert calibration_images(256) == 32 and calibration_images(512) == 32
    assert calibration_images(32) == 2048 and calibration_images(16) == 8192
