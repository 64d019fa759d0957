"""Modes prior, field and diffusion at 256 and 512 px from finished workflow runs of
config/conv.yaml (one per training seed, e.g. the runs of benchmarks/studies/large.py): the trained
model and its diffusion prior sample 64 images at each size with the command line, and
`evaluate-large` judges them against the real test windows (512 px images are cut into the
largest real windows there are: 256 px on the default) beside the field baseline that the run's
baselines rule fitted and the real held-out windows. Tabulates the median [min, max] over the
runs of each descriptor's multiple of the floor's 95th percentile.

    python benchmarks/studies/large_sizes.py --runs runs/large_diffusion_0 runs/large_diffusion_1 \\
        runs/large_diffusion_2 [--sizes 256 512] [--reuse]

Writes samples and metrics into each run (sizes_{sizes}.h5, sizes_{sizes}.json) and
benchmarks/results/large_sizes.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import judged, save


def judge_run(run: Path, sizes: list[int], reuse: bool) -> dict:
    results = run / "results"
    tag = "_".join(map(str, sizes))
    samples, metrics = run / f"sizes_{tag}.h5", run / f"sizes_{tag}.json"
    if not (reuse and metrics.exists()):
        subprocess.run([
            sys.executable, "-m", "microvae", "sample",
            "--model", str(results / "models/latent_8/model.pt"),
            "--dataset", str(results / "dataset/dataset.h5"),
            "--diffusion", str(results / "models/latent_8/diffusion.pt"),
            "--mode", "prior", "field", "diffusion", "--size", *map(str, sizes),
            "--n-large", "64", "--seed", "0", "--out", str(samples)], check=True)
        subprocess.run([
            sys.executable, "-m", "microvae", "evaluate-large", "--samples", str(samples),
            "--dataset", str(results / "dataset/dataset.h5"),
            "--baselines", str(results / "baselines/baselines.h5"), "--latent", "8",
            "--seed", "0", "--metrics", str(metrics)], check=True)
    values = json.loads(metrics.read_text())
    return {name: {**judged(entry), "size": entry["size"],
                   "compared_window": entry["compared_window"]}
            for name, entry in values["sets"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--reuse", action="store_true",
                        help="tabulate the metrics a previous call wrote into the runs")
    args = parser.parse_args()
    runs = {str(run): judge_run(run, args.sizes, args.reuse) for run in args.runs}
    first = next(iter(runs.values()))
    table = {}
    for name in first:
        table[name] = {"n_within": [r[name]["n_within"] for r in runs.values()],
                       "n_judged": first[name]["n_judged"]}
        for key in first[name]["floor_multiple"]:
            values = [r[name]["floor_multiple"][key] for r in runs.values()]
            table[name][key] = {"median": statistics.median(values), "min": min(values),
                                "max": max(values)}
        print(f"{name}: within {table[name]['n_within']} of {table[name]['n_judged']}; " +
              "; ".join(f"{k} {v['median']:.2f} [{v['min']:.2f}, {v['max']:.2f}]"
                        for k, v in table[name].items() if isinstance(v, dict)))
    save("large_sizes", {"sizes": args.sizes, "runs": runs, "table": table})


if __name__ == "__main__":
    main()
