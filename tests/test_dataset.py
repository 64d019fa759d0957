import h5py
import numpy as np
import pytest

from microvae.dataset import (
    SPLITS,
    SourceTiles,
    assign_groups,
    pack,
    region_runs,
    split_tiles,
)
from microvae.errors import MicrovaeError
from microvae.h5io import load_split, write_arrays
from microvae.ingest import tile_source


def make_source(name, n_files, n_slices=10, tiles_per_slice=4):
    origin = [(f, 0, s, t, 0) for f in range(n_files) for s in range(n_slices)
              for t in range(tiles_per_slice)]
    images = np.random.default_rng(len(origin)).integers(0, 2, (len(origin), 8, 8), np.uint8)
    return SourceTiles(name, images, np.array(origin, np.int32))


FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def test_split_keeps_files_whole():
    source = make_source("a", n_files=10)
    index = split_tiles([source], FRACTIONS, seed=0).index
    owner = {}
    for split, rows in index.items():
        for f in np.unique(source.origin[rows, 0]):
            assert owner.setdefault(f, split) == split
    assert sum(len(v) for v in index.values()) == len(source.images)
    assert len(index["train"]) == 240 and len(index["val"]) == len(index["test"]) == 80


def tiles_of(tmp_path, array, size, stride=None, axes=(0,), name="a.npy", group=None):
    np.save(tmp_path / name, array)
    tiles = tile_source([tmp_path / name], size, stride=stride, axes=axes, group=group)
    return SourceTiles("s", tiles.images.astype(np.uint8), tiles.origin, tiles.corner,
                       tiles.groups)


def covered(source, rows, axis, size):
    """Voxel index range [lo, hi) along ``axis`` covered by the tiles ``rows``."""
    starts = source.corner[rows, axis]
    extent = 1 if np.all(source.origin[rows, 1] == axis) else size
    return starts.min(), starts.max() + extent


@pytest.mark.parametrize("stride", [32, 16, 5])
def test_single_image_is_split_in_slabs_with_a_gap(tmp_path, stride):
    image = np.random.default_rng(0).integers(0, 2, (200, 700), dtype=np.uint8)
    source = tiles_of(tmp_path, image, 32, stride)
    split = split_tiles([source], {"train": 0.75, "val": 0.125, "test": 0.125}, seed=0)
    assert split.mode == {"s": "regions"}
    assert {r.split for r in split.regions} == set(SPLITS)
    assert all(r.axis == 2 for r in split.regions)  # the longer axis (x) of the image
    slabs = {r.split: (r.start, r.stop) for r in split.regions}
    for name, rows in split.index.items():
        assert len(rows)
        lo, hi = covered(source, rows, 2, 32)
        assert (lo, hi) == slabs[name]  # every tile lies inside its split's slab
        for other, (o_lo, o_hi) in slabs.items():  # and at least one tile away from the others
            if other != name:
                assert hi + 32 <= o_lo or o_hi + 32 <= lo
    n_train, n_all = len(split.index["train"]), sum(len(v) for v in split.index.values())
    assert abs(n_train / n_all - 0.75) < 0.08
    assert split.in_gaps["s"] == len(source.images) - n_all > 0


def test_single_volume_is_split_in_slabs_free_of_every_cut_axis(tmp_path):
    volume = np.random.default_rng(1).integers(0, 2, (40, 48, 160), dtype=np.uint8)
    source = tiles_of(tmp_path, volume, 16, axes=(0, 1))
    split = split_tiles([source], FRACTIONS, seed=1)
    assert {r.axis for r in split.regions} == {2}  # x: the one axis that no section is cut along
    owner = np.full(volume.shape[2], "", dtype=object)
    for name, rows in split.index.items():
        for x in source.corner[rows, 2]:
            assert set(owner[x:x + 16]) <= {"", name}  # no voxel column in two splits
            owner[x:x + 16] = name


