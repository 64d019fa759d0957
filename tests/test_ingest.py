from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from microvae.errors import MicrovaeError
from microvae.ingest import (
    colour_to_grey,
    crop_image,
    expand_paths,
    read_array,
    scale_to_unit,
    tile_positions,
    tile_source,
)


def test_scaling_rules():
    assert scale_to_unit(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert scale_to_unit(np.array([[0, 65535]], np.uint16)).tolist() == [[0.0, 1.0]]
    assert scale_to_unit(np.array([[2.0, 4.0]])).tolist() == [[0.0, 1.0]]
    assert scale_to_unit(np.array([[0.25, 0.5]])).tolist() == [[0.25, 0.5]]
    assert scale_to_unit(np.array([[True, False]])).dtype == np.float32


def test_colour_to_grey_drops_alpha():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 17
    assert np.all(colour_to_grey(rgba, Path("x.png")) == 200)


def test_png_rgba_and_16bit_tiff(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 255, (40, 40, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", rgba)
    grey = read_array(tmp_path / "a.png")
    assert grey.shape == (40, 40)
    deep = (np.arange(1600).reshape(40, 40) * 40).astype(np.uint16)
    tifffile.imwrite(tmp_path / "b.tif", deep)
    assert read_array(tmp_path / "b.tif").dtype == np.uint16
    tiles = tile_source([tmp_path / "b.tif"], 16)
    assert tiles.images.max() <= 1.0 and tiles.images.dtype == np.float32


def test_volume_formats_slice_along_axes(tmp_path):
    volume = np.random.default_rng(1).random((8, 32, 48)).astype(np.float32)
    np.save(tmp_path / "v.npy", volume)
    tifffile.imwrite(tmp_path / "v.tif", (volume * 255).astype(np.uint8))
    with h5py.File(tmp_path / "v.h5", "w") as h5:
        h5["scan/iq"] = volume
    for path, kwargs in ((tmp_path / "v.npy", {}), (tmp_path / "v.tif", {}),
                         (tmp_path / "v.h5", {"dataset": "scan/iq"})):
        tiles = tile_source([path], 8, axes=(0, 1), **kwargs)
        # axis 0: 8 sections of 32x48 -> 4*6 tiles; axis 1: 32 sections of 8x48 -> 6 tiles
        assert len(tiles.images) == 8 * 24 + 32 * 6
        assert set(tiles.origin[:, 1]) == {0, 1}
    tiles = tile_source([tmp_path / "v.npy"], 8)
    y, x, s = tiles.origin[5, 3], tiles.origin[5, 4], tiles.origin[5, 2]
    assert np.array_equal(tiles.images[5], volume[s, y:y + 8, x:x + 8])


def test_crop_and_stride():
    image = np.arange(100).reshape(10, 10)
    assert crop_image(image, {"top": 1, "bottom": 2, "left": 3}, Path("x")).shape == (7, 7)
    assert tile_positions(10, 10, 4, 3) == [(y, x) for y in (0, 3, 6) for x in (0, 3, 6)]
    with pytest.raises(MicrovaeError, match="removes the whole"):
        crop_image(image, {"top": 5, "bottom": 5}, Path("x"))


def test_truth_is_tiled_alongside(tmp_path):
    grey = np.random.default_rng(2).random((4, 16, 16))
    truth = (grey > 0.5).astype(np.uint8)
    np.save(tmp_path / "g.npy", grey)
    np.save(tmp_path / "t.npy", truth)
    tiles = tile_source([tmp_path / "g.npy"], 8, truth_files=[tmp_path / "t.npy"])
    assert np.array_equal(tiles.truth, (tiles.images > 0.5).astype(np.uint8))


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(MicrovaeError, match="matches no file"):
        expand_paths([str(tmp_path / "*.png")], "sources[x].paths")


@pytest.mark.parametrize("name,content,message", [
    ("empty.png", b"", "empty"),
    ("text.png", b"this is not an image\n" * 10, "cannot read"),
    ("text.tif", b"II*\x00garbage" * 10, "cannot read"),
])
def test_unreadable_files(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MicrovaeError, match=message) as info:
        read_array(tmp_path / name)
    assert name in str(info.value)


def test_truncated_png(tmp_path):
    iio.imwrite(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64),
                                                                         dtype=np.uint8))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MicrovaeError, match="cut.png"):
        read_array(tmp_path / "cut.png")


def test_nan_volume(tmp_path):
    volume = np.zeros((4, 16, 16))
    volume[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", volume)
    with pytest.raises(MicrovaeError, match="NaN or infinite"):
        read_array(tmp_path / "nan.npy")


def test_image_smaller_than_a_tile(tmp_path):
    iio.imwrite(tmp_path / "small.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(MicrovaeError, match="smaller than one 16x16 tile"):
        tile_source([tmp_path / "small.png"], 16)


def test_axis_the_volume_lacks(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((4, 16, 16)))
    with pytest.raises(MicrovaeError, match="axis 3"):
        tile_source([tmp_path / "v.npy"], 8, axes=(3,))


def test_missing_hdf5_dataset(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as h5:
        h5["other"] = np.zeros((4, 16, 16))
    with pytest.raises(MicrovaeError, match="no data set 'scan/iq'"):
        read_array(tmp_path / "v.h5", dataset="scan/iq")
