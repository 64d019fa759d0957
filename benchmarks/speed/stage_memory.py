"""Peak resident memory of the data stages (ingest, segment, pack) against the memory their
rules declare, over image sizes: one grey micrograph of N x N px (a level-cut blurred noise
field with grey-level noise, as uint8 TIFF) or one grey volume of N^3 voxels, run by Snakemake
in a fresh temporary directory. Peaks are the kernel's high-water mark that every microvae
command logs at its end ("peak memory N MB"; the benchmark files' max_rss is recorded beside
it, but Snakemake samples it and can miss a short peak), the declared mem_mb comes from the job
descriptions in Snakemake's log.

    python benchmarks/speed/stage_memory.py [--images 1000 4000 8000 16000] [--volumes 256 512]

(about 10 minutes on 2 cores; the 16 000 px case needs about 6 GB).
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save

REPO = Path(__file__).resolve().parents[2]
DATA_RULES = ("ingest", "segment", "pack")


def grey_structure(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """uint8 grey image or volume: two phases (blobs of about 12 px, one third dark) with
    grey-level noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=4.0)
    cut = np.quantile(field[:: max(1, shape[0] // 256)], 1 / 3)
    grey = np.where(field < cut, 90, 170).astype(np.int16)
    grey += rng.integers(-30, 31, size=shape, dtype=np.int16)
    return np.clip(grey, 0, 255).astype(np.uint8)


def declared_memory(log_text: str) -> dict[str, int]:
    """mem_mb of each rule as Snakemake scheduled it (from its log)."""
    declared = {}
    for block in re.split(r"\n(?=\[|\S*rule )", log_text):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        mem = re.search(r"resources:.*?\bmem_mb=(\d+)", block)
        if rule and mem:
            declared[rule.group(1)] = int(mem.group(1))
    return declared


def run_case(label: str, shape: tuple[int, ...], image_size: int) -> dict:
    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        made = time.perf_counter()
        tifffile.imwrite(work / "micrograph.tif", grey_structure(shape))
        made = time.perf_counter() - made
        config = {"image_size": image_size, "sources": [{
            "name": "lab", "paths": [str(work / "micrograph.tif")],
            **({"axes": [0]} if len(shape) == 3 else {})}]}
        (work / "config").mkdir()
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                               "--directory", str(work), "--cores", "2", "--workflow-profile",
                               "none", "results/dataset/dataset.h5"],
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{label}: snakemake failed\n{done.stderr[-3000:]}")
        declared = declared_memory(done.stderr)
        jobs = {}
        for rule in DATA_RULES:
            path = next((work / "results" / "benchmarks").glob(f"{rule}*.tsv"), None) or \
                next((work / "results" / "benchmarks" / rule).glob("*.tsv"))
            with open(path) as handle:
                row = next(csv.DictReader(handle, delimiter="\t"))
            log = next((work / "results" / "logs").glob(f"{rule}*.log"), None) or \
                next((work / "results" / "logs" / rule).glob("*.log"))
            peak = re.findall(r"peak memory (\d+) MB", log.read_text())
            jobs[rule] = {"peak_mb": float(peak[-1]), "max_rss_mb": float(row["max_rss"]),
                          "s": float(row["s"]), "declared_mem_mb": declared.get(rule)}
    print(f"{label}: {wall:.0f} s (input made in {made:.0f} s)")
    for rule, job in jobs.items():
        print(f"  {rule:8s} peak {job['peak_mb']:6.0f} MB (sampled {job['max_rss_mb']:6.0f})"
              f"  declared {job['declared_mem_mb']} MB  {job['s']:6.1f} s")
    return {"shape": list(shape), "image_size": image_size, "wall_s": wall, "jobs": jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, nargs="*", default=[1000, 4000, 8000, 16000])
    parser.add_argument("--volumes", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--volume-image-size", type=int, default=32,
                        help="tile size for the volumes (one volume needs room for three slabs "
                             "along an axis that is not cut)")
    parser.add_argument("--name", default="stage_memory")
    args = parser.parse_args()
    cases = {}
    for n in args.images:
        cases[f"image_{n}"] = run_case(f"image {n}x{n}", (n, n), args.image_size)
    for n in args.volumes:
        cases[f"volume_{n}"] = run_case(f"volume {n}^3", (n, n, n), args.volume_image_size)
    short = [f"{label} {rule}" for label, case in cases.items()
             for rule, job in case["jobs"].items()
             if job["declared_mem_mb"] is None or job["peak_mb"] > job["declared_mem_mb"]]
    print("every peak within its declared memory" if not short else
          f"peaks above the declared memory: {short}")
    save(args.name, {"cases": cases, "over_declared": short})


if __name__ == "__main__":
    main()