def test_serial_sections_grouped_by_file_name_stay_together(tmp_path):
    rng = np.random.default_rng(2)
    files = []
    for specimen in ("A", "B", "C", "D"):
        for section in range(3):
            files.append(tmp_path / f"{specimen}_sec{section}.npy")
            np.save(files[-1], rng.integers(0, 2, (32, 32), dtype=np.uint8))
    tiles = tile_source(files, 16, group=r"^([A-Z])_")
    source = SourceTiles("s", tiles.images.astype(np.uint8), tiles.origin, tiles.corner,
                         tiles.groups)
    split = split_tiles([source], {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    assert split.mode == {"s": "groups"}
    for name, rows in split.index.items():
        specimens = {tiles.groups[e] for e in source.origin[rows, 0]}
        assert len(specimens) == 1 or name == "train"
        for other, other_rows in split.index.items():
            if other != name:
                assert specimens.isdisjoint({tiles.groups[e] for e in source.origin[other_rows, 0]})


def test_all_files_one_volume_is_split_in_slabs(tmp_path):
    rng = np.random.default_rng(3)
    files = []
    for section in range(4):
        files.append(tmp_path / f"sec{section}.npy")
        np.save(files[-1], rng.integers(0, 2, (64, 160), dtype=np.uint8))
    tiles = tile_source(files, 16, group="all")
    source = SourceTiles("s", tiles.images.astype(np.uint8), tiles.origin, tiles.corner,
                         tiles.groups)
    split = split_tiles([source], FRACTIONS, seed=0)
    assert split.mode == {"s": "regions"} and len(split.regions) == 3
    for rows in split.index.values():  # every section contributes to every split
        assert set(source.origin[rows, 0]) == {0, 1, 2, 3}


def test_region_runs_proportions_and_refusal():
    starts = np.arange(0, 100 * 8, 8)
    runs = region_runs(starts, 8, {"train": 0.8, "val": 0.1, "test": 0.1}, "x")
    assert runs["train"][0] == 0 and runs["test"][1] == 99
    assert runs["val"][0] - runs["train"][1] == 2 and runs["test"][0] - runs["val"][1] == 2
    assert runs["val"][1] - runs["val"][0] + 1 == 10
    assert set(region_runs(starts, 8, {"train": 0.9, "val": 0.0, "test": 0.1}, "x")) == \
        {"train", "test"}
    with pytest.raises(MicrovaeError, match="x: 32 px hold 4 tile positions"):
        region_runs(np.arange(0, 32, 8), 8, FRACTIONS, "x")


def test_every_split_gets_a_group():
    assignment = assign_groups({0: 100, 1: 1, 2: 1}, FRACTIONS, np.random.default_rng(0))
    assert sorted(assignment.values()) == ["test", "train", "val"]


def test_bad_fractions():
    with pytest.raises(MicrovaeError, match="sum to 1"):
        split_tiles([make_source("a", 5)], {"train": 0.5, "val": 0.2, "test": 0.2}, 0)


def test_pack_is_deterministic_and_loadable(tmp_path):
    sources = [make_source("a", 4), make_source("b", 3)]
    for name in ("one.h5", "two.h5"):
        arrays, attrs, _ = pack(sources, FRACTIONS, 7)
        write_arrays(tmp_path / name, arrays, attrs)
    with h5py.File(tmp_path / "one.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        for split in ("train", "val", "test"):
            assert np.array_equal(a[split][()], b[split][()])
            assert a[split].dtype == np.uint8 and a[split].compression == "gzip"
        assert a.attrs["split_seed"] == 7
    assert load_split(tmp_path / "one.h5", "train").ndim == 3


def test_empty_split_is_refused(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as h5:
        h5["train"] = np.zeros((4, 8, 8), np.uint8)
        h5["val"] = np.zeros((0, 8, 8), np.uint8)
        h5["test"] = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(MicrovaeError, match="split 'val' is empty"):
        load_split(tmp_path / "d.h5", "val")


# --- independent blocks of real tiles (the judge's floor) --------------------------------------

def volume_tiles(n_volumes, depth=4, side=128, size=16):
    origin, corner = [], []
    for v in range(n_volumes):
        for z in range(depth):
            for y in range(0, side, size):
                for x in range(0, side, size):
                    origin.append((0, v, 0, z, y, x))
                    corner.append((z, y, x))
    return np.array(origin), np.array(corner)


def test_enough_groups_are_the_blocks():
    from microvae.dataset import independent_blocks

    origin, corner = volume_tiles(9)
    blocks = independent_blocks(origin, corner, 16, gap=10)
    assert len(np.unique(blocks)) == 9 and (blocks >= 0).all()
    assert all(len(np.unique(blocks[origin[:, 1] == v])) == 1 for v in range(9))


def test_few_groups_are_cut_into_boxes_separated_by_the_gap():
    from microvae.dataset import independent_blocks, tile_extents

    origin, corner = volume_tiles(2)
    for gap in (1, 10, 20):
        blocks = independent_blocks(origin, corner, 16, gap=gap)
        labels = np.unique(blocks[blocks >= 0])
        assert len(labels) >= 8
        low, high = tile_extents(origin, corner, 16)
        for a in labels:  # every pair of boxes of one volume lies >= gap apart in y or x
            for b in labels:
                if a >= b or a // 1000 != b // 1000:
                    continue
                ia, ib = blocks == a, blocks == b
                apart = [max(low[ib, k].min() - high[ia, k].max(),
                             low[ia, k].min() - high[ib, k].max()) for k in (1, 2)]
                assert max(apart) >= gap, (gap, a, b, apart)
        # boxes never split along the section axis (4 sections: thinner than a tile)
        for label in labels:
            assert len(np.unique(corner[blocks == label, 0])) == 4


def test_pack_records_the_group_of_every_tile(tmp_path):
    from microvae.dataset import SourceTiles, pack

    origin = np.array([(f, -1, 0, 0, 0) for f in range(6)])
    tiles = SourceTiles("a", np.zeros((6, 8, 8), np.uint8), origin,
                        np.zeros((6, 3), np.int32), groups=["g1", "g1", "g2", "g2", "g3", "g3"])
    arrays, _, _ = pack([tiles], {"train": 1 / 3, "val": 1 / 3, "test": 1 / 3}, 0)
    for split in ("train", "val", "test"):
        groups = arrays[f"{split}_group"]
        assert len(groups) == 2 and len(set(groups.tolist())) == 1  # files of one group stay


def test_the_split_figure_of_a_huge_image_stays_small():
    """Issue 26: the figure drew full-resolution float64 canvases (12 GB for a 12 000 px
    micrograph); its panels are now at most MAX_PANEL_PX on their longer side."""
    from microvae.dataset import SourceTiles, split_tiles
    from microvae.plots import MAX_PANEL_PX, split_figure

    size, side = 16, 6000
    positions = [(y, x) for y in range(0, side, 1000) for x in range(0, side, 1000)]
    origin = np.array([(0, -1, 0, y, x) for y, x in positions])
    corner = np.array([(0, y, x) for y, x in positions])
    tiles = SourceTiles("big", np.ones((len(positions), size, size), np.uint8), origin, corner)
    split = split_tiles([tiles], {"train": 0.5, "val": 0.25, "test": 0.25}, 0)
    figure = split_figure([tiles], split)
    shown = figure.axes[0].images[0].get_array()
    assert max(shown.shape[:2]) <= MAX_PANEL_PX and shown.dtype == np.float32
