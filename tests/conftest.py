"""Shared fixtures: a tiny configuration and a helper that runs the real workflow in a
temporary directory."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"

# The catalog's test config (.test/config/config.yaml) is the tiny config of the tests.
TINY_CONFIG = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())


def write_config(directory: Path, config: dict | None = None, name: str = "config.yaml") -> Path:
    path = directory / "config" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config or TINY_CONFIG, sort_keys=False))
    return path


def snakemake(directory: Path, *args: str, check: bool = True, timeout: int = 900,
              env: dict | None = None, snakefile: Path = SNAKEFILE
              ) -> subprocess.CompletedProcess:
    """Run the repository's workflow (or ``snakefile``) with ``directory`` as working
    directory."""
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory",
               str(directory), "--cores", "2", "--workflow-profile", "none", *args]
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def microvae(*args: str, check: bool = False, timeout: int = 600, cwd: Path | None = None,
             isolated: bool = False) -> subprocess.CompletedProcess:
    """Run the ``microvae`` command line and return its exit status, stdout and stderr.

    By default in this process (``cli.main`` with stdout, stderr and the logging handlers
    redirected): the command line's own code path, without an interpreter and a torch start-up
    per call (2-3 s each). ``isolated`` runs it in a subprocess (``python -m microvae``), for
    tests of the process itself (signals, environment)."""
    if isolated:
        result = subprocess.run([sys.executable, "-m", "microvae", *args], capture_output=True,
                                text=True, timeout=timeout, cwd=cwd,
                                env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    else:
        result = _in_process(list(args), cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"microvae {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


def _in_process(args: list[str], cwd: Path | None) -> subprocess.CompletedProcess:
    import torch

    from microvae import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    threads = torch.get_num_threads()
    directory = os.getcwd()
    root.handlers = []  # main's logging.basicConfig then writes to the redirected stderr
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = cli.main(args)
            except SystemExit as exit_:  # argparse: --help, usage errors
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
            except Exception:  # what the interpreter would print, and its exit status
                traceback.print_exc()
                code = 1
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = handlers
        root.setLevel(level)
        torch.set_num_threads(threads)
        os.chdir(directory)
    return subprocess.CompletedProcess(["microvae", *args], code, stdout.getvalue(),
                                       stderr.getvalue())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole workflow run once on the tiny configuration (shared by several tests)."""
    directory = tmp_path_factory.mktemp("tiny_run")
    write_config(directory)
    snakemake(directory)
    return directory


def build_tiny_dataset(directory: Path, config: dict | None = None) -> Path:
    """The data half of the workflow on a config with one synthetic source, by the library's
    stage functions (no Snakemake): the same files under ``results/`` as the workflow writes."""
    from microvae.ingest import SourceOptions
    from microvae.segment import SegmentationParameters
    from microvae.stages.data import ingest_files, pack_files, segment_file, synthesize
    from microvae.synthetic import SteelParameters

    config = config or TINY_CONFIG
    (source,) = config["sources"]
    name, synthetic = source["name"], dict(source["synthetic"])
    n_volumes, seed = synthetic.pop("n_volumes"), synthetic.pop("seed")
    results = directory / "results"
    for folder in ("raw", "ingested", "segmented", "dataset"):
        (results / folder).mkdir(parents=True, exist_ok=True)
    iq, phase = [], []
    for i in range(n_volumes):
        iq.append(results / "raw" / f"volume_{i:03d}_iq.tif")
        phase.append(results / "raw" / f"volume_{i:03d}_phase.tif")
        synthesize(SteelParameters.from_options(synthetic), seed + i, iq[-1], phase[-1])
    reader = {k: v for k, v in source.items() if k not in ("synthetic", "segmentation")}
    ingest_files([str(p) for p in iq], results / "ingested" / f"{name}.h5",
                 SourceOptions.from_options(reader), config["image_size"],
                 truth=[str(p) for p in phase])
    segment_file(results / "ingested" / f"{name}.h5", results / "segmented" / f"{name}.h5",
                 results / "segmented" / f"{name}_qa.json",
                 SegmentationParameters.from_options(source.get("segmentation", {})))
    split = config["split"]
    pack_files([str(results / "segmented" / f"{name}.h5")], results / "dataset" / "dataset.h5",
               {k: split[k] for k in ("train", "val", "test")}, split["seed"])
    return results / "dataset" / "dataset.h5"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A packed data set of the tiny configuration, built with the library."""
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


def pytest_collection_modifyitems(config, items):
    """The workflow smoke test (minutes) first: with two workers (pytest-xdist, -n 2) it then
    runs beside the unit tests instead of after them."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("smoke") else 1)
