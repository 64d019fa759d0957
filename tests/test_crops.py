"""Random training crops: windows only inside the training regions, every allowed window
reachable, transforms as configured, draws repeatable from the generator."""

import numpy as np
import pytest
import torch

from microvae.crops import CropSampler, transform_grids, window_origins
from microvae.dataset import SourceTiles, pack, training_regions
from microvae.errors import MicrovaeError


def brute_force_origins(mask, size):
    n, h, w = mask.shape
    out = np.zeros((n, h - size + 1, w - size + 1), bool)
    for s in range(n):
        for y in range(h - size + 1):
            for x in range(w - size + 1):
                out[s, y, x] = mask[s, y:y + size, x:x + size].all()
    return out


def test_window_origins_equal_a_brute_force_search():
    mask = (np.random.default_rng(0).random((3, 12, 15)) > 0.2).astype(np.uint8)
    mask[1, 2:10, 3:14] = 1
    for size in (1, 2, 3, 5):
        assert np.array_equal(window_origins(mask, size), brute_force_origins(mask, size))


def test_crops_never_leave_the_mask_and_reach_every_allowed_window():
    # a marked image: 0 inside the training regions, 1 outside; an L-shaped region
    mask = np.zeros((2, 10, 12), np.uint8)
    mask[0, 0:6, 0:12] = 1
    mask[0, 6:10, 0:4] = 1
    mask[1, 3:9, 5:11] = 1
    regions = torch.from_numpy(1 - mask)
    sampler = CropSampler(regions, mask, 4, "dihedral")
    generator = torch.Generator().manual_seed(0)
    crops = sampler.sample(4000, generator)
    assert crops.shape == (4000, 1, 4, 4)
    assert crops.max() == 0  # not one pixel from outside the mask
    origins = sampler.origins(20000, generator)
    allowed = np.flatnonzero(window_origins(mask, 4))
    assert set(origins.tolist()) == set(allowed.tolist())
    assert sampler.n_windows == len(allowed) == 3 * 9 + 4 + 3 * 3  # top band, the leg below it, section 1


def test_no_window_fits_is_an_error():
    mask = np.zeros((1, 8, 8), np.uint8)
    mask[0, :3, :] = 1
    with pytest.raises(MicrovaeError, match="no 4 px window"):
        CropSampler(torch.zeros(1, 8, 8, dtype=torch.uint8), mask, 4)


def numpy_transforms(window):
    return [window, window[:, ::-1], window[::-1, :], window[::-1, ::-1],
            window.T, window.T[:, ::-1], window.T[::-1, :], window.T[::-1, ::-1]]


def test_transform_grids_are_the_dihedral_group_in_the_documented_order():
    window = np.arange(25).reshape(5, 5)
    rows, cols = transform_grids(5)
    got = [window[rows[t].numpy(), cols[t].numpy()] for t in range(8)]
    expected = numpy_transforms(window)
    for t in range(8):
        assert np.array_equal(got[t], expected[t]), t
    assert np.array_equal(got[3], np.rot90(window, 2))
    assert {np.rot90(window, k).tobytes() for k in range(4)} <= {g.tobytes() for g in got}


@pytest.mark.parametrize("augment,n", [("none", 1), ("flips", 4), ("dihedral", 8)])
def test_augmentation_draws_the_configured_transforms(augment, n):
    canvas = np.arange(36, dtype=np.uint8).reshape(1, 6, 6)  # every pixel its own value
    mask = np.ones_like(canvas)
    sampler = CropSampler(torch.from_numpy(canvas), mask, 3, augment)
    crops = sampler.sample(3000, torch.Generator().manual_seed(1))[:, 0].numpy().astype(np.uint8)
    seen = set()
    for crop in crops:
        found = [t for y in range(4) for x in range(4)
                 for t, view in enumerate(numpy_transforms(canvas[0, y:y + 3, x:x + 3]))
                 if np.array_equal(view, crop)]
        assert len(found) == 1
        seen.add(found[0])
    assert seen == set(range(n))


def test_draws_repeat_from_the_same_generator_state():
    mask = np.ones((2, 16, 16), np.uint8)
    regions = torch.from_numpy((np.random.default_rng(0).random((2, 16, 16)) > 0.5)
                               .astype(np.uint8))
    sampler = CropSampler(regions, mask, 8, "dihedral")
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    first = sampler.sample(64, generator)
    generator.set_state(state)
    assert torch.equal(first, sampler.sample(64, generator))


def test_training_regions_of_a_split_in_space_hold_only_training_pixels():
    """One image split in space: the training canvas holds the image's own pixels where its
    mask is set, and no validation or test tile overlaps the mask."""
    image = (np.random.default_rng(2).random((96, 40)) > 0.6).astype(np.uint8)
    size = 8
    tiles, origin, corner = [], [], []
    for y in range(0, 96 - size + 1, 4):  # stride 4: overlapping tiles
        for x in range(0, 40 - size + 1, 4):
            tiles.append(image[y:y + size, x:x + size])
            origin.append((0, -1, 0, y, x))
            corner.append((0, y, x))
    source = SourceTiles("img", np.stack(tiles), np.array(origin), np.array(corner))
    arrays, _, split = pack([source], {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    assert split.mode["img"] == "regions"
    canvas, mask = arrays["train_regions"], arrays["train_regions_mask"]
    assert canvas.shape[0] == 1 and np.array_equal(arrays["train_regions_section"], [[0, 0, -1, 0]])
    inside = mask[0].astype(bool)
    assert np.array_equal(canvas[0][inside], image[:canvas.shape[1], :canvas.shape[2]][inside])
    for name in ("val", "test"):
        for y, x in arrays[f"{name}_origin"][:, 4:6]:
            assert not inside[y:y + size, x:x + size].any()
    rebuilt, covered, _ = training_regions(arrays["train"], arrays["train_origin"])
    assert np.array_equal(rebuilt, canvas) and np.array_equal(covered, mask)
