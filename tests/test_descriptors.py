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
        # float32 FFTs of different batch sizes may take different SIMD paths: equal to rounding
        np.testing.assert_allclose(together.radial[i], alone.radial[0], atol=1e-6, rtol=0)


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


# --- higher-order descriptors against independent references ----------------------------------

def brute_lineal_path(image, phase, r, axis):
    image = image if axis == "x" else image.T
    height, width = image.shape
    hits = sum(np.all(image[i, j:j + r + 1] == phase)
               for i in range(height) for j in range(width - r))
    return hits / (height * (width - r))


@pytest.mark.parametrize("seed,shape", [(0, (24, 24)), (1, (20, 30)), (2, (33, 17))])
def test_lineal_path_counts_every_placed_segment(seed, shape):
    image = blobs(shape, seed, sigma=1.5)
    for phase in (0, 1):
        for axis in "xy":
            ours = d.lineal_path(image[None], phase, axis)[0]
            by_hand = [brute_lineal_path(image, phase, r, axis) for r in range(len(ours))]
            np.testing.assert_allclose(ours, by_hand, atol=1e-12)


def test_lineal_path_agrees_with_monte_carlo_segments():
    image = blobs((64, 64), 3, sigma=2.0)
    rng = np.random.default_rng(0)
    ours = d.lineal_path(image[None], 1, "x")[0]
    for r in (0, 3, 8):
        rows, cols = rng.integers(0, 64, 20_000), rng.integers(0, 64 - r, 20_000)
        inside = np.array([image[y, x:x + r + 1].all() for y, x in zip(rows, cols)])
        assert inside.mean() == pytest.approx(ours[r], abs=4 * inside.std() / np.sqrt(20_000))
    assert ours[0] == pytest.approx(image.mean())


def test_two_point_cluster_by_hand_and_by_brute_force():
    image = np.zeros((1, 12, 12), np.uint8)
    image[0, 1:3, 1:4] = 1   # island A, 2 x 3
    image[0, 1:3, 6:9] = 1   # island B, 2 x 3, same rows: S2 sees A-B pairs, C2 does not
    c2 = d.two_point_cluster(image, "x")[0]
    s2 = d.two_point_correlation(image).x[0]
    # lag 5 along x: pairs (A, B) only -> C2 = 0, S2 > 0
    assert c2[5] == 0.0 and s2[5] > 0
    # lag 1: 2 rows x 2 pairs in each island = 8 pairs of 12 x 11 placements
    assert c2[1] == pytest.approx(8 / (12 * 11))
    rng = np.random.default_rng(4)
    stack = (rng.random((3, 10, 14)) > 0.45).astype(np.uint8)
    from scipy import ndimage as ndi

    for axis in "xy":
        ours = d.two_point_cluster(stack, axis)
        for i, one in enumerate(stack):
            labels, _ = ndi.label(one)
            grid = labels if axis == "x" else labels.T
            for r in range(ours.shape[1]):
                pairs = [(grid[y, x] > 0 and grid[y, x] == grid[y, x + r])
                         for y in range(grid.shape[0]) for x in range(grid.shape[1] - r)]
                assert ours[i, r] == pytest.approx(np.mean(pairs))
    assert np.all(ours <= d.two_point_correlation(stack).y + 1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_euler_characteristic_equals_skimage(seed):
    from skimage.measure import euler_number

    stack = np.stack([blobs((40, 40), seed * 10 + k, sigma=1.2) for k in range(5)])
    for connectivity, skimage_connectivity in ((4, 1), (8, 2)):
        ours = d.euler_characteristic(stack, connectivity)
        assert ours.tolist() == [euler_number(im, connectivity=skimage_connectivity)
                                 for im in stack]


def test_euler_characteristic_by_hand():
    ring = np.zeros((1, 7, 7), np.uint8)
    ring[0, 1:6, 1:6] = 1
    ring[0, 3, 3] = 0                     # one island with one hole: chi = 0
    dots = np.zeros((1, 7, 7), np.uint8)
    dots[0, 1, 1] = dots[0, 2, 2] = 1     # touching corners: 2 islands (4-conn), 1 (8-conn)
    assert d.euler_characteristic(ring).tolist() == [0]
    assert d.euler_characteristic(dots, 4).tolist() == [2]
    assert d.euler_characteristic(dots, 8).tolist() == [1]


def test_scaled_autocovariance_ignores_the_level_and_finds_the_correlation_length():
    image = blobs((96, 96), 5, sigma=2.0)
    curves = d.two_point_correlation(image[None])
    phi = d.phase_fraction(image[None])
    scaled = d.scaled_autocovariance(curves.radial, phi)[0]
    assert scaled[0] == pytest.approx(1.0)
    # a checkerboard decorrelates at once; constant images have no covariance
    assert np.isnan(d.scaled_autocovariance(np.ones((1, 3)), np.array([1.0]))).all()
    length = d.correlation_length(scaled)
    assert length is not None and scaled[length] < 0.1 <= scaled[length - 1]
    assert d.correlation_length(np.array([1.0, 0.9, 0.8])) is None
