"""The spread of the default run's results over training seeds: runs the whole workflow with
train.seed = 0, 1, 2 (everything else as config/config.yaml) in runs/seed_N/ and tabulates,
per latent size and judged set (the model's modes, the baselines, the real held-out set): the
descriptors within the floor, each descriptor's median distance as a multiple of the floor's
95th percentile, the novelty, the test IoU, and the mode chosen on the val split (median and
range over the seeds).

    python benchmarks/studies/seeds.py [--seeds 0 1 2] [--cores 2] [--config config/config.yaml]
        [--set '{"model": {"init": "torch"}}' --tag torchinit]

With ``--priors-only --tag T`` it copies the earlier runs runs/seed_N/ to runs/seed_T_N/ and
keeps their trained VAEs: only the diffusion priors and what follows them are (re-)made
(Snakemake's ``--forcerun train_prior --rerun-triggers mtime``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import REPO, judged, run_workflow, save


def run(seed: int, config: dict, cores: int, tag: str = "", priors_only: bool = False
        ) -> dict[int, dict]:
    """The workflow for one training seed; the metrics.json of each latent size."""
    directory = REPO / "runs" / (f"seed_{tag}_{seed}" if tag else f"seed_{seed}")
    extra: tuple[str, ...] = ()
    if priors_only:
        if not directory.exists():
            shutil.copytree(REPO / "runs" / f"seed_{seed}", directory, symlinks=True)
        extra = ("--forcerun", "train_prior", "--rerun-triggers", "mtime")
    run_workflow(directory, {**config, "train": {**config.get("train", {}), "seed": seed}},
                 cores, snakemake_args=extra)
    return {latent: json.loads((directory / "results" / "evaluation" / f"latent_{latent}" /
                                "metrics.json").read_text())
            for latent in config["model"]["latent_sizes"]}


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
    parser.add_argument("--priors-only", action="store_true",
                        help="keep the VAEs of runs/seed_N/ (copied): re-make the priors only")
    args = parser.parse_args()
    if args.priors_only and not args.tag:
        parser.error("--priors-only needs --tag (the copies of the earlier runs)")
    config = yaml.safe_load(Path(args.config).read_text())
    for section, changes in args.set.items():
        config[section] = {**config.get(section, {}), **changes}
    runs = {seed: run(seed, config, args.cores, args.tag, args.priors_only)
            for seed in args.seeds}
    table, chosen, per_seed = {}, {}, {}
    for latent in config["model"]["latent_sizes"]:
        first = runs[args.seeds[0]][latent]
        chosen[latent] = [{"chosen_on_val": runs[s][latent]["selection"]["best_unseeded"],
                           "val": runs[s][latent]["selection"]["verdicts"][
                               runs[s][latent]["selection"]["best_unseeded"]],
                           "test": runs[s][latent]["selection"]["test"]["verdict"]}
                          for s in args.seeds if runs[s][latent].get("selection")]
        for name in first["sets"]:
            sets = [judged(runs[s][latent]["sets"][name]) for s in args.seeds]
            per_seed[f"latent {latent} {name}"] = sets
            entry = {"role": sets[0]["role"],
                     "n_within": spread([v["n_within"] for v in sets]),
                     "n_judged": sets[0]["n_judged"],
                     "floor_multiple": {k: spread([v["floor_multiple"][k] for v in sets])
                                        for k in sets[0]["floor_multiple"]}}
            if "novelty_fraction_closer" in sets[0]:
                entry["novelty_fraction_closer"] = spread([v["novelty_fraction_closer"]
                                                           for v in sets])
            if name == "reconstruction":
                entry["test_iou"] = spread([runs[s][latent]["reconstruction"]["iou"]
                                            for s in args.seeds])
            table[f"latent {latent} {name}"] = entry
    for name, entry in table.items():
        within = entry["n_within"]
        cells = [f"{k} {v['median']:.2f}" for k, v in entry["floor_multiple"].items()]
        extra = ""
        if "novelty_fraction_closer" in entry:
            extra += f"; novelty {entry['novelty_fraction_closer']['median']:.2f}"
        if "test_iou" in entry:
            t = entry["test_iou"]
            extra += f"; test IoU {t['median']:.3f} [{t['min']:.3f}, {t['max']:.3f}]"
        print(f"{name} ({entry['role']}): {within['median']:g} [{within['min']:g}, "
              f"{within['max']:g}] of {entry['n_judged']} within; x floor p95: "
              + ", ".join(cells) + extra)
    print("chosen on val:", chosen)
    save(f"seeds_{args.tag}" if args.tag else "seeds",
         {"seeds": args.seeds, "config": args.config, "set": args.set,
          "priors_only": args.priors_only, "table": table,
          "chosen_on_val": {str(k): v for k, v in chosen.items()}, "per_seed": per_seed})


if __name__ == "__main__":
    main()
