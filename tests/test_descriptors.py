import numpy as np
import porespy as ps
import pytest
from scipy import ndimage

from microvae import descriptors as d
from microvae.descriptors import (
    chord_lengths,
    islands,
    phase_fraction,
    specific_perimeter,
    two_point_correlation,
)


def blobs(shape, seed, sigma=2.0, level=0.5):
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.random(shape), sigma) > level).astype(np.uint8)


@pytest.mark.parametrize("shape,seed", [((64, 64), 0), ((128, 128), 1), ((48, 64), 2),
                                        ((33, 40), 3), ((96, 80), 4), ((64, 64), 5)])
def test_radial_s2_matches_porespy(shape, seed):
    image = blobs(shape, seed, sigma=1.5 + seed % 3)
    ours = two_point_correlation(image[None]).radial[0]
    reference = ps.metrics.two_point_correlation(image.astype(bool)).probability_scaled
    assert len(reference) == min(shape) // 2
    np.testing.assert_allclose(ours[:len(reference)], reference, atol=1e-6, rtol=0)


def test_stack_equals_one_by_one():
    stack = np.stack([blobs((32, 32), s) for s in range(5)])
    together = two_point_correlation(stack, batch_size=2)
    for i, image in enumerate(stack):
        alone = two_point_correlation(image[None])
        np.testing.assert_allclose(together.radial[i], alone.radial[0], atol=1e-9)


def test_s2_of_zero_is_phase_fraction():
    stack = np.stack([blobs((40, 40), s) for s in range(3)])
    curves = two_point_correlation(stack)
    np.testing.assert_allclose(curves.radial[:, 0], phase_fraction(stack), atol=1e-7)
    np.testing.assert_allclose(curves.x[:, 0], phase_fraction(stack), atol=1e-7)


def test_checkerboard_by_hand():
    yy, xx = np.mgrid[:16, :16]
    board = ((yy + xx) % 2).astype(np.uint8)
    curves = two_point_correlation(board[None])
    # along x and y: lag 0 -> 1/2, odd lags never match, even lags always match
    expected = np.where(np.arange(9) % 2 == 0, 0.5, 0.0)
    np.testing.assert_allclose(curves.x[0], expected, atol=1e-7)
    np.testing.assert_allclose(curves.y[0], expected, atol=1e-7)


def test_stripes_tell_x_from_y():
    stripes = np.zeros((16, 16), np.uint8)
    stripes[:, ::4] = 1  # vertical lines, period 4 along x
    stripes[:, 1::4] = 1
    curves = two_point_correlation(stripes[None])
    np.testing.assert_allclose(curves.y[0], np.full(9, 0.5), atol=1e-7)  # constant along y
    # along x: lag r pairs, each column pattern 1100 repeating; S2(r) = count/overlap
    x = np.arange(16)
    column = (x % 4 < 2).astype(float)
    by_hand = [np.mean(column[:16 - r] * column[r:]) for r in range(9)]
    np.testing.assert_allclose(curves.x[0], by_hand, atol=1e-7)


def test_chords_and_perimeter_by_hand():
    image = np.zeros((1, 6, 10), np.uint8)
    image[0, 2, 2:5] = 1  # a 3-pixel chord along x in row 2
    assert chord_lengths(image, 1, "x").tolist() == [3]
    assert sorted(chord_lengths(image, 1, "y").tolist()) == [1, 1, 1]
    assert chord_lengths(image, 0, "x").tolist() == []  # all phase-0 chords touch the border
    perimeter = specific_perimeter(image)[0]
    changes_x, changes_y = 2 / (6 * 9), 6 / (5 * 10)
    assert perimeter == pytest.approx(np.pi / 4 * (changes_x + changes_y))


def test_islands_count_and_area():
    image = np.zeros((2, 8, 8), np.uint8)
    image[0, 1:3, 1:3] = 1
    image[0, 5, 5] = 1
    image[1, 4:7, 0:2] = 1
    counts, areas = islands(image)
    assert counts.tolist() == [2, 1]
    assert sorted(areas.tolist()) == [1, 4, 6]


def test_periodic_s2_equals_a_loop_over_rolled_images():
    rng = np.random.default_rng(7)
    images = (rng.random((3, 12, 16)) > 0.6).astype(np.uint8)
    curves = d.two_point_correlation(images, periodic=True)
    for i, image in enumerate(images):
        for r in range(7):
            assert curves.x[i, r] == pytest.approx(np.mean(image * np.roll(image, -r, axis=1)))
            assert curves.y[i, r] == pytest.approx(np.mean(image * np.roll(image, -r, axis=0)))
    assert curves.radial[:, 0] == pytest.approx(images.mean((1, 2)))
    # stripes across a non-periodic edge: the periodic S2 sees the wrap, the plain one does not
    stripes = np.zeros((1, 8, 8), np.uint8)
    stripes[:, :, :3] = 1
    assert d.two_point_correlation(stripes, periodic=True).x[0, 4] == pytest.approx(0.0, abs=1e-6)
    assert d.two_point_correlation(stripes).x[0, 4] == pytest.approx(0.0, abs=1e-6)
    assert d.two_point_correlation(stripes, periodic=True).x[0, 2] == pytest.approx(1 / 8)
    assert d.two_point_correlation(stripes).x[0, 2] == pytest.approx(1 / 6)
