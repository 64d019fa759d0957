import numpy as np
import pytest
from scipy import ndimage

from microvae.errors import MicrovaeError
from microvae.synthetic import SteelParameters, synthesize_volume

SMALL = SteelParameters(shape=(12, 128, 128))


@pytest.fixture(scope="module")
def volume():
    return synthesize_volume(SMALL, seed=3)


def test_deterministic_for_a_seed(volume):
    iq, phase = synthesize_volume(SMALL, seed=3)
    assert np.array_equal(iq, volume[0]) and np.array_equal(phase, volume[1])
    other_iq, _ = synthesize_volume(SMALL, seed=4)
    assert not np.array_equal(iq, other_iq)


def test_types_and_fraction(volume):
    iq, phase = volume
    assert iq.dtype == np.uint8 and iq.shape == SMALL.shape
    assert phase.dtype == np.uint8 and set(np.unique(phase)) == {0, 1}
    assert abs(phase.mean() - SMALL.martensite_fraction) < 0.03


def test_martensite_is_dark_and_ferrite_bright(volume):
    iq, phase = volume
    assert iq[phase == 1].mean() < 0.45 * 255 < 0.65 * 255 < iq[phase == 0].mean()


def test_island_sizes_are_realistic(volume):
    _, phase = volume
    sizes = []
    for section in phase:
        labels, n = ndimage.label(section)
        sizes.extend(np.sqrt(np.bincount(labels.ravel())[1:]))
    median = np.median(sizes)
    assert 4 <= median <= 25  # equivalent edge length of the islands, px


def test_banding_concentrates_martensite_in_bands():
    params = SteelParameters(shape=(8, 180, 96), banding=1.0, band_axis=1, band_period=90)
    _, phase = synthesize_volume(params, seed=0)
    profile = phase.mean(axis=(0, 2))
    in_band = profile[np.r_[0:10, 80:100, 170:180]].mean()
    between = profile[np.r_[35:55, 125:145]].mean()
    assert in_band > 2 * between


@pytest.mark.parametrize("change", [{"martensite_fraction": 1.5}, {"shape": (2, 64, 64)},
                                    {"grain_size": -1.0}, {"noise": -0.1}])
def test_bad_parameters(change):
    with pytest.raises(MicrovaeError):
        synthesize_volume(SteelParameters(**{**SMALL.__dict__, **change}), seed=0)
