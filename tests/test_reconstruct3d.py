"""3-D volumes from 2-D micrographs (microvae.reconstruct3d, the ``volume`` command): the
statistics against hand counts, the reconstruction against its target, periodic faces, the
volume in DAMASK, and the section judge (microvae.volumes) on real and trivial volumes."""

import json

import numpy as np
import pytest
import torch

from microvae import cli
from microvae.errors import MicrovaeError
from microvae.reconstruct3d import (
    PLANES,
    ReconstructionSettings,
    check_targets,
    plane_statistics,
    reconstruct_volume,
    s2_map,
    section_s2,
    soft_lineal_path,
)
from microvae.synthetic import SteelParameters, synthesize_volume
from microvae.volumes import judge_sections, section_windows, sections
from microvae.vti import read_vti

SMALL_LAGS = (1, 2, 4, 6)


def test_s2_map_counts_pairs_inside_each_image():
    rng = np.random.default_rng(0)
    images = (rng.random((2, 9, 11)) > 0.6).astype(np.uint8)
    r = 3
    expected = np.zeros((2 * r + 1, 2 * r + 1))
    for i, dy in enumerate(range(-r, r + 1)):
        for j, dx in enumerate(range(-r, r + 1)):
            pairs = hits = 0
            for image in images:
                for y in range(9):
                    for x in range(11):
                        if 0 <= y + dy < 9 and 0 <= x + dx < 11:
                            pairs += 1
                            hits += image[y, x] * image[y + dy, x + dx]
            expected[i, j] = hits / pairs
    assert np.allclose(s2_map(images, r), expected)


def test_isotropic_statistics_are_alike_in_every_direction():
    rng = np.random.default_rng(1)
    images = np.zeros((4, 40, 40), np.uint8)
    images[:, :, ::5] = 1  # stripes along y: an anisotropic structure
    images |= (rng.random(images.shape) > 0.9).astype(np.uint8)
    plain = plane_statistics(images, 8, SMALL_LAGS)
    assert not np.allclose(plain.s2, plain.s2.T)
    assert not np.allclose(plain.lineal[:, 0], plain.lineal[:, 1])
    iso = plane_statistics(images, 8, SMALL_LAGS, isotropic=True)
    assert np.allclose(iso.s2, iso.s2.T) and np.allclose(iso.s2, iso.s2[::-1])
    assert np.allclose(iso.lineal[:, 0], iso.lineal[:, 1])
    assert iso.phase_fraction == pytest.approx(images.mean())
    assert iso.s2[8, 8] == pytest.approx(images.mean())  # S2(0) is the phase fraction


def test_section_s2_is_the_mean_over_periodic_sections():
    rng = np.random.default_rng(2)
    volume = rng.random((5, 6, 7))
    r = 2
    for axis, (rows, columns) in PLANES.items():
        got = section_s2(torch.from_numpy(volume), axis, r).numpy()
        for i, dy in enumerate(range(-r, r + 1)):
            for j, dx in enumerate(range(-r, r + 1)):
                shifted = np.roll(np.roll(volume, -dy, axis=rows), -dx, axis=columns)
                assert got[i, j] == pytest.approx(np.mean(volume * shifted))


def test_soft_lineal_path_of_a_binary_volume_counts_segments():
    rng = np.random.default_rng(3)
    volume = (rng.random((6, 7, 8)) > 0.35).astype(np.float64)
    lags = (0, 1, 3)
    for axis in range(3):
        got = soft_lineal_path(torch.from_numpy(volume), axis, lags).numpy()
        for value, r in zip(got, lags):
            product = np.ones_like(volume)
            for step in range(r + 1):
                product *= np.roll(volume, -step, axis=axis)
            assert value == pytest.approx(product.mean(), abs=1e-5)  # log clamped at 1e-6


@pytest.fixture(scope="module")
def steel():
    return synthesize_volume(SteelParameters(shape=(32, 96, 96), grain_size=30.0,
                                             island_size=6.0), 7)[1]


def test_reconstruction_reaches_the_micrographs_statistics(steel):
    target = plane_statistics(steel, 6, SMALL_LAGS, isotropic=True)
    volume, losses = reconstruct_volume(target, (32, 32, 32), torch.Generator().manual_seed(0),
                                        ReconstructionSettings(steps=150))
    assert volume.dtype == np.uint8 and set(np.unique(volume)) == {0, 1}
    assert losses[-1] < 0.1 * losses[0]
    assert volume.mean() == pytest.approx(target.phase_fraction, abs=0.03)
    binary = torch.from_numpy(volume).double()
    blurred = np.random.default_rng(0).random((32, 32, 32)) < target.phase_fraction
    for axis in range(3):
        reached = section_s2(binary, axis, 6).numpy()
        noise = section_s2(torch.from_numpy(blurred).double(), axis, 6).numpy()
        assert np.abs(reached - target.s2).max() < 0.25 * np.abs(noise - target.s2).max()
    again, _ = reconstruct_volume(target, (32, 32, 32), torch.Generator().manual_seed(0),
                                  ReconstructionSettings(steps=150))
    assert np.array_equal(volume, again)  # all randomness from the one generator


