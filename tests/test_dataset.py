import h5py
import numpy as np
import pytest

from microvae.dataset import SourceTiles, assign_groups, load_split, pack, split_tiles
from microvae.errors import MicrovaeError


def make_source(name, n_files, n_slices=10, tiles_per_slice=4):
    origin = [(f, 0, s, t, 0) for f in range(n_files) for s in range(n_slices)
              for t in range(tiles_per_slice)]
    images = np.random.default_rng(len(origin)).integers(0, 2, (len(origin), 8, 8), np.uint8)
    return SourceTiles(name, images, np.array(origin, np.int32))


FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def test_split_keeps_files_whole():
    source = make_source("a", n_files=10)
    index = split_tiles([source], FRACTIONS, seed=0)
    owner = {}
    for split, rows in index.items():
        for f in np.unique(source.origin[rows, 0]):
            assert owner.setdefault(f, split) == split
    assert sum(len(v) for v in index.values()) == len(source.images)
    assert len(index["train"]) == 240 and len(index["val"]) == len(index["test"]) == 80


def test_single_volume_is_split_in_slice_blocks():
    source = make_source("a", n_files=1, n_slices=40)
    index = split_tiles([source], FRACTIONS, seed=1)
    slices = {split: set(np.unique(source.origin[rows, 2])) for split, rows in index.items()}
    assert all(slices.values())
    # blocks are contiguous runs of 5 slices: no slice is shared between splits
    assert slices["train"].isdisjoint(slices["val"] | slices["test"])
    assert slices["val"].isdisjoint(slices["test"])


def test_every_split_gets_a_group():
    assignment = assign_groups({0: 100, 1: 1, 2: 1}, FRACTIONS, np.random.default_rng(0))
    assert sorted(assignment.values()) == ["test", "train", "val"]


def test_bad_fractions():
    with pytest.raises(MicrovaeError, match="sum to 1"):
        split_tiles([make_source("a", 5)], {"train": 0.5, "val": 0.2, "test": 0.2}, 0)


def test_pack_is_deterministic_and_loadable(tmp_path):
    sources = [make_source("a", 4), make_source("b", 3)]
    pack(sources, tmp_path / "one.h5", FRACTIONS, 7, attrs={"note": "x"})
    pack(sources, tmp_path / "two.h5", FRACTIONS, 7, attrs={"note": "x"})
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
