"""What machine a benchmark ran on (recorded with every result), where results go, and running
the workflow in a directory of its own."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})}
    restricted = {key: os.environ[key] for key in AVX2_ONLY if key in os.environ}
    if restricted:
        info["isa_restricted_by"] = restricted
    try:
        import torch

        info["torch"] = str(torch.__version__)
        info["torch_threads"] = torch.get_num_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def save(name: str, result: dict) -> Path:
    """Write ``result`` with the machine description to benchmarks/results/NAME.json."""
    path = Path(__file__).parent / "results" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


# PyTorch, oneDNN and MKL restricted to AVX2 kernels: the slower, AVX2-only CPU kind emulated
# on a machine with AVX-512 (not the real thing: clock and caches differ).
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def run_workflow(directory: Path, config: dict, cores: int, env: dict | None = None,
                 snakemake_args: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Run the whole workflow with ``config`` in ``directory`` (config/config.yaml written
    there; Snakemake re-runs only what changed, ``snakemake_args`` added to its command line);
    the rows of its summary.csv."""
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                    "--directory", str(directory), "--cores", str(cores), "--quiet", "rules",
                    *snakemake_args], check=True, env={**os.environ, **(env or {})})
    with open(directory / "results" / "evaluation" / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def judged(values: dict) -> dict:
    """The verdict of one judged set (metrics.json / large.json), compactly: descriptors within
    the floor, each descriptor's median distance as a multiple of the floor's 95th percentile,
    and the novelty where measured."""
    out = {"role": values["role"], "n_within": values["n_within"], "n_judged": values["n_judged"],
           "verdict": values["verdict"], "failed": sorted(k for k, ok in
                                                          values["within_floor"].items() if not ok),
           "floor_multiple": values["floor_multiple"],
           "phase_fraction": values["summary"]["phase_fraction_mean"]}
    if "novelty" in values:
        out["novelty_fraction_closer"] = values["novelty"]["fraction_closer"]
    return out
