"""The spread of the default run's results over training seeds: runs the whole workflow with
train.seed = 0, 1, 2 (everything else as config/config.yaml) in runs/seed_N/ and tabulates,
per latent size and mode, the verdict count and the distances against the floor (median and
range over the seeds), and the novelty of the unseeded modes.

    python benchmarks/seeds.py [--seeds 0 1 2] [--cores 2] [--config config/config.yaml]
        [--set '{"model": {"init": "torch"}}' --tag torchinit]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from machine import REPO, run_workflow, save

COLUMNS = ("n_within_floor", "s2_nrmse_radial", "floor_p95_s2_nrmse_radial",
           "phase_fraction_wasserstein", "floor_p95_phase_fraction_wasserstein",
           "island_area_median_difference", "novelty_fraction_closer", "recon_iou")


def run(seed: int, config: dict, cores: int, tag: str = "") -> list[dict[str, str]]:
    directory = REPO / "runs" / (f"seed_{tag}_{seed}" if tag else f"seed_{seed}")
    return run_workflow(directory, {**config, "train": {**config.get("train", {}), "seed": seed}},
                        cores)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    parser.add_argument("--set", type=json.loads, default={},
                        help='changes to config sections (JSON), e.g. \'{"model": {"init": "torch"}}\'')
    parser.add_argument("--tag", default="", help="runs in runs/seed_TAG_N/, results seeds_TAG.json")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    for section, changes in args.set.items():
        config[section] = {**config.get(section, {}), **changes}
    runs = {seed: run(seed, config, args.cores, args.tag) for seed in args.seeds}
    table = {}
    for row in runs[args.seeds[0]]:
        key = (row["latent"], row["mode"])
        rows = [next(r for r in runs[s] if (r["latent"], r["mode"]) == key) for s in args.seeds]
        table[f"latent {key[0]} {key[1]}"] = {
            column: spread([float(r[column]) for r in rows])
            for column in COLUMNS if column in row and row[column] not in ("", "nan")}
    for name, values in table.items():
        cells = [f"{c} {v['median']:.4g} [{v['min']:.4g}, {v['max']:.4g}]"
                 for c, v in values.items()]
        print(f"{name}: " + "; ".join(cells))
    save(f"seeds_{args.tag}" if args.tag else "seeds",
         {"seeds": args.seeds, "config": args.config, "set": args.set, "table": table})


if __name__ == "__main__":
    main()