def interface_shares(volume, axis):
    """The share of differing neighbours across each plane between consecutive sections normal
    to ``axis``: (across the pair of faces, the planes inside)."""
    wrapped = np.concatenate([volume, np.take(volume, [0], axis)], axis=axis)
    other = tuple(a for a in range(3) if a != axis)
    shares = np.mean(np.diff(wrapped, axis=axis) != 0, axis=other)
    return shares[-1], shares[:-1]


def test_reconstructed_volume_joins_on_all_six_faces(steel):
    target = plane_statistics(steel, 6, SMALL_LAGS, isotropic=True)
    volume, _ = reconstruct_volume(target, (32, 32, 32), torch.Generator().manual_seed(1),
                                   ReconstructionSettings(steps=150))
    crop = steel[:, :32, :32]  # a real, non-periodic cube of the same structure
    for axis in range(3):
        across, inside = interface_shares(volume, axis)
        assert across <= inside.max()  # the faces meet like the sections inside do
        across, inside = interface_shares(crop, axis)
        assert across > inside.max()  # (a cube cut from a larger volume does not)


def test_reconstruction_refuses_what_it_cannot_do(steel):
    target = plane_statistics(steel, 6, SMALL_LAGS)
    with pytest.raises(MicrovaeError, match="too small for lags up to 6"):
        reconstruct_volume(target, (12, 32, 32), torch.Generator(), ReconstructionSettings(1))
    with pytest.raises(MicrovaeError, match="same lags"):
        check_targets({0: target, 1: plane_statistics(steel, 6, (1, 2))})
    with pytest.raises(MicrovaeError, match="normal to the section"):
        check_targets({3: target})
    with pytest.raises(MicrovaeError, match="needs images of at least 60 px"):
        plane_statistics(steel[:, :40, :40])


def test_sections_and_windows_keep_the_axis_order():
    volume = np.arange(4 * 6 * 8).reshape(4, 6, 8)
    assert np.array_equal(sections(volume, 1)[2], volume[:, 2, :])  # rows z, columns x
    assert np.array_equal(sections(volume, 2, 3)[1], volume[:, :, 3])  # rows z, columns y
    windows, blocks = section_windows([volume, volume + 1], 0, 3, 2)
    assert windows.shape == (2 * 2 * 2 * 2, 3, 3)  # 2 volumes x 2 sections x 2x2 windows
    assert np.array_equal(windows[1], volume[0, :3, 3:6])
    assert blocks.tolist() == [0] * 8 + [1] * 8


def test_section_judge_passes_a_real_volume_and_fails_noise():
    params = SteelParameters(shape=(48, 48, 48), grain_size=24.0, island_size=5.0)
    real = [synthesize_volume(params, seed)[1] for seed in range(6)]
    held = synthesize_volume(params, 99)[1]
    rng = np.random.default_rng(0)
    noise = (rng.random((48, 48, 48)) < held.mean()).astype(np.uint8)
    verdicts = judge_sections(real, {"held": ([held], "ceiling"), "noise": ([noise], "baseline")},
                              24, 4, rng, axes=(0, 2))
    assert set(verdicts) == {0, 2}
    for result in verdicts.values():
        assert result["n_blocks"] == 6
        assert result["sets"]["held"]["n_within"] >= result["sets"]["held"]["n_judged"] - 2
        assert result["sets"]["noise"]["n_within"] <= 2


def test_volume_command_writes_a_grid_that_damask_reads(steel, tmp_path):
    damask = pytest.importorskip("damask")
    micrograph = tmp_path / "micrograph.npy"
    np.save(micrograph, steel[0] * 255)
    out, report = tmp_path / "rve.vti", tmp_path / "rve.json"
    code = cli.main(["volume", "--images", str(micrograph), "--shape", "16", "20", "24",
                     "--steps", "20", "--pixel-size", "0.5", "--pixel-unit", "um", "--out",
                     str(out), "--report", str(report)])
    assert code == 0
    volume, size, unit = read_vti(out)
    assert volume.shape == (16, 20, 24) and size == 0.5 and unit == "um"
    grid = damask.GeomGrid.load(out)
    assert list(grid.cells) == [24, 20, 16]
    assert np.allclose(grid.size, [12.0, 10.0, 8.0])
    assert np.array_equal(grid.material.transpose(2, 1, 0), volume)  # DAMASK indexes (x, y, z)
    written = json.loads(report.read_text())
    assert written["phase_fraction"] == pytest.approx(volume.mean())
    assert written["shape"] == [16, 20, 24] and written["periodic"]
    spanning = written["volume"]["spanning_fraction"]  # what sections do not show
    assert set(spanning) == {"phase_0", "phase_1"} and spanning["phase_0"]["axis_2"] > 0


@pytest.mark.parametrize("arguments, message", [
    (["--shape", "16", "16", "16", "--out", "{tmp}/v.txt"], "write a .vti"),
    (["--shape", "4", "16", "16", "--out", "{tmp}/v.npy"], "too small for a reconstruction"),
    (["--xy", "{tmp}/micrograph.npy", "--images", "{tmp}/micrograph.npy", "--out",
      "{tmp}/v.npy"], "exactly one of"),
])
def test_volume_command_refuses_bad_input(steel, tmp_path, capsys, arguments, message):
    np.save(tmp_path / "micrograph.npy", steel[0])
    given = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    if "--xy" not in given:
        given = ["--images", str(tmp_path / "micrograph.npy"), *given]
    assert cli.main(["volume", *given]) == 1
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("v.*"))
