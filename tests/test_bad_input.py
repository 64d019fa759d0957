"""The bad-input suite: one case per row. Each must give one clear error that names the file
or config key, a non-zero exit status, and leave no output file behind.

| # | stage | bad input | expected message |
|---|-------|-----------|------------------|
| 1 | ingest | glob matching nothing | 'matches no file' |
| 2 | ingest | zero-byte file | 'file is empty' |
| 3 | ingest | truncated PNG | file name, 'cannot read' |
| 4 | ingest | truncated TIFF | file name, 'cannot read' |
| 5 | ingest | HTML page saved as .png | "not a PNG file (it starts with '<html" |
| 6 | ingest | NaN/inf in an NPY volume | 'NaN or infinite' |
| 7 | ingest | image smaller than one tile | 'smaller than one' |
| 8 | ingest | 3-D volume sliced on an axis it lacks | 'cannot slice along axis' |
| 9 | ingest | HDF5 source with a missing data set | 'no data set' |
| 10 | ingest | unknown file suffix | 'unknown image format' |
| 11 | ingest | constant image among good ones, constant section of a volume | raw file, 'constant' |
| 11b | ingest | (H, W, 3) NPY without rgb: true | "set 'rgb: true'" |
| 11c | ingest | binary: true on a grey image | 'declared binary' |
| 11d | ingest | group regex that a file name does not match | file, 'does not match' |
| 11e | config | a folder with no image files in paths | 'is a folder with no image files' |
| 11h | ingest | a phase map and a grey image in one source (binary: auto) | grey file, 'grey image' |
| 11k | segment | threshold 0.5 on 12-bit data in 16 bits: one phase | source, "every pixel phase 1" |
| 11i | ingest | the same file twice (a link, a byte copy) | the second name, 'the same' |
| 11j | ingest | a link in a source folder that points nowhere | the link, 'does not exist' |
| 11l | ingest | volume cut along an axis thinner than a tile | "axis gives no tile; remove 1" |
| 11m | ingest | a file this user cannot read | 'permission denied' |
| 11f | ingest | one volume cut along all three axes | 'cut along every axis' |
| 11g | ingest | one image too small for three slabs with gaps | 'too few for 3 regions' |
| 11n | pack | room for three slabs, not for uneven fractions | 'too few for 3 regions' |
| 12 | config | unknown key | 'unknown key' |
| 13 | config | wrong type | key and 'is not of type' |
| 14 | config | negative latent size | 'model.latent_sizes[0]' |
| 15 | config | duplicate latent size | 'non-unique' |
| 16 | config | image size not a multiple of 8 | 'image_size', 'multiple of 8' |
| 17 | config | split fractions not summing to 1 | 'split' |
| 18 | config | KL weight below 0 | 'model.kl_weight' |
| 19 | config | source with neither synthetic nor paths | 'exactly one' |
| 20 | config | duplicate source names | 'duplicate source names' |
| 21 | train | data set with an empty split | "split 'val' is empty" |
| 22 | train | KL weight below 0 (CLI) | 'kl_weight' |
| 23 | sample | corrupt model file, pickled object as model | 'not a valid microvae model file' |
| 24 | sample | model of another image size | '32x32' |
| 25 | pack | split fractions that do not sum to 1 (CLI) | 'sum to 1' |
| 26 | evaluate | samples file missing | 'file not found' |
| 27 | config | volume.shape not a multiple of 32, volume.crop_size not of 8 | the key, 'multiple of' |
| 27b | config | volume.phase_fractions outside (0, 1), or without the diffusion prior | the key |
| 27c | config | diffusion.guidance_schedule not pairs, fractions that do not rise | the key |
| 28 | train-volume, volume | a 2-D image as a volume, two sources, ... (test_volume_vae.py) | the file |
RGBA and 16-bit images must work (tests/test_ingest.py::test_png_rgba_and_16bit_tiff).
"""

import json
import os
from fractions import Fraction

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from conftest import TINY_CONFIG, microvae, snakemake, write_config
from microvae.model import VAE
from microvae.modelfile import save_model

SOURCE = json.dumps({"name": "user"})


def png(path, size=(32, 32), seed=0):
    iio.imwrite(path, np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8))
    return path


