import json

import numpy as np
import pytest

from microvae.descriptors import iou, phase_fraction
from microvae.errors import MicrovaeError
from microvae.segment import (
    SegmentationParameters,
    binarize,
    disk,
    erode_dilate,
    otsu_threshold,
    remove_small,
    segment,
)


def test_binarize_sides():
    images = np.array([[[0.1, 0.9]]])
    assert binarize(images, 0.5, "dark").tolist() == [[[1, 0]]]
    assert binarize(images, 0.5, "bright").tolist() == [[[0, 1]]]


def test_opening_removes_thin_lines_and_keeps_blobs():
    image = np.zeros((1, 32, 32), np.uint8)
    image[0, 16, :] = 1  # a one-pixel line (a grain boundary)
    image[0, 4:12, 4:12] = 1  # an island
    opened = erode_dilate(image, opening_radius=1, closing_radius=0)
    assert opened[0, 16].sum() == 0
    assert opened[0, 5:11, 5:11].all()


def test_fill_holes_and_remove_islands():
    image = np.zeros((1, 20, 20), np.uint8)
    image[0, 2:10, 2:10] = 1
    image[0, 5, 5] = 0  # a one-pixel hole
    image[0, 15, 15] = 1  # a one-pixel speck
    image[0, 0, 19] = 1  # a speck on the border is kept (it may be part of a larger region)
    out = remove_small(remove_small(image, 5, value=0), 5, value=1)
    assert out[0, 5, 5] == 1 and out[0, 15, 15] == 0 and out[0, 0, 19] == 1


def test_disk_shape():
    assert disk(1).sum() == 5 and disk(2).sum() == 13


def test_constant_image_has_no_otsu_threshold():
    with pytest.raises(MicrovaeError, match="constant image"):
        otsu_threshold(np.full((2, 8, 8), 0.3), "flat.png")


def test_binary_input_skips_threshold():
    binary = (np.random.default_rng(0).random((3, 16, 16)) > 0.5).astype(np.float32)
    out, threshold, steps = segment(binary, SegmentationParameters(), binary_input=True)
    assert threshold == 0.5 and np.array_equal(out, binary.astype(np.uint8))
    assert steps == [("threshold", binary.mean())]  # no morphology on phase maps by default
    out, _, steps = segment(binary, SegmentationParameters(min_island=5), binary_input=True)
    assert [name for name, _ in steps] == ["threshold", "min_island"]
    with pytest.raises(MicrovaeError, match="declared binary"):
        segment(binary * 0.5 + 0.25 * np.random.default_rng(1).random(binary.shape),
                SegmentationParameters(), binary_input=True)


def test_iou_and_fraction():
    a = np.zeros((2, 4, 4), np.uint8)
    b = a.copy()
    a[0, :2] = 1
    b[0, :1] = 1
    assert iou(a, b).tolist() == [0.5, 1.0]
    assert phase_fraction(a).tolist() == [0.5, 0.0]


def test_segment_stage_writes_segmentation_qa(tiny_dataset):
    qa = json.loads((tiny_dataset.parents[1] / "segmented" / "tiny_qa.json").read_text())
    assert {"mean_iou", "iou_pooled", "iou_class_mean", "phase_fraction", "truth_phase_fraction",
            "threshold", "parameters"} <= set(qa)
    # the tiny config's 16 px tiles and small grains are harder than the default's
    assert qa["iou_pooled"] >= 0.85
    assert abs(qa["phase_fraction"] - qa["truth_phase_fraction"]) <= 0.02


@pytest.mark.parametrize("tile", [32, 64, 128])
def test_default_synthetic_segmentation_quality(tile):
    """The acceptance figure of the foundation issue: the default generator and segmentation
    settings, at the default tile size and at the paper's, reach IoU >= 0.95 (pooled over the
    tiles) and a phase fraction within 0.01 of the truth."""
    from microvae.synthetic import SteelParameters, synthesize_volume

    iq, truth = synthesize_volume(SteelParameters(shape=(8, 256, 256)), seed=11)
    n = 256 // tile

    def tiles(volume):
        return volume.reshape(8, n, tile, n, tile).transpose(0, 1, 3, 2, 4).reshape(-1, tile, tile)

    binary, _, _ = segment(tiles(iq.astype(np.float32) / 255), SegmentationParameters())
    truth = tiles(truth)
    pooled = np.count_nonzero(binary & truth) / np.count_nonzero(binary | truth)
    assert pooled >= 0.95
    assert abs(binary.mean() - truth.mean()) <= 0.01


def test_qa_records_each_step_and_warns_on_a_large_change(tmp_path):
    """Specks of one pixel are removed by the opening: the QA says so and warns."""
    import json

    from microvae.h5io import write_arrays
    from microvae.stages.data import segment_file

    rng = np.random.default_rng(0)
    grey = np.where(rng.random((4, 32, 32)) < 0.2, 0.1, 0.9).astype(np.float32)
    write_arrays(tmp_path / "i.h5", {"images": grey, "origin": np.zeros((4, 5), np.int32)},
                 attrs={"source": "specks", "binary": False})
    summary = segment_file(tmp_path / "i.h5", tmp_path / "s.h5", tmp_path / "qa.json",
                           SegmentationParameters())
    steps = summary["phase_fraction_after"]
    assert list(steps) == ["threshold", "opening", "closing", "fill_holes", "min_island"]
    assert abs(steps["threshold"] - (grey < 0.5).mean()) < 1e-9
    assert steps["opening"] < 0.5 * steps["threshold"]
    assert "warning" in summary and "changed the phase fraction by" in summary["warning"]
    assert json.loads((tmp_path / "qa.json").read_text())["warning"] == summary["warning"]
    quiet = segment_file(tmp_path / "i.h5", tmp_path / "s2.h5", tmp_path / "qa2.json",
                         SegmentationParameters(opening_radius=0, closing_radius=0,
                                                fill_holes=0, min_island=0))
    assert list(quiet["phase_fraction_after"]) == ["threshold"] and "warning" not in quiet
