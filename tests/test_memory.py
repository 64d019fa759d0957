"""The memory the data stages declare: sizes read from headers only, growth with the input,
more on a retry, and the declared memory above the measured peak (stage_memory.py)."""

import json

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from conftest import REPO
from microvae import memory


def test_raw_sizes_from_headers_match_the_arrays(tmp_path):
    rng = np.random.default_rng(0)
    grey16 = rng.integers(0, 4096, (3, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "v.tif", grey16, photometric="minisblack")
    rgb = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "c.png", rgb)
    np.save(tmp_path / "f.npy", rng.random((4, 5)))
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5["scan/iq"] = np.zeros((2, 8, 8), np.float32)
    assert memory.raw_size(tmp_path / "v.tif") == (grey16.size, grey16.nbytes)
    assert memory.raw_size(tmp_path / "c.png") == (120, rgb.nbytes)
    assert memory.raw_size(tmp_path / "f.npy") == (20, 160)
    assert memory.raw_size(tmp_path / "s.h5", "scan/iq") == (128, 512)
    (tmp_path / "bad.png").write_text("not a png")
    assert memory.raw_size(tmp_path / "bad.png") == (0, 9)


def test_declared_memory_grows_with_the_input_and_the_attempt():
    small = memory.declared_mb("segment", 10**6)
    large = memory.declared_mb("segment", 256 * 10**6)
    assert small == memory.FLOOR_MB
    assert large > memory.MARGIN * 20 * 256 * 10**6 / 2**20
    assert memory.declared_mb("segment", 256 * 10**6, attempt=2) == 2 * large
    stride_half = memory.ingest_mb([], 64, 32)
    assert stride_half == memory.FLOOR_MB


def test_ingest_memory_counts_overlapping_tiles(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4000, 4000), np.uint8))
    plain = memory.ingest_mb([tmp_path / "a.tif"], 64)
    overlapping = memory.ingest_mb([tmp_path / "a.tif"], 64, 32)
    expected = memory.INTERPRETER_MB + memory.MARGIN * (16e6 * (8 * 4 + 1 + 4)) / 2**20
    assert overlapping == int(expected) and overlapping > plain


def test_declared_memory_covers_the_measured_peaks():
    """Every data stage's peak in benchmarks/results/stage_memory.json (the 16 000 px
    micrograph and the 512^3 volume included) lies under what microvae.memory declares for
    that input: the figures there are re-made by the benchmark, this keeps them honest."""
    result = json.loads((REPO / "benchmarks" / "results" / "stage_memory.json").read_text())
    assert max(np.prod(c["shape"]) for c in result["cases"].values()) >= 16000**2
    for name, case in result["cases"].items():
        for rule, job in case["jobs"].items():
            assert job["peak_mb"] <= job["declared_mem_mb"], (name, rule, job)


@pytest.mark.parametrize("stage", ["segment", "pack"])
def test_tile_memory_reads_the_images_data_set(tmp_path, stage):
    with h5py.File(tmp_path / "i.h5", "w") as h5:
        h5["images"] = np.zeros((1000, 64, 64), np.float32)
    assert memory.tile_pixels([tmp_path / "i.h5", tmp_path / "missing.h5"]) == 1000 * 64 * 64
    assert memory.tiles_mb(stage, [tmp_path / "missing.h5"]) == memory.FLOOR_MB
