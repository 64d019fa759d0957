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
    read_entries,
    scale_to_unit,
    tile_positions,
    tile_source,
)


def test_scale_option_range_and_fixed_interval():
    twelve_bit = np.array([[0, 4095]], np.uint16)
    assert scale_to_unit(twelve_bit).max() == pytest.approx(4095 / 65535)
    assert scale_to_unit(twelve_bit, [0, 4095]).tolist() == [[0.0, 1.0]]
    assert scale_to_unit(np.array([[10, 20]], np.uint8), "range").tolist() == [[0.0, 1.0]]
    assert scale_to_unit(np.array([[0.25, 0.5]]), "range").tolist() == [[0.0, 1.0]]
    assert scale_to_unit(np.array([[-1.0, 1.0]]), [-2, 2]).tolist() == [[0.25, 0.75]]
    with pytest.raises(MicrovaeError, match="f.tif: grey values 0..4095 fall outside"):
        scale_to_unit(twelve_bit, [0, 1000], "f.tif")


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
    ("text.png", b"this is not an image\n" * 10, "not a PNG file .it starts with 'this is '"),
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
    iio.imwrite(tmp_path / "small.png", np.random.default_rng(0).integers(0, 255, (10, 10),
                                                                          dtype=np.uint8))
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


BINARY_MAP = np.random.default_rng(7).random((48, 40)) < 0.2


@pytest.mark.parametrize("dtype,low,high", [
    (bool, False, True), (np.uint8, 0, 1), (np.uint8, 0, 255), (np.uint16, 0, 65535),
    (np.float32, 0.0, 1.0), (np.int32, -3, 7), (np.float64, 0.25, 0.5)])
def test_phase_maps_of_any_dtype_are_kept_exactly(tmp_path, dtype, low, high):
    array = np.where(BINARY_MAP, high, low).astype(dtype)
    np.save(tmp_path / "m.npy", array)
    tiles = tile_source([tmp_path / "m.npy"], 8)
    assert tiles.binary
    expected = np.stack([BINARY_MAP[y:y + 8, x:x + 8] for y in range(0, 48, 8)
                         for x in range(0, 40, 8)])
    assert np.array_equal(tiles.images, expected.astype(np.float32))


def test_binary_option_false_thresholds_and_auto_sees_grey(tmp_path):
    np.save(tmp_path / "m.npy", BINARY_MAP.astype(np.uint8) * 255)
    assert not tile_source([tmp_path / "m.npy"], 8, binary=False).binary
    iio.imwrite(tmp_path / "g.png", np.random.default_rng(0).integers(0, 255, (16, 16), np.uint8))
    assert not tile_source([tmp_path / "g.png"], 8).binary


def test_every_page_of_a_multi_page_tiff_is_read(tmp_path):
    rng = np.random.default_rng(0)
    pages = [rng.integers(0, 255, shape, dtype=np.uint8)
             for shape in ((128, 128), (128, 128), (64, 64), (128, 128))]
    with tifffile.TiffWriter(tmp_path / "stack.tif") as tif:
        for page in pages:
            tif.write(page, photometric="minisblack")
    tiles = tile_source([tmp_path / "stack.tif"], 32)
    assert len(tiles.files) == 4 and all(f.startswith(str(tmp_path / "stack.tif"))
                                         for f in tiles.files)
    assert len(tiles.images) == 3 * 16 + 4
    assert "shape (64, 64)" in tiles.files[2]
    assert len(set(tiles.groups)) == 1  # pages of one file stay in one split group


def test_a_folder_in_paths_reads_the_images_inside(tmp_path):
    (tmp_path / "scans").mkdir()
    for name in ("b.png", "a.tif", "notes.txt"):
        (tmp_path / "scans" / name).write_bytes(b"x")
    (tmp_path / "scans" / "deeper").mkdir()
    assert expand_paths([str(tmp_path / "scans")], "k") == [tmp_path / "scans" / "a.tif",
                                                            tmp_path / "scans" / "b.png"]
    with pytest.raises(MicrovaeError, match="matches only folders"):
        expand_paths([str(tmp_path / "sc*")], "k")


@pytest.mark.parametrize("name,content,message", [
    ("a.png", b"<html><head><title>403</title>", "not a PNG file (it starts with '<html><h')"),
    ("a.tif", b"\x89PNG\r\n\x1a\n" + bytes(40), "not a TIFF file (it is a PNG file)"),
    ("a.npy", b"\x00\x01\x02\x03" * 10, "not a NPY file (it starts with '........')"),
])
def test_file_signature_is_checked(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MicrovaeError) as info:
        read_array(tmp_path / name)
    assert str(info.value) == f"{tmp_path / name}: {message}"


def test_group_labels():
    from microvae.ingest import group_labels

    paths = [Path("/d/A_s1.png"), Path("/d/A_s2.png"), Path("/d/B_s1.png")]
    assert group_labels(paths, r"^([A-Z])_") == ["A", "A", "B"]
    assert group_labels(paths, "all") == ["all"] * 3
    assert group_labels(paths, None) == [str(p) for p in paths]
    with pytest.raises(MicrovaeError, match="not a valid regular expression"):
        group_labels(paths, "([")


def test_colour_to_grey_rounds_and_keeps_grey_stored_as_rgb():
    """Issue 26: truncation dropped 75 of 256 grey levels by one, and an RGB {0, 1} map became
    constant."""
    from microvae.ingest import colour_to_grey

    levels = np.arange(256, dtype=np.uint8)
    rgb = np.stack([levels] * 3, axis=-1)[None]
    assert np.array_equal(colour_to_grey(rgb, "x.png")[0], levels)
    binary = np.zeros((4, 4, 3), np.uint8)
    binary[:2] = 1
    assert np.array_equal(colour_to_grey(binary, "m.png"), binary[..., 0])
    tinted = np.zeros((1, 1, 3), np.uint8)
    tinted[0, 0] = (200, 100, 50)
    assert colour_to_grey(tinted, "t.png")[0, 0] == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_tags_are_applied_as_a_viewer_shows_the_image(tmp_path, orientation, caplog):
    """EXIF (PNG) and TIFF orientation tags, against Pillow's exif_transpose: the crop keys
    (a scale bar at the bottom) refer to the image as the user sees it."""
    from PIL import Image, ImageOps

    stored = np.random.default_rng(orientation).integers(0, 255, (5, 7), dtype=np.uint8)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "a.png", exif=exif)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "a.png")))
    tifffile.imwrite(tmp_path / "a.tif", stored, extratags=[(274, "H", 1, orientation, True)])
    for name in ("a.png", "a.tif"):
        with caplog.at_level("WARNING"):
            caplog.clear()
            [entry] = read_entries(tmp_path / name)
        np.testing.assert_array_equal(entry.array, shown)
        assert ("orientation tag" in caplog.text) == (orientation != 1)
