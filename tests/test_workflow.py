"""Integration tests: the real workflow on the tiny configuration in temporary directories."""

import csv
import json
import re
import shutil
import subprocess
import sys

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, TINY_CONFIG, build_tiny_dataset, snakemake, write_config

pytestmark = pytest.mark.slow
MODES = {"prior", "aggregate", "mixture", "diffusion", "posterior", "noise_0.5", "noise_1",
         "interpolation_midpoint", "reconstruction"}
JUDGED = MODES | {"baseline_grf", "baseline_copy", "real_heldout"}


def test_dry_run_lists_every_stage(tmp_path):
    write_config(tmp_path)
    out = snakemake(tmp_path, "-n").stdout
    for rule in ("synthesize", "ingest", "segment", "pack", "train", "sample", "baselines",
                 "evaluate", "summarize"):
        assert f"rule {rule}:" in out or f"\n{rule} " in out, rule


MODULE_SNAKEFILE = """configfile: "config/config.yaml"


module microvae:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from microvae
"""


def test_the_catalog_layout_and_its_test_config(tmp_path):
    """What the Snakemake workflow catalog reads: workflow/Snakefile, its envs, the usage file,
    and a .test config that a dry run accepts from the repository's root."""
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["report"] is True
    assert catalog["usage"]["software-stack-deployment"]["conda"] is True
    envs = {p.name for p in (REPO / "workflow" / "envs").glob("*.yaml")}
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'"\.\./envs/([^"]+)"', rules.read_text()):
            assert env in envs, (rules.name, env)
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--directory", ".test",
                          "--cores", "1", "--workflow-profile", "none"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "summarize" in out.stdout


def test_the_workflow_runs_as_a_module_from_another_directory(tmp_path):
    """Deployment as the catalog describes it (snakedeploy): a Snakefile of one `module`
    statement and `use rule *`, in a folder that holds only the config, runs every stage."""
    write_config(tmp_path)
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(MODULE_SNAKEFILE.format(snakefile=REPO / "workflow" / "Snakefile"))
    snakemake(tmp_path, snakefile=snakefile)
    rows = list(csv.DictReader(open(tmp_path / "results/evaluation/summary.csv")))
    assert {r["set"] for r in rows} == JUDGED
    snakemake(tmp_path, "--report", "results/report.html", snakefile=snakefile)
    assert (tmp_path / "results/report.html").stat().st_size > 10_000


