"""Wall time of the data stages (synthesize, ingest, segment, pack) of the default config,
run by Snakemake in a fresh temporary directory, with the time of each job from its
benchmark file.

    python benchmarks/speed/data_stages.py [--cores 2] [--configfile config/config.yaml]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile", default=str(REPO / "config" / "config.yaml"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "config").mkdir()
        shutil.copy(args.configfile, work / "config" / "config.yaml")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                        "--directory", str(work), "--cores", str(args.cores),
                        "--workflow-profile", "none", "--quiet", "all", "--",
                        "results/dataset/dataset.h5"], check=True)
        wall = time.perf_counter() - started
        jobs = {}
        for path in sorted((work / "results" / "benchmarks").rglob("*.tsv")):
            with open(path) as handle:
                row = next(csv.DictReader(handle, delimiter="\t"))
            jobs[str(path.relative_to(work / "results" / "benchmarks"))] = float(row["s"])
    print(f"data stages of {args.configfile}: {wall:.1f} s wall on {args.cores} cores")
    for name, seconds in jobs.items():
        print(f"  {name:40s} {seconds:6.1f} s")
    save("data_stages", {"config": Path(args.configfile).name, "cores": args.cores,
                         "wall_s": wall, "jobs_s": jobs})


if __name__ == "__main__":
    main()
