"""Real micrographs (tests/data/README.md says where each comes from) through ingest, segment
and pack, each as a single-file source, the way a user's own images go through the workflow."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from skimage.filters import threshold_otsu

from conftest import snakemake, write_config
from microvae.ingest import SourceOptions, read_array
from microvae.segment import SegmentationParameters
from microvae.stages.data import ingest_files, pack_files, segment_file

DATA = Path(__file__).parent / "data"
FRACTIONS = {"train": 0.75, "val": 0.125, "test": 0.125}

# file, source options, tile size, segmentation options
# The aluminium micrograph's grain boundaries are 1-2 px wide: an opening of radius 1 removes
# them (the QA warns, see below), so its source turns the opening off.
GREY = [("sem_nanoporous_gold.png", {"crop": {"bottom": 77}}, 32, {}),
        ("optical_aluminum.png", {}, 16, {"opening_radius": 0})]
BINARY = [("bentheimer_slice.npy", {}, 32), ("berea_volume.tif", {"axes": [0]}, 32),
          ("bentheimer_fine.npy", {}, 32)]


def run_stages(tmp_path, name, options, size, segmentation=None):
    source = {"name": Path(name).stem, **options}
    ingest_files([str(DATA / name)], tmp_path / "i.h5", SourceOptions.from_options(source), size)
    qa = segment_file(tmp_path / "i.h5", tmp_path / "s.h5", tmp_path / "qa.json",
                      SegmentationParameters.from_options(segmentation or {}))
    counts = pack_files([str(tmp_path / "s.h5")], tmp_path / "d.h5", FRACTIONS, 0,
                        figure=tmp_path / "split.png")
    return qa, counts


def covered(array, size, crop=None):
    """The part of a 2-D image that the tiles of ``size`` cover (after the crop)."""
    crop = crop or {}
    array = array[crop.get("top", 0):array.shape[0] - crop.get("bottom", 0)]
    return array[:array.shape[0] // size * size, :array.shape[1] // size * size]


@pytest.mark.parametrize("name,options,size,segmentation", GREY)
def test_real_grey_micrograph_as_single_image(tmp_path, name, options, size, segmentation):
    qa, counts = run_stages(tmp_path, name, options, size, segmentation)
    assert all(counts[s] > 0 for s in FRACTIONS), counts
    grey = covered(read_array(DATA / name).astype(np.float64) / 255, size, options.get("crop"))
    reference = float((grey < threshold_otsu(grey, nbins=256)).mean())
    assert abs(qa["phase_fraction_after"]["threshold"] - reference) < 0.01
    assert abs(qa["phase_fraction"] - reference) < 0.01, (qa["phase_fraction"], reference)
    with h5py.File(tmp_path / "d.h5") as h5:
        assert json.loads(h5.attrs["split_mode"]) == {Path(name).stem: "regions"}
        assert h5["regions"].shape == (3, 6)
    assert (tmp_path / "split.png").stat().st_size > 0
    assert "warning" not in qa


def test_qa_warns_where_the_default_opening_erases_thin_boundaries(tmp_path):
    qa, _ = run_stages(tmp_path, "optical_aluminum.png", {}, 16)
    assert qa["phase_fraction_after"]["opening"] < 0.8 * qa["phase_fraction_after"]["threshold"]
    assert qa["morphology_change"] < -0.1 and "opening_radius" in qa["warning"]


@pytest.mark.parametrize("name,options,size", BINARY)
def test_real_binary_map_passes_unchanged(tmp_path, name, options, size):
    qa, counts = run_stages(tmp_path, name, options, size)
    assert qa["binary_input"] and qa["phase"] == "bright"
    assert list(qa["phase_fraction_after"]) == ["threshold"]  # no morphology
    raw = read_array(DATA / name)
    raw = (raw == raw.max()).astype(np.uint8)
    if raw.ndim == 2:
        raw = raw[None]
    with h5py.File(tmp_path / "s.h5") as h5:
        tiles, corner = h5["images"][()], h5["corner"][()]
    for tile, (z, y, x) in zip(tiles, corner):
        assert np.array_equal(tile, raw[z, y:y + size, x:x + size])  # bit for bit
    expected = np.mean([covered(section, size).mean() for section in raw])
    assert qa["phase_fraction"] == pytest.approx(expected, abs=1e-12)
    with h5py.File(tmp_path / "d.h5") as h5:
        for split in FRACTIONS:
            assert h5[split].shape[0] == counts[split] > 0
            for tile, (z, y, x) in zip(h5[split][()], h5[f"{split}_corner"][()]):
                assert np.array_equal(tile, raw[z, y:y + size, x:x + size])


@pytest.mark.slow
def test_users_own_images_in_the_workflow(tmp_path):
    """README 'Your own images': one image per source, a binary NPY and a folder, no hand work."""
    folder = tmp_path / "aluminium"
    folder.mkdir()
    (folder / "micrograph.png").write_bytes((DATA / "optical_aluminum.png").read_bytes())
    volume = tifffile.imread(DATA / "berea_volume.tif")
    np.save(tmp_path / "berea_bool.npy", volume[:8] > 0)
    config = {"image_size": 16, "sources": [
        {"name": "gold", "paths": [str(DATA / "sem_nanoporous_gold.png")],
         "crop": {"bottom": 77}, "pixel_size": 0.000724, "pixel_unit": "um"},
        {"name": "aluminium", "paths": [str(folder)]},
        {"name": "berea", "paths": [str(tmp_path / "berea_bool.npy")]},
    ]}
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/dataset/dataset.h5")
    with h5py.File(tmp_path / "results/dataset/dataset.h5") as h5:
        assert json.loads(h5.attrs["split_mode"]) == {"gold": "regions", "aluminium": "regions",
                                                       "berea": "regions"}
        origin = {s: h5[f"{s}_origin"][()] for s in FRACTIONS}
    for split in FRACTIONS:  # every source in every split
        assert set(origin[split][:, 0]) == {0, 1, 2}
    qa = json.loads((tmp_path / "results/segmented/berea_qa.json").read_text())
    assert qa["binary_input"] and qa["phase_fraction"] == pytest.approx(
        float(np.mean(volume[:8, :160, :160] > 0)), abs=1e-12)
    assert (tmp_path / "results/dataset/split.png").exists()


@pytest.mark.parametrize("dtype,low,high", [(bool, False, True), (np.uint8, 0, 1),
                                            (np.uint8, 0, 255), (np.uint16, 0, 65535),
                                            (np.float32, 0.0, 1.0)])
def test_real_phase_map_in_any_dtype_keeps_its_phase_fraction(tmp_path, dtype, low, high):
    pores = np.load(DATA / "bentheimer_slice.npy") == 1
    np.save(tmp_path / "map.npy", np.where(pores, high, low).astype(dtype))
    ingest_files([str(tmp_path / "map.npy")], tmp_path / "i.h5", SourceOptions(name="map"), 32)
    qa = segment_file(tmp_path / "i.h5", tmp_path / "s.h5", tmp_path / "qa.json",
                      SegmentationParameters())
    pack_files([str(tmp_path / "s.h5")], tmp_path / "d.h5", FRACTIONS, 0)
    assert qa["phase_fraction"] == pores.mean()
    with h5py.File(tmp_path / "d.h5") as h5:
        for split in FRACTIONS:
            for tile, (_, y, x) in zip(h5[split][()], h5[f"{split}_corner"][()]):
                assert np.array_equal(tile, pores[y:y + 32, x:x + 32])


@pytest.mark.parametrize("name,pore_chord", [("bentheimer_slice.npy", 7.6),
                                             ("bentheimer_fine.npy", 4.9)])
def test_feature_size_of_the_real_pore_maps(name, pore_chord):
    """The mean pore chord that the train stage logs (and its advice rests on), on the two
    Bentheimer maps: the fine one has the same sandstone at twice the voxel size."""
    from microvae.descriptors import feature_size

    pores = feature_size(read_array(DATA / name)[None].astype(np.uint8))[1]
    assert pores == pytest.approx(pore_chord, abs=0.1)
