"""Descriptors of volumes (microvae.volumes) against hand counts and the 2-D descriptors of the
volumes' sections."""

import numpy as np
import pytest

from microvae.descriptors import two_point_correlation
from microvae.volumes import (
    correlation_length_of,
    euler_characteristic_3d,
    s2_along_axes,
    spanning_fraction,
    volume_descriptors,
)


def box(shape, *slices):
    volume = np.zeros(shape, np.uint8)
    volume[slices] = 1
    return volume


@pytest.mark.parametrize("name,volume,connectivity,expected", [
    ("a solid cube", box((8, 8, 8), slice(2, 6), slice(2, 6), slice(2, 6)), 6, 1),
    ("two cubes", box((8, 8, 8), slice(1, 3), slice(1, 3), slice(1, 3))
     + box((8, 8, 8), slice(5, 7), slice(5, 7), slice(5, 7)), 6, 2),
    ("a ring (one tunnel)", box((3, 9, 9), 1, slice(2, 7), slice(2, 7))
     - box((3, 9, 9), 1, slice(3, 6), slice(3, 6)), 6, 0),
    ("a hollow cube (one cavity)", box((9, 9, 9), slice(1, 8), slice(1, 8), slice(1, 8))
     - box((9, 9, 9), slice(3, 6), slice(3, 6), slice(3, 6)), 6, 2),
    ("two voxels meeting at a corner, 6-connected", box((4, 4, 4), 1, 1, 1)
     + box((4, 4, 4), 2, 2, 2), 6, 2),
    ("the same, 26-connected", box((4, 4, 4), 1, 1, 1) + box((4, 4, 4), 2, 2, 2), 26, 1),
])
def test_euler_characteristic_3d_counts_components_tunnels_and_cavities(name, volume,
                                                                        connectivity, expected):
    assert euler_characteristic_3d(volume, connectivity) == expected, name


def test_spanning_fraction_finds_the_direction_a_phase_percolates_in():
    rod = box((6, 6, 10), slice(2, 4), slice(2, 4), slice(None))  # along x
    assert [spanning_fraction(rod, 1, axis) for axis in range(3)] == [0.0, 0.0, 1.0]
    layers = np.zeros((12, 8, 8), np.uint8)
    layers[::3] = 1  # sheets normal to z: connected in y and x, never through z
    assert [spanning_fraction(layers, 1, axis) for axis in range(3)] == [0.0, 1.0, 1.0]
    rod_and_speck = rod + box((6, 6, 10), 0, 0, 0)
    assert spanning_fraction(rod_and_speck, 1, 2) == pytest.approx(40 / 41)
    assert np.isnan(spanning_fraction(np.zeros((4, 4, 4), np.uint8), 1, 0))


def test_s2_along_axes_equals_the_s2_of_the_sections():
    rng = np.random.default_rng(0)
    volume = (rng.random((10, 16, 16)) < 0.4).astype(np.uint8)
    s2 = s2_along_axes(volume, r_max=5)
    assert s2[:, 0] == pytest.approx([volume.mean()] * 3)
    along_x = two_point_correlation(volume).x[:, :6].mean(0)  # z-sections, lags along x
    along_y = two_point_correlation(volume).y[:, :6].mean(0)
    assert s2[2] == pytest.approx(along_x, abs=1e-6)  # the 2-D S2: a float32 FFT
    assert s2[1] == pytest.approx(along_y, abs=1e-6)
    by_hand = np.mean(volume[:-3].astype(float) * volume[3:])
    assert s2[0, 3] == pytest.approx(by_hand)


def test_correlation_length_and_anisotropy_of_layers():
    rng = np.random.default_rng(1)
    # columns of random height along z: long-range order in z, none in y and x
    volume = np.repeat((rng.random((1, 32, 32)) < 0.3).astype(np.uint8), 24, axis=0)
    descriptors = volume_descriptors(volume)
    lengths = descriptors["correlation_length"]
    assert np.isnan(lengths["axis_0"])  # never decays along z within half the volume
    assert 0 < lengths["axis_1"] < 1.5 and 0 < lengths["axis_2"] < 1.5
    assert descriptors["spanning_fraction"]["phase_1"]["axis_0"] == 1.0
    assert correlation_length_of(np.array([0.5, 0.25, 0.25]), 0.5) == pytest.approx(
        1 - 1 / np.e, rel=1e-9)  # scaled 1, 0: crosses 1/e at r = 1 - 1/e
