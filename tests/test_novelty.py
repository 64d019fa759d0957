import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from microvae import novelty as nv
from microvae.novelty import Library, dihedral, near_empty, nearest_iou, novelty


def canvases(n, height, width, seed, sigma=2.0, level=0.3):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((n, height, width)), (0, sigma, sigma))
    return (field > level * field.std()).astype(np.uint8)


def exhaustive(queries, library, mask, size):
    """Every translation inside the mask, every dihedral transform, by direct correlation."""
    lib = torch.from_numpy(library).float()[:, None]
    inside = F.conv2d(torch.from_numpy(mask).float()[:, None], torch.ones(1, 1, size, size))
    inside = inside[:, 0] >= size * size - 0.5
    area = F.conv2d(lib, torch.ones(1, 1, size, size))[:, 0]
    out = []
    for query in queries:
        best = -1.0
        for turned in dihedral(query[None])[:, 0]:
            q = torch.from_numpy(np.ascontiguousarray(turned)).float()[None, None]
            inter = F.conv2d(lib, q)[:, 0]
            iou = inter / (q.sum() + area - inter)
            best = max(best, float(torch.where(inside, iou, torch.tensor(-1.0)).max()))
        out.append(best)
    return np.array(out)


def test_the_search_finds_what_an_exhaustive_search_finds():
    library = canvases(6, 72, 80, 0)
    mask = np.ones_like(library)
    mask[2, :, 50:] = 0  # the right of one canvas is another split's
    size = 16
    rng = np.random.default_rng(1)
    copies = []
    for _ in range(8):  # shifted, turned copies of windows inside the mask
        s = int(rng.integers(6))
        width = 50 if s == 2 else 80
        y, x = rng.integers(0, 72 - size), rng.integers(0, width - size)
        copies.append(dihedral(library[s, y:y + size, x:x + size][None])[rng.integers(8), 0])
    queries = np.concatenate([np.array(copies), canvases(12, size, size, 2)])
    found = nearest_iou(queries, Library.of(library, mask, size))
    expected = exhaustive(queries, library, mask, size)
    usable = ~near_empty(queries)
    assert np.isnan(found[~usable]).all()
    found, expected = found[usable], expected[usable]
    assert np.all(found[:8] == 1.0)  # copies: exact
    gap = expected - found  # others: the coarse step may miss the very best window a little
    assert np.all(gap >= -1e-6) and gap.mean() < 0.02 and gap.max() < 0.08


def test_a_window_outside_the_mask_is_no_match():
    library = canvases(2, 48, 48, 3)
    mask = np.ones_like(library)
    mask[1] = 0
    query = library[1:2, 10:26, 10:26]  # a window of the masked-out canvas
    assert nearest_iou(query, Library.of(library, mask, 16))[0] < 1.0


def test_near_empty_images_are_left_out():
    images = np.zeros((3, 16, 16), np.uint8)
    images[1, 0, 0] = 1              # 1 px of phase 1: near-empty
    images[2] = canvases(1, 16, 16, 4)[0]
    assert near_empty(images).tolist() == [True, True, False]
    full = np.ones((1, 16, 16), np.uint8)
    assert near_empty(full).tolist() == [True]
    best = nearest_iou(images, Library.of(canvases(2, 40, 40, 5), np.ones((2, 40, 40)), 16))
    assert np.isnan(best[:2]).all() and np.isfinite(best[2])


def training_windows(library, size):
    return np.concatenate([library[:, y:y + size, x:x + size]
                           for y in range(0, library.shape[1] - size + 1, size)
                           for x in range(0, library.shape[2] - size + 1, size)])


def test_an_exact_copy_scores_one_even_with_empty_reference_tiles():
    """The issue's case: where 10% of the reference tiles are empty, the old 95th percentile
    was 1.0 and a copy of the training set scored 0.0."""
    size = 16
    library = canvases(8, 64, 64, 6)
    lib = Library.of(library, np.ones_like(library), size)
    reference = canvases(90, size, size, 7)
    reference = np.concatenate([reference, np.zeros((10, size, size), np.uint8)])  # 10% empty
    tiles = training_windows(library, size)
    copy = novelty(tiles[:100], reference, lib)
    assert copy["fraction_closer"] >= 0.9 and copy["median_best_iou"] == 1.0
    assert copy["reference_share_near_empty"] >= 0.1  # the empty ones, and any near-empty
    assert 0 < copy["threshold_best_iou"] < 1.0
    fresh = novelty(canvases(100, size, size, 8), reference, lib)
    assert fresh["fraction_closer"] <= 0.2


def test_shifted_and_turned_crops_are_flagged_as_copies():
    size = 16
    library = canvases(8, 64, 64, 9)
    lib = Library.of(library, np.ones_like(library), size)
    rng = np.random.default_rng(10)
    crops = np.array([np.rot90(library[s, y:y + size, x:x + size], k)
                      for s, y, x, k in zip(rng.integers(0, 8, 60), rng.integers(0, 48, 60),
                                            rng.integers(0, 48, 60), rng.integers(0, 4, 60))])
    result = novelty(crops, canvases(100, size, size, 11), lib)
    assert result["fraction_closer"] >= 0.9


def test_the_coarse_search_over_every_kth_canvas_still_finds_copies(monkeypatch):
    """Where the canvases hold more windows than the coarse search scores, it visits every
    k-th canvas and the fine search the canvases around: copies of skipped canvases are found
    exactly through the index of patches."""
    monkeypatch.setattr(nv, "COARSE_WINDOWS", 2**9)
    size = 16
    volume = canvases(12, 64, 64, 12)
    lib = Library.of(volume, np.ones_like(volume), size)
    assert lib.neighbours >= 1 and len(lib.coarse_origin) < len(volume)
    rng = np.random.default_rng(13)
    crops = np.array([volume[s, y:y + size, x:x + size]
                      for s, y, x in zip(rng.integers(0, 12, 30), rng.integers(0, 48, 30),
                                         rng.integers(0, 48, 30))])
    best = nearest_iou(crops, lib)
    usable = ~near_empty(crops)
    assert np.all(best[usable] == 1.0)


def test_patch_keys_are_equal_for_equal_patches_only():
    rng = np.random.default_rng(14)
    image = (rng.random((1, 20, 20)) > 0.5).astype(np.uint8)
    keys = nv.patch_keys(image, 8)
    assert keys.shape == (1, 13, 13)
    patches = {tuple(image[0, y:y + 8, x:x + 8].ravel()): keys[0, y, x]
               for y in range(13) for x in range(13)}
    assert len(set(patches.values())) == len(patches)  # no collision among distinct patches
    strided = nv.patch_keys(image, 8, stride=4)
    np.testing.assert_array_equal(strided, keys[:, ::4, ::4])
