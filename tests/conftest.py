"""Shared fixtures: a tiny configuration and a helper that runs the real workflow in a
temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"

TINY_CONFIG = {
    "image_size": 16,
    "sources": [{
        "name": "tiny",
        "synthetic": {"n_volumes": 3, "seed": 5, "shape": [8, 64, 64], "grain_size": 30,
                      "island_size": 8},
        "axes": [0],
    }],
    "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 0},
    "model": {"latent_sizes": [2, 4], "kl_weight": 0.1},
    "train": {"epochs": 2, "batch_size": 16, "threads": 1},
    "sample": {"n_prior": 24, "n_posterior_images": 4, "n_draws": 3, "noise_sigmas": [0.5, 1.0],
               "n_pairs": 3, "n_steps": 5},
}


def write_config(directory: Path, config: dict | None = None, name: str = "config.yaml") -> Path:
    path = directory / "config" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config or TINY_CONFIG, sort_keys=False))
    return path


def snakemake(directory: Path, *args: str, check: bool = True, timeout: int = 900,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the repository's workflow with ``directory`` as working directory."""
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
               str(directory), "--cores", "2", "--workflow-profile", "none", *args]
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def microvae(*args: str, check: bool = False, timeout: int = 600,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the ``microvae`` command line in a subprocess."""
    result = subprocess.run([sys.executable, "-m", "microvae", *args], capture_output=True,
                            text=True, timeout=timeout, cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    if check and result.returncode != 0:
        raise AssertionError(f"microvae {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole workflow run once on the tiny configuration (shared by several tests)."""
    directory = tmp_path_factory.mktemp("tiny_run")
    write_config(directory)
    snakemake(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A packed data set of the tiny configuration (data stages only)."""
    directory = tmp_path_factory.mktemp("tiny_data")
    write_config(directory)
    snakemake(directory, "results/dataset/dataset.h5")
    return directory / "results" / "dataset" / "dataset.h5"
