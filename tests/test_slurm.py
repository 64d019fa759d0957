"""The workflow on a real SLURM cluster (tests/slurm/local_slurm.sh starts one; .ci/run does).

The tests that submit jobs are marked ``slurm`` and skipped, with the reason, where no SLURM
controller answers; the dry run with the SLURM profile needs no cluster and always runs.
"""

import json
import math
import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest
import torch

from conftest import REPO, TINY_CONFIG, snakemake, write_config

pytestmark = pytest.mark.slow


def slurm_available() -> bool:
    if not shutil.which("sinfo"):
        return False
    result = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return result.returncode == 0 and "UP" in result.stdout


def requires_slurm(test):
    """Marked ``slurm`` and skipped, with the reason, where no controller answers."""
    skip = pytest.mark.skipif(
        not slurm_available(),
        reason="no SLURM controller answers (start one with: sudo bash tests/slurm/local_slurm.sh up)")
    return pytest.mark.slurm(skip(test))

# The project's profile, with what a single-node CI cluster without accounting needs.
CI_OVERRIDES = ["--workflow-profile", str(REPO / "profiles" / "slurm"),
                "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks",
                "5", "--slurm-no-account", "--set-threads", "train=1", "--jobs", "4"]


def run_on_slurm(directory, *args, check=True):
    # conftest.snakemake passes --workflow-profile none first; the later option wins.
    return snakemake(directory, *CI_OVERRIDES, *args, check=check, timeout=1500)


def submitted_job_ids(output: str) -> list[str]:
    return re.findall(r"SLURM jobid (\d+)", output)


def assert_same_results(a, b, latents):
    with h5py.File(a / "dataset/dataset.h5") as x, h5py.File(b / "dataset/dataset.h5") as y:
        for split in ("train", "val", "test"):
            assert np.array_equal(x[split][()], y[split][()])
    for latent in latents:
        wa = torch.load(a / f"models/latent_{latent}/model.pt", weights_only=True)["state_dict"]
        wb = torch.load(b / f"models/latent_{latent}/model.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"latent {latent} differs"


@requires_slurm
def test_workflow_through_sbatch_equals_local_run(tiny_run, tmp_path):
    write_config(tmp_path)
    result = run_on_slurm(tmp_path)
    output = result.stdout + result.stderr
    ids = submitted_job_ids(output)
    n_jobs = int(re.search(r"total\s+(\d+)", output).group(1)) - 1  # all but the local 'all'
    assert len(set(ids)) == n_jobs, output[-3000:]
    listed = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i %T", "-j", ",".join(ids)],
                            capture_output=True, text=True, check=True).stdout
    states = dict(line.split() for line in listed.splitlines())
    assert set(states) == set(ids) and set(states.values()) == {"COMPLETED"}
    assert_same_results(tiny_run / "results", tmp_path / "results", (2, 4))
    assert (tiny_run / "results/evaluation/summary.csv").read_text() == \
        (tmp_path / "results/evaluation/summary.csv").read_text()


def test_dry_run_prints_sbatch_resources(tmp_path):
    write_config(tmp_path)
    result = snakemake(tmp_path, "--workflow-profile", str(REPO / "profiles" / "slurm"), "-n",
                       "--slurm-no-account", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    train = output[re.search(r"(rule|checkpoint) train:", output).start():]  # a checkpoint
    train = train[:train.index("\n\n")]
    resources = next(line for line in train.splitlines() if "resources:" in line)
    assert "mem_mb=16000" in resources and "runtime=60" in resources and "gpu=0" in resources


RETRY_CONFIG = json.loads(json.dumps(TINY_CONFIG))
RETRY_CONFIG["image_size"] = 32
RETRY_CONFIG["sources"][0]["synthetic"]["shape"] = [16, 128, 128]
RETRY_CONFIG["model"]["latent_sizes"] = [4]
RETRY_CONFIG["train"].update(runtime=1, batch_size=32, patience=None)
# Training long enough to outlive the first time limit (1 minute; the retries get 2 and 3) on
# any CPU: the number of epochs comes from the epoch time measured on this machine, and no
# early stop (patience) ends it before.
TRAINING_SECONDS = 120


def epochs_for(seconds: float, directory) -> int:
    """Epochs of RETRY_CONFIG that take about ``seconds`` here (from a 2-epoch calibration)."""
    write_config(directory, {**RETRY_CONFIG, "train": {**RETRY_CONFIG["train"], "epochs": 2}})
    snakemake(directory, "results/models/latent_4/model.pt")
    history = (directory / "results/models/latent_4/history.csv").read_text().splitlines()
    column = history[0].split(",").index("seconds")
    # the last epoch: the first one carries the start-up (kernel choice, first allocations)
    per_epoch = float(history[-1].split(",")[column])
    return max(4, min(5000, math.ceil(seconds / per_epoch)))


@requires_slurm
def test_train_killed_at_time_limit_resumes_on_retry(tmp_path):
    epochs = epochs_for(TRAINING_SECONDS, tmp_path / "calibration")
    config = {**RETRY_CONFIG, "train": {**RETRY_CONFIG["train"], "epochs": epochs}}
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for directory in (local, cluster):
        write_config(directory, config)
    snakemake(local, "results/models/latent_4/model.pt")
    result = run_on_slurm(cluster, "results/models/latent_4/model.pt")
    output = result.stdout + result.stderr
    log = (cluster / "results/logs/train/latent_4.log").read_text()
    assert "resuming from results/checkpoints/latent_4/checkpoint.pt after epoch" in log, \
        f"{epochs} epochs were not killed at the first limit:\n{output[-3000:]}"
    assert_same_results(local / "results", cluster / "results", (4,))