def truncated(path, writer):
    writer(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def make_case(tmp_path, case):
    """Files for a case of the ingest stage; returns (files, extra source options, message,
    the file the message must name)."""
    rng = np.random.default_rng(0)
    if case == "empty":
        (tmp_path / "e.png").write_bytes(b"")
        return [tmp_path / "e.png"], {}, "file is empty", "e.png"
    if case == "truncated_png":
        return [truncated(tmp_path / "t.png", lambda p: png(p, (128, 128)))], {}, \
            "cannot read", "t.png"
    if case == "truncated_tiff":
        return [truncated(tmp_path / "t.tif", lambda p: tifffile.imwrite(
            p, rng.integers(0, 255, (4, 64, 64), dtype=np.uint8), photometric="minisblack"))], \
            {}, "cannot read", "t.tif"
    if case == "html_png":
        (tmp_path / "a.png").write_text("<html><body>Access denied</body></html>\n" * 20)
        return [tmp_path / "a.png"], {}, "not a PNG file (it starts with '<html", "a.png"
    if case == "nan_volume":
        volume = rng.random((4, 32, 32))
        volume[2, 5, 5] = np.inf
        np.save(tmp_path / "v.npy", volume)
        return [tmp_path / "v.npy"], {}, "NaN or infinite", "v.npy"
    if case == "small_image":
        return [png(tmp_path / "s.png", (8, 12))], {}, "smaller than one", "s.png"
    if case == "missing_h5_dataset":
        with h5py.File(tmp_path / "v.h5", "w") as h5:
            h5["ebsd/iq"] = np.zeros((4, 32, 32))
        return [tmp_path / "v.h5"], {"dataset": "ebsd/phase"}, "no data set 'ebsd/phase'", "v.h5"
    if case == "unknown_suffix":
        (tmp_path / "scan.xyz").write_text("1 2 3")
        return [tmp_path / "scan.xyz"], {}, "unknown image format", "scan.xyz"
    if case == "constant_among_good":
        iio.imwrite(tmp_path / "flat.png", np.full((32, 32), 128, np.uint8))
        return [png(tmp_path / "good.png"), tmp_path / "flat.png"], {}, "is constant", "flat.png"
    if case == "constant_section":
        volume = rng.random((4, 32, 32))
        volume[2] = 0.5
        np.save(tmp_path / "v.npy", volume)
        return [tmp_path / "v.npy"], {}, "section 2 along axis 0 is constant", "v.npy"
    if case == "rgb_npy":
        np.save(tmp_path / "c.npy", rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
        return [tmp_path / "c.npy"], {}, "set 'rgb: true'", "c.npy"
    if case == "binary_declared_grey":
        return [png(tmp_path / "g.png")], {"binary": True}, "declared binary", "g.png"
    if case == "mixed_maps_and_grey":
        maps = rng.integers(0, 2, (32, 32)).astype(np.uint8) * 255
        iio.imwrite(tmp_path / "map.png", maps)
        return [tmp_path / "map.png", png(tmp_path / "grey.png")], {}, "grey image", "grey.png"
    if case == "linked_twice":
        png(tmp_path / "a.png")
        (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
        return [tmp_path / "a.png", tmp_path / "b.png"], {}, "the same file", "b.png"
    if case == "copied_twice":
        png(tmp_path / "a.png")
        (tmp_path / "copy.png").write_bytes((tmp_path / "a.png").read_bytes())
        return [tmp_path / "a.png", tmp_path / "copy.png"], {}, "byte for byte the same", \
            "copy.png"
    if case == "thin_axis":
        np.save(tmp_path / "v.npy", rng.random((8, 64, 64)))
        return [tmp_path / "v.npy"], {"axes": [0, 1]}, "so that axis gives no tile; remove 1", "v.npy"
    if case == "unreadable":
        png(tmp_path / "locked.png").chmod(0)
        return [tmp_path / "locked.png"], {}, "permission denied", "locked.png"
    if case == "group_mismatch":
        return [png(tmp_path / "slice_01.png"), png(tmp_path / "overview.png", seed=1)], \
            {"group": r"slice_(\d+)"}, "does not match", "overview.png"
    raise KeyError(case)


INGEST_CASES = ["empty", "truncated_png", "truncated_tiff", "html_png", "nan_volume",
                "small_image", "missing_h5_dataset", "unknown_suffix",
                "constant_among_good", "constant_section", "rgb_npy", "binary_declared_grey",
                "group_mismatch", "mixed_maps_and_grey", "linked_twice", "copied_twice", "thin_axis",
                *(["unreadable"] if os.geteuid() != 0 else [])]  # root reads any file


@pytest.mark.parametrize("case", INGEST_CASES)
def test_ingest_rejects(tmp_path, case):
    files, options, message, bad_file = make_case(tmp_path, case)
    out = tmp_path / "out" / "ingested.h5"
    out.parent.mkdir()
    result = microvae("ingest", "--files", *map(str, files), "--source",
                      json.dumps({"name": "user", **options}), "--image-size", "16",
                      "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert str(tmp_path / bad_file) in result.stderr
    assert "Traceback" not in result.stderr and "pip install" not in result.stderr
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("command,options,message", [
    ("ingest", {"axes": [0, 5]}, "sources[user].axes[1]: 5 is greater than the maximum of 2"),
    ("ingest", {"colour": True}, "sources[user]: unknown key(s): 'colour'"),
    ("ingest", {"stride": 0}, "sources[user].stride: 0 is less than the minimum of 1"),
    ("segment", {"opening": 2}, "segmentation: unknown key(s): 'opening'"),
    ("segment", {"threshold": 1.5}, "segmentation.threshold"),
    ("train", {"epoch": 3}, "train: unknown key(s): 'epoch'"),
    ("train", {"threads": 2}, "train: unknown key(s): 'threads'"),
    ("train", {"kl_warmup_epochs": -1}, "model.kl_warmup_epochs: -1 is less than the minimum"),
    ("synthesize", {"grain": 30}, "synthetic: unknown key(s): 'grain'"),
    ("train-prior", {"enabled": True}, "diffusion: unknown key(s): 'enabled'"),
    ("train-prior", {"ema_decay": 1.0}, "diffusion.ema_decay: 1.0 is greater than or equal to"),
])
def test_options_are_checked_against_the_schema(tmp_path, command, options, message):
    """Every stage refuses unknown keys and out-of-range values, naming the config key."""
    out = tmp_path / "out"
    out.mkdir()
    image = png(tmp_path / "a.png")
    args = {
        "ingest": ["--files", str(image), "--source", json.dumps({"name": "user", **options}),
                   "--image-size", "16", "--out", str(out / "i.h5")],
        "segment": ["--input", str(tmp_path / "i.h5"), "--params", json.dumps(options),
                    "--out", str(out / "s.h5"), "--qa", str(out / "qa.json")],
        "train": ["--dataset", str(tmp_path / "d.h5"), "--latent", "2", "--params",
                  json.dumps(options), "--checkpoint-dir", str(out / "ck"), "--model",
                  str(out / "m.pt"), "--history", str(out / "h.csv")],
        "synthesize": ["--params", json.dumps(options), "--seed", "0", "--iq",
                       str(out / "iq.tif"), "--phase", str(out / "phase.tif")],
        "train-prior": ["--model", str(tmp_path / "m.pt"), "--dataset", str(tmp_path / "d.h5"),
                        "--params", json.dumps(options), "--out", str(out / "p.pt")],
    }[command]
    result = microvae(command, *args)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


def test_glob_matching_nothing_in_workflow(tmp_path):
    write_config(tmp_path, {"image_size": 16, "sources": [
        {"name": "lab", "paths": [str(tmp_path / "missing" / "*.tif")]}]})
    result = snakemake(tmp_path, "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "sources[lab].paths" in output and "matches no file" in output


def dangling_link(folder):
    png(folder / "good.png", (64, 64))
    (folder / "gone.png").symlink_to(folder.parent / "nowhere.png")


def notes_only(folder):
    (folder / "notes.txt").write_text("no images here")


@pytest.mark.parametrize("fill,messages", [
    # a link that points nowhere was skipped without a word (issue 26)
    (dangling_link, ("gone.png", "does not exist")),
    (notes_only, ("sources[lab].paths", "is a folder with no image files")),
])
def test_a_source_folder_is_refused_before_anything_runs(tmp_path, fill, messages):
    (tmp_path / "scans").mkdir()
    fill(tmp_path / "scans")
    write_config(tmp_path, {"image_size": 16, "sources": [
        {"name": "lab", "paths": [str(tmp_path / "scans")]}]})
    result = snakemake(tmp_path, "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert all(message in output for message in messages)
    assert not (tmp_path / "results").exists()


def test_a_threshold_that_leaves_one_phase_is_refused(tmp_path):
    """Issue 26: 12-bit data in a 16-bit TIFF and threshold 0.5 made every tile phase 1 and the
    run exited 0."""
    volume = np.random.default_rng(0).integers(0, 4096, (4, 32, 80), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "ct.tif", volume, photometric="minisblack")
    ingested, out = tmp_path / "i.h5", tmp_path / "out"
    out.mkdir()
    microvae("ingest", "--files", str(tmp_path / "ct.tif"), "--source",
             json.dumps({"name": "ct12"}), "--image-size", "16", "--out", str(ingested),
             check=True)
    result = microvae("segment", "--input", str(ingested), "--params", '{"threshold": 0.5}',
                      "--out", str(out / "s.h5"), "--qa", str(out / "qa.json"))
    assert result.returncode == 1 and "ct12" in result.stderr
    assert "every pixel phase 1" in result.stderr and "0.0625" in result.stderr
    assert "Traceback" not in result.stderr and list(out.iterdir()) == []
    assert "scale: [0, 4095]" in result.stderr


def test_a_scale_for_12_bit_data_makes_the_fixed_threshold_mean_the_same_grey(tmp_path):
    """The hint above works: with scale [0, 4095] the same threshold cuts the 12-bit data in
    two, identically in every file; a value outside the scale is refused by file."""
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):  # three files: one per split
        tifffile.imwrite(tmp_path / f"{name}.tif",
                         rng.integers(0, 4096, (2, 32, 32), dtype=np.uint16),
                         photometric="minisblack")
    ingested, segmented = tmp_path / "i.h5", tmp_path / "s.h5"
    microvae("ingest", "--files", *(str(tmp_path / f"{n}.tif") for n in "abc"), "--source",
             json.dumps({"name": "ct12", "scale": [0, 4095]}), "--image-size", "16",
             "--out", str(ingested), check=True)
    with h5py.File(ingested) as h5:
        assert 0.99 < float(h5["images"][()].max()) <= 1.0
    no_morphology = {"threshold": 0.5, "opening_radius": 0, "closing_radius": 0,
                     "fill_holes": 0, "min_island": 0}
    microvae("segment", "--input", str(ingested), "--params", json.dumps(no_morphology), "--out",
             str(segmented), "--qa", str(tmp_path / "qa.json"), check=True)
    assert 0.4 < json.loads((tmp_path / "qa.json").read_text())["phase_fraction"] < 0.6
    tifffile.imwrite(tmp_path / "c.tif", np.full((2, 32, 32), 5000, np.uint16),
                     photometric="minisblack")
    out = tmp_path / "out"
    out.mkdir()
    result = microvae("ingest", "--files", *(str(tmp_path / f"{n}.tif") for n in "abc"),
                      "--source",
                      json.dumps({"name": "ct12", "scale": [0, 4095]}), "--image-size", "16",
                      "--out", str(out / "i.h5"))
    assert result.returncode == 1 and f"{tmp_path / 'c.tif'}: grey values 5000..5000 fall " \
        "outside scale [0, 4095]" in result.stderr
    assert "Traceback" not in result.stderr and list(out.iterdir()) == []


def segmented_source(tmp_path, array, options):
    """Ingest and segment one array as a source; returns the segmented file."""
    np.save(tmp_path / "v.npy", array)
    ingested, segmented = tmp_path / "i.h5", tmp_path / "s.h5"
    microvae("ingest", "--files", str(tmp_path / "v.npy"), "--source",
             json.dumps({"name": "user", **options}), "--image-size", "16", "--out", str(ingested),
             check=True)
    microvae("segment", "--input", str(ingested), "--params", "{}", "--out", str(segmented),
             "--qa", str(tmp_path / "qa.json"), check=True)
    return segmented


@pytest.mark.parametrize("array,options,message", [
    (np.random.default_rng(0).integers(0, 2, (40, 40, 40), dtype=np.uint8), {"axes": [0, 1, 2]},
     "cut along every axis"),
    (np.random.default_rng(0).integers(0, 2, (40, 64), dtype=np.uint8), {}, "too few for 3 regions"),
])
def test_ingest_refuses_a_source_that_no_split_in_space_fits(tmp_path, array, options, message):
    """Found at ingest, before segmentation (it was found only at pack): one group cannot give
    three slabs with gaps, whatever the fractions."""
    np.save(tmp_path / "v.npy", array)
    out = tmp_path / "out"
    out.mkdir()
    result = microvae("ingest", "--files", str(tmp_path / "v.npy"), "--source",
                      json.dumps({"name": "user", **options}), "--image-size", "16",
                      "--out", str(out / "i.h5"))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert str(tmp_path / "v.npy") in result.stderr and "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


def test_pack_refuses_fractions_that_need_more_room_than_the_source_has(tmp_path):
    """Room for three slabs (ingest passes), not for these uneven fractions."""
    array = np.random.default_rng(0).integers(0, 2, (40, 96), dtype=np.uint8)
    segmented = segmented_source(tmp_path, array, {})
    message = "too few for 3 regions"
    out = tmp_path / "d.h5"
    result = microvae("pack", "--inputs", str(segmented), "--fractions",
                      '{"train": 0.1, "val": 0.45, "test": 0.45}', "--seed", "0", "--out",
                      str(out), "--figure", str(tmp_path / "split.png"))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert str(tmp_path / "v.npy") in result.stderr
    assert not out.exists() and not (tmp_path / "split.png").exists()


def config_with(**changes):
    config = json.loads(json.dumps(TINY_CONFIG))
    for dotted, value in changes.items():
        target = config
        *parents, last = dotted.split(".")
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[last] = value
    return config


@pytest.mark.parametrize("changes,messages", [
    ({"colour": "red"}, ["unknown key", "colour"]),
    ({"train.epochs": "ten"}, ["train.epochs", "is not of type 'integer'"]),
    ({"model.latent_sizes": [-2, 4]}, ["model.latent_sizes[0]"]),
    ({"model.latent_sizes": [4, 4]}, ["model.latent_sizes", "non-unique"]),
    ({"image_size": 60}, ["image_size", "multiple of 8"]),
    ({"split.train": 0.9}, ["split", "must be 1"]),
    ({"model.kl_weight": -0.1}, ["model.kl_weight", "minimum of 0"]),
    ({"sources": [{"name": "nothing"}]}, ["sources[0]", "exactly one"]),
    ({"sources": [TINY_CONFIG["sources"][0]] * 2}, ["duplicate source names"]),
    ({"sample.phase_fractions": [0.3, 1.2]}, ["sample.phase_fractions[1]"]),
    ({"diffusion": {"crop_cells": 1}}, ["diffusion.crop_cells", "minimum of 2"]),
    ({"sample.graded": [0.2, 0.4]}, ["sample.graded", "needs model.architecture: conv"]),
    ({"sample.phase_fractions": [0.3], "diffusion": {"enabled": False}},
     ["sample.phase_fractions", "needs diffusion.enabled: true"]),
    ({"model.architecture": "conv", "sample.sizes": [48], "sample.periodic": True},
     ["sample.sizes", "[48] px are not multiples of 32"]),
    ({"volume": {"enabled": True, "shape": [64, 64, 48]}},
     ["volume.shape[2]", "multiple of 32"]),
    ({"volume": {"crop_size": 20}}, ["volume.crop_size", "multiple of 8"]),
    ({"volume": {"phase_fractions": [0.3, 1.0]}}, ["volume.phase_fractions[1]"]),
    ({"volume": {"phase_fractions": [0.3], "diffusion": False}},
     ["volume.phase_fractions", "need volume.diffusion: true"]),
    ({"diffusion": {"guidance_schedule": [[0.3, 1.0, 2.0]]}},
     ["diffusion.guidance_schedule[0]", "is too long"]),
    ({"diffusion": {"guidance_schedule": [[0.3, 1.0], [0.2, 1.0]]}},
     ["diffusion.guidance_schedule", "must lie between 0 and 1 and rise"]),
])
def test_bad_config(tmp_path, changes, messages):
    write_config(tmp_path, config_with(**changes))
    result = snakemake(tmp_path, "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for message in messages:
        assert message in output, output[-2000:]
    assert not (tmp_path / "results").exists()


@pytest.fixture
def dataset_with_empty_val(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as h5:
        h5["train"] = np.zeros((8, 16, 16), np.uint8)
        h5["val"] = np.zeros((0, 16, 16), np.uint8)
        h5["test"] = np.zeros((8, 16, 16), np.uint8)
    return path


def train_args(dataset, out, params="{}"):
    return ["train", "--dataset", str(dataset), "--latent", "2", "--params", params,
            "--checkpoint-dir", str(out / "ck"), "--model", str(out / "m.pt"),
            "--history", str(out / "h.csv")]


def test_empty_split(tmp_path, dataset_with_empty_val):
    result = microvae(*train_args(dataset_with_empty_val, tmp_path))
    assert result.returncode == 1 and "split 'val' is empty" in result.stderr
    assert str(dataset_with_empty_val) in result.stderr
    assert not (tmp_path / "m.pt").exists()


def test_negative_kl_weight_cli(tmp_path, tiny_dataset):
    result = microvae(*train_args(tiny_dataset, tmp_path, '{"kl_weight": -1}'))
    assert result.returncode == 1 and "kl_weight" in result.stderr
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("content", ["zip", "pickle"])
def test_corrupt_model(tmp_path, tiny_dataset, content):
    model = tmp_path / "m.pt"
    if content == "zip":
        model.write_bytes(b"PK\x03\x04 broken zip")
    else:
        torch.save({"config": {"image_size": 16}, "note": Fraction(1, 3)}, model)
    out = tmp_path / "s.h5"
    result = microvae("sample", "--model", str(model), "--out", str(out))
    assert result.returncode == 1 and "not a valid microvae model file" in result.stderr
    assert str(model) in result.stderr and not out.exists()
    assert "weights_only" not in result.stderr
    assert result.stderr.rstrip().endswith("train it again or check the path"), result.stderr


def test_model_of_other_size(tmp_path, tiny_dataset):
    save_model(VAE(32, 2), tmp_path / "m.pt")
    out = tmp_path / "s.h5"
    result = microvae("sample", "--model", str(tmp_path / "m.pt"), "--dataset", str(tiny_dataset),
                      "--mode", "posterior", "--out", str(out))
    assert result.returncode == 1 and "32x32" in result.stderr and not out.exists()


def test_diffusion_prior_of_a_table1_model_does_not_serve_a_conv_model(tmp_path, tiny_dataset):
    """A Table 1 model gets a prior of latent vectors; handed to a conv model of as many
    latent channels, it is refused by name and nothing is written."""
    from microvae.model import ConvVAE

    save_model(VAE(16, 2), tmp_path / "m.pt")
    prior = tmp_path / "p.pt"
    result = microvae("train-prior", "--model", str(tmp_path / "m.pt"), "--dataset",
                      str(tiny_dataset), "--params", '{"max_steps": 2, "width": 8}', "--out",
                      str(prior))
    assert result.returncode == 0 and prior.exists(), result.stderr
    assert "the latent vectors of" in result.stderr
    save_model(ConvVAE(16, 2), tmp_path / "conv.pt")
    out = tmp_path / "s.h5"
    result = microvae("sample", "--model", str(tmp_path / "conv.pt"), "--diffusion", str(prior),
                      "--mode", "diffusion", "--dataset", str(tiny_dataset), "--out", str(out))
    assert result.returncode == 1 and not out.exists()
    assert "models vectors of 2 channels, the model's latent is a grid of 2: the prior of " \
           "another model" in result.stderr, result.stderr


def test_diffusion_mode_without_its_prior_is_refused(tmp_path, tiny_dataset):
    from microvae.model import ConvVAE

    save_model(ConvVAE(16, 2), tmp_path / "m.pt")
    out = tmp_path / "s.h5"
    result = microvae("sample", "--model", str(tmp_path / "m.pt"), "--mode", "diffusion",
                      "--out", str(out))
    assert result.returncode == 1 and "needs its trained prior (--diffusion" in result.stderr
    result = microvae("sample", "--model", str(tmp_path / "m.pt"), "--diffusion",
                      str(tmp_path / "none.pt"), "--out", str(out))
    assert result.returncode == 1 and "none.pt: diffusion prior file not found" in result.stderr
    assert not out.exists()


def test_pack_fractions(tmp_path, tiny_dataset):
    segmented = tiny_dataset.parents[1] / "segmented" / "tiny.h5"
    out = tmp_path / "d.h5"
    result = microvae("pack", "--inputs", str(segmented), "--fractions",
                      '{"train": 0.5, "val": 0.1, "test": 0.1}', "--seed", "0", "--out", str(out))
    assert result.returncode == 1 and "sum to 1" in result.stderr and not out.exists()


def test_missing_samples(tmp_path, tiny_dataset):
    out = tmp_path / "m.json"
    result = microvae("evaluate", "--samples", str(tmp_path / "none.h5"), "--dataset",
                      str(tiny_dataset), "--baselines", str(tmp_path / "b.h5"), "--metrics",
                      str(out), "--curves", str(tmp_path / "curves.csv"))
    assert result.returncode == 1 and "none.h5: file not found" in result.stderr
    assert not out.exists()