@pytest.mark.smoke
def test_full_run_outputs(tiny_run):
    results = tiny_run / "results"
    for latent in (2, 4):
        metrics = json.loads((results / f"evaluation/latent_{latent}/metrics.json").read_text())
        assert set(metrics["sets"]) == JUDGED
        assert 0 <= metrics["reconstruction"]["iou"] <= 1
        for name, values in metrics["sets"].items():
            assert set(values) >= {"role", "distance", "floor", "floor_p95", "floor_multiple",
                                   "exceedance", "within_floor", "verdict", "summary"}, name
        for name in ("prior", "aggregate", "mixture", "diffusion", "baseline_grf",
                     "baseline_copy", "real_heldout"):
            assert 0 <= metrics["sets"][name]["novelty"]["fraction_closer"] <= 1
        # finished sets: their phase fraction is calibrated, not judged
        assert "phase_fraction" in metrics["sets"]["aggregate"]["calibrated"]
        assert set(metrics["ablation"]) >= {"prior", "aggregate", "mixture"}
        assert metrics["selection"]["split"] == "val"
        assert metrics["selection"]["best_unseeded"] in ("prior", "aggregate", "mixture",
                                                         "diffusion")
        header = (results / f"evaluation/latent_{latent}/curves.csv").read_text().splitlines()[0]
        assert header.startswith("r,real_s2,") and "baseline_grf_cluster_x" in header
        for figure in ("verdict", "curves", "distributions"):
            assert (results / f"evaluation/latent_{latent}/{figure}.png").stat().st_size > 1000
        for figure in ("prior", "posterior", "noise", "interpolation", "latent_map"):
            assert (results / f"samples/latent_{latent}/{figure}.png").stat().st_size > 1000
        assert (results / f"models/latent_{latent}/loss.png").exists()
        prior = torch.load(results / f"models/latent_{latent}/diffusion.pt", weights_only=True)
        assert prior["diffusion"]["kind"] == "vector"  # an MLP over Table 1's latent vectors
        assert (results / f"logs/train/latent_{latent}.log").read_text().count("epoch") >= 2
        assert (results / f"benchmarks/train/latent_{latent}.tsv").exists()
    assert (results / "baselines/baselines.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(results / "evaluation/summary.csv")))
    assert len(rows) == 2 * len(JUDGED)
    assert {r["set"] for r in rows} == JUDGED
    assert sum(r["chosen_on_val"] == "True" for r in rows) == 2  # one per latent size


def test_score_judges_files_the_project_did_not_generate(tiny_run, tmp_path):
    """microvae score on a porespy volume (a generator no one here wrote) and on PNG images:
    each axis of the volume judged on its own, beside the baselines and real held-out data."""
    import porespy as ps
    import tifffile

    from conftest import microvae

    volume = ps.generators.blobs(shape=[24, 48, 48], porosity=0.8, blobiness=2, seed=1)
    tifffile.imwrite(tmp_path / "blobs.tif", (~volume).astype(np.uint8) * 255)
    images = tmp_path / "pngs"
    images.mkdir()
    for i in range(3):
        iio.imwrite(images / f"im{i}.png", (volume[i * 8] * 255).astype(np.uint8))
    results = tiny_run / "results"
    out = tmp_path / "score"
    done = microvae("score", "--generated", str(tmp_path / "blobs.tif"), str(images),
                    "--dataset", str(results / "dataset/dataset.h5"), "--baselines",
                    str(results / "baselines/baselines.h5"), "--out-dir", str(out),
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    card = json.loads((out / "scorecard.json").read_text())
    assert set(card["sets"]) == {"axis_0", "axis_1", "axis_2", "images", "baseline_grf",
                                 "baseline_copy", "real_heldout"}
    assert card["sets"]["axis_0"]["n_images"] == 24 * 9  # 48 px sections: 3 x 3 tiles of 16
    assert "novelty" in card["sets"]["images"]
    (label, described), = card["volumes"].items()  # what sections do not show, per volume
    assert "blobs.tif" in label and described["shape"] == [24, 48, 48]
    assert described["phase_fraction"] == pytest.approx((~volume).mean())
    assert all(0 <= v <= 1 for v in described["spanning_fraction"]["phase_0"].values())
    assert described["spanning_fraction"]["phase_0"]["axis_0"] > 0.99  # the pore space spans
    html = (out / "scorecard.html").read_text()
    assert "axis_1" in html and "data:image/png;base64" in html
    assert "axis_2" in (out / "scorecard.csv").read_text()
    grey = tmp_path / "grey.npy"
    np.save(grey, np.random.default_rng(0).random((40, 40)))
    refused = microvae("score", "--generated", str(grey), "--dataset",
                       str(results / "dataset/dataset.h5"), "--baselines",
                       str(results / "baselines/baselines.h5"), "--out-dir",
                       str(tmp_path / "refused"), cwd=tmp_path)
    assert refused.returncode == 1 and "grey.npy" in refused.stderr
    assert "--threshold" in refused.stderr and "Traceback" not in refused.stderr


def test_library_built_data_set_is_the_workflows(tiny_run, tmp_path):
    """The unit tests' data set (conftest.build_tiny_dataset, no Snakemake) is the workflow's."""
    built = build_tiny_dataset(tmp_path)
    with h5py.File(built) as a, h5py.File(tiny_run / "results/dataset/dataset.h5") as b:
        assert sorted(a) == sorted(b)
        for name in a:
            assert np.array_equal(a[name][()], b[name][()]), name
        assert a.attrs["split_counts"] == b.attrs["split_counts"]


def test_second_run_does_nothing(tiny_run):
    """A second run starts no job and touches no result (whatever the machine's speed)."""
    assert "Nothing to be done" in snakemake(tiny_run, "-n").stdout
    results = sorted(p for p in (tiny_run / "results").rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in results}
    out = snakemake(tiny_run)
    assert "Nothing to be done" in out.stdout + out.stderr
    assert {p: p.stat().st_mtime_ns for p in results} == before


def test_changed_training_parameter_reruns_exactly_downstream(tiny_run, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(tiny_run, work, symlinks=True)
    config = json.loads(json.dumps(TINY_CONFIG))
    config["train"]["learning_rate"] = 0.002
    write_config(work, config)
    changed = snakemake(work, "--list-changes", "params").stdout.split()
    assert sorted(c for c in changed if c.endswith(".pt")) == [
        "results/models/latent_2/model.pt", "results/models/latent_4/model.pt"]
    out = snakemake(work, "-n", "--quiet", "rules").stdout
    counts = dict(line.split()[:2] for line in out.splitlines()
                  if len(line.split()) == 2 and line.split()[1].isdigit())
    assert counts == {"train": "2", "train_prior": "2", "sample": "2", "evaluate": "2",
                      "summarize": "1", "all": "1", "total": "10"}


def test_changed_latent_sizes_train_only_the_new_one(tiny_run, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(tiny_run, work, symlinks=True)
    config = json.loads(json.dumps(TINY_CONFIG))
    config["model"]["latent_sizes"] = [2, 4, 3]
    write_config(work, config)
    trained = snakemake(work, "--list-changes", "input").stdout.split()  # nothing changed
    assert not [c for c in trained if c.endswith(".pt")]
    out = snakemake(work, "-n", "--quiet", "rules").stdout
    counts = dict(line.split()[:2] for line in out.splitlines()
                  if len(line.split()) == 2 and line.split()[1].isdigit())
    assert counts == {"train": "1", "train_prior": "1", "sample": "1", "evaluate": "1",
                      "summarize": "1", "all": "1", "total": "6"}
    assert "results/models/latent_3/model.pt" in snakemake(work, "-n").stdout


def test_two_clean_runs_are_identical(tiny_run, tmp_path):
    write_config(tmp_path)
    snakemake(tmp_path)
    a, b = tiny_run / "results", tmp_path / "results"
    with h5py.File(a / "dataset/dataset.h5") as x, h5py.File(b / "dataset/dataset.h5") as y:
        for split in ("train", "val", "test"):
            assert np.array_equal(x[split][()], y[split][()])
    for latent in (2, 4):
        wa = torch.load(a / f"models/latent_{latent}/model.pt", weights_only=True)["state_dict"]
        wb = torch.load(b / f"models/latent_{latent}/model.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "evaluation/summary.csv").read_text() == (b / "evaluation/summary.csv").read_text()


def test_report(tiny_run):
    snakemake(tiny_run, "--report", "results/report.zip")
    assert (tiny_run / "results/report.zip").stat().st_size > 10_000
    snakemake(tiny_run, "--report", "results/report.html")
    assert (tiny_run / "results/report.html").stat().st_size > 10_000


def test_lint_is_clean():
    result = snakemake(REPO, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def two_phase_micrograph(seed, size=(80, 96)):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    phase = ndimage.gaussian_filter(rng.random(size), 3) > 0.52
    grey = np.where(phase, 60, 200) + rng.normal(0, 8, size)
    return np.clip(grey, 0, 255).astype(np.uint8), phase


def test_users_grey_micrographs_with_info_bar(tmp_path):
    """A real-looking micrograph: two phases plus a white info panel with dark text at the
    bottom, removed by the crop setting."""
    folder = tmp_path / "micrographs"
    folder.mkdir()
    for i in range(4):
        grey, _ = two_phase_micrograph(i)
        panel = np.full((20, grey.shape[1]), 255, np.uint8)
        panel[5:15, 4:60:3] = 0  # "text"
        iio.imwrite(folder / f"scan_{i}.png", np.vstack([grey, panel]))
    config = {"image_size": 16, "sources": [{"name": "lab", "paths": [str(folder / "*.png")],
                                             "crop": {"bottom": 20}, "pixel_size": 0.1}],
              "split": {"train": 0.5, "val": 0.25, "test": 0.25}}
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/dataset/dataset.h5")
    with h5py.File(tmp_path / "results/ingested/lab.h5") as h5:
        assert h5["images"].shape == (4 * 5 * 6, 16, 16)
        assert h5["origin"][:, 3].max() + 16 <= 80  # no tile reaches into the info bar
    with h5py.File(tmp_path / "results/dataset/dataset.h5") as h5:
        assert h5.attrs["pixel_size"] == 0.1
        fraction = np.concatenate([h5[s][()] for s in ("train", "val", "test")]).mean()
    truth = np.mean([two_phase_micrograph(i)[1].mean() for i in range(4)])
    assert abs(fraction - truth) < 0.03  # dark phase is phase 1


def test_users_binary_pngs_skip_thresholding(tmp_path):
    folder = tmp_path / "binary"
    folder.mkdir()
    phases = []
    for i in range(3):
        _, phase = two_phase_micrograph(10 + i, size=(32, 32))
        phases.append(phase)
        iio.imwrite(folder / f"b{i}.png", phase.astype(np.uint8) * 255)
    config = {"image_size": 16, "sources": [{"name": "bin", "paths": [str(folder / "b*.png")],
                                             "binary": True, "segmentation": {
                                                 "opening_radius": 0, "closing_radius": 0,
                                                 "fill_holes": 0, "min_island": 0}}],
              "split": {"train": 0.34, "val": 0.33, "test": 0.33}}
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/dataset/dataset.h5")
    qa = json.loads((tmp_path / "results/segmented/bin_qa.json").read_text())
    assert qa["threshold"] == 0.5 and qa["phase"] == "bright"
    with h5py.File(tmp_path / "results/segmented/bin.h5") as h5:
        tiles = h5["images"][()]
    expected = np.stack([p[y:y + 16, x:x + 16] for p in phases for y in (0, 16) for x in (0, 16)])
    assert np.array_equal(tiles, expected.astype(np.uint8))


def test_architecture_auto_takes_the_conv_model_and_its_prior_for_a_fine_pored_map(tmp_path):
    """model.architecture auto (the default) on the fine-pored Bentheimer map (129 px of pore
    boundary per 32 px tile): the train job chooses the conv model on 64 px crops and says so,
    and the workflow then trains its diffusion prior (of latent grids) and samples from it."""
    import copy

    config = copy.deepcopy(TINY_CONFIG)
    config["image_size"] = 32
    config["sources"] = [{"name": "fine", "paths": [str(REPO / "tests/data/bentheimer_fine.npy")],
                          "stride": 16}]
    config["model"] = {"latent_sizes": [4]}
    config["train"] = {"epochs": 1, "steps_per_epoch": 4, "batch_size": 8, "threads": 1,
                       "max_steps": None, "max_minutes": None}
    config["diffusion"] = {"max_steps": 5, "width": 8, "windows": 8, "crop_cells": 4,
                           "sampling_steps": 2}
    write_config(tmp_path, config)
    planned = snakemake(tmp_path, "-n").stdout
    assert "train_prior" in planned  # of grids or of vectors: the job reads which
    snakemake(tmp_path)
    results = tmp_path / "results"
    model = torch.load(results / "models/latent_4/model.pt", weights_only=True)
    assert model["config"]["architecture"] == "conv" and model["config"]["image_size"] == [64, 64]
    log = (results / "logs/train/latent_4.log").read_text()
    assert re.search(r"model.architecture auto: conv \(1\d\d px of phase boundary per 32 px tile",
                     log), log
    prior = torch.load(results / "models/latent_4/diffusion.pt", weights_only=True)
    assert prior["diffusion"]["kind"] == "grid"
    metrics = json.loads((results / "evaluation/latent_4/metrics.json").read_text())
    assert {"prior", "field", "diffusion"} <= set(metrics["sets"])
    assert "aggregate" not in metrics["sets"]


def test_conv_model_end_to_end_with_large_images_and_export(tmp_path):
    """model.architecture conv with sample.sizes: training on larger crops, field samples,
    large images evaluated against real windows (rows of their own in summary.csv), export."""
    import copy

    from microvae.vti import read_vti

    config = copy.deepcopy(TINY_CONFIG)
    config["model"] = {"architecture": "conv", "latent_sizes": [3], "kl_weight": 1.0}
    config["train"] = {"epochs": 2, "steps_per_epoch": 6, "batch_size": 8, "crop_size": 32,
                       "threads": 1}
    config["sample"].update({"sizes": [64], "n_large": 3, "periodic": True,
                             "phase_fractions": [0.3], "graded": [0.2, 0.4]})
    config["diffusion"] = {"max_steps": 20, "width": 8, "windows": 16, "crop_cells": 4,
                           "sampling_steps": 3}
    config["export"] = {"formats": ["vti", "npy"], "n": 2, "real": True}
    write_config(tmp_path, config)
    snakemake(tmp_path)
    results = tmp_path / "results"
    model = torch.load(results / "models/latent_3/model.pt", weights_only=True)
    assert model["config"]["architecture"] == "conv" and model["config"]["image_size"] == [32, 32]
    prior = torch.load(results / "models/latent_3/diffusion.pt", weights_only=True)
    assert prior["extra"]["model_fingerprint"] == model["extra"]["data_fingerprint"]
    assert len(prior["diffusion"]["history"]["step"]) == 20
    metrics = json.loads((results / "evaluation/latent_3/metrics.json").read_text())
    assert {"prior", "field", "diffusion"} <= set(metrics["sets"])
    assert "aggregate" not in metrics["sets"]
    conditioned = metrics["conditioning"]
    assert conditioned["conditioned_diffusion_0.3_64"]["target"] == pytest.approx(0.3)
    assert len(conditioned["graded_diffusion_64"]["target_bands"]) == 8
    large = json.loads((results / "evaluation/latent_3/large.json").read_text())
    assert {"prior_64", "field_64", "diffusion_64", "baseline_grf_64"} <= set(large["sets"])
    assert large["periodic"] and large["sets"]["baseline_grf_64"]["role"] == "baseline"
    assert "periodic_s2_nrmse" in large["sets"]["field_64"]
    assert "novelty" in large["sets"]["field_64"]
    rows = list(csv.DictReader(open(results / "evaluation/summary.csv")))
    assert {(r["set"], r["size"]) for r in rows} >= {("field", "16"), ("field_64", "64"),
                                                     ("diffusion_64", "64")}
    manifest = json.loads((results / "export/latent_3/manifest.json").read_text())
    assert {f["set"] for f in manifest["files"]} == {
        "prior_64", "field_64", "diffusion_64", "conditioned_diffusion_0.3_64",
        "graded_diffusion_64", "real_64"}
    phase, _, _ = read_vti(results / "export/latent_3/field_64_000.vti")
    assert np.array_equal(phase[0], np.load(results / "export/latent_3/field_64_000.npy"))
    assert (results / "evaluation/latent_3/large.png").stat().st_size > 1000
    # a sampling setting of the prior re-samples without re-training anything
    config["diffusion"]["guidance_schedule"] = [[0.2, 0.5], [0.4, 1.5]]
    write_config(tmp_path, config)
    planned = snakemake(tmp_path, "-n").stdout
    assert "rule sample:" in planned or "\nsample " in planned
    assert "train_prior" not in planned
    assert not re.search(r"(rule|checkpoint) train:", planned)


def test_volumes_end_to_end_train_generate_judge(tmp_path):
    """volume.enabled: the conv3d model trains on the train split's volumes (sections stacked
    back), generates periodic .vti volumes from both priors and at a target phase fraction
    (calibrated), and the judge scores them per axis against the test volumes beside blurred
    noise; a generation setting re-generates without re-training."""
    import copy

    from microvae.vti import read_vti

    config = copy.deepcopy(TINY_CONFIG)
    config["sources"][0]["synthetic"].update({"n_volumes": 4, "shape": [32, 48, 48]})
    config["sources"][0]["pixel_size"] = 0.5
    config["volume"] = {"enabled": True, "crop_size": 16, "latent_channels": 2, "steps": 6,
                        "batch_size": 2, "diffusion_steps": 4, "shape": [64, 64, 64], "n": 1,
                        "phase_fractions": [0.3], "threads": 1}
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/evaluation/volumes.json", "results/volumes/target_0.3_0.vti")
    results = tmp_path / "results"
    training = json.loads((results / "models/volume/training.json").read_text())
    assert training["steps"] == 6 and training["diffusion"]["steps"] == 4
    assert all(shape[0] == 32 for shape in training["training_volumes"])
    volume, size, unit = read_vti(results / "volumes/diffusion_0.vti")
    assert volume.shape == (64, 64, 64) and size == 0.5 and unit == "um"
    metrics = json.loads((results / "evaluation/volumes.json").read_text())
    assert set(metrics["by_axis"]) == {"0", "1", "2"}
    assert {"diffusion", "field", "blurred_noise"} <= set(metrics["by_axis"]["0"])
    assert metrics["by_axis"]["0"]["blurred_noise"]["n_judged"] > 0
    assert (results / "evaluation/volumes.png").stat().st_size > 1000
    target = json.loads((results / "volumes/target_0.3_0.json").read_text())
    assert target["phase_fraction_asked"] == 0.3 and target["calibrated"]
    assert read_vti(results / "volumes/target_0.3_0.vti")[0].mean() == pytest.approx(
        target["phase_fraction"])
    config["volume"]["shape"] = [64, 64, 96]
    write_config(tmp_path, config)
    planned = snakemake(tmp_path, "results/evaluation/volumes.json", "-n").stdout
    assert "generate_volume" in planned and "train_volume" not in planned
