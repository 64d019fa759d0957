"""Large generated microstructures of the conv VAE against real windows of the same size:
runs the workflow with config/conv.yaml (or a gallery image with the same model and training)
for each training seed and tabulates, per generated set (mode and size), the verdict and every
descriptor's median distance as a multiple of the floor's 95th percentile, beside the real
held-out windows, with the training time, steps and the test IoU.

    python benchmarks/studies/large.py [--seeds 0 1 2] [--avx2] [--gallery sem_nanoporous_gold]
        [--sizes 64 128] [--set '{"model": {"kl_weight": 1.0}}'] [--tag NAME]
        [--collect DIR ...]

--avx2 runs on AVX2 kernels only, in fp32 (what `precision: auto` picks on that CPU kind):
the time budgets of the issues hold on that kind.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from gallery import DATA, GALLERY

from machine import AVX2_ONLY, REPO, judged, run_workflow, save
from microvae.stages.evaluate import evaluate_large


def config_for(args) -> dict:
    config = yaml.safe_load((REPO / "config" / "conv.yaml").read_text())
    if args.gallery:
        file, size, options = GALLERY[args.gallery]
        config["image_size"] = size
        config["sources"] = [{"name": args.gallery, "paths": [str(DATA / file)], **options}]
        config["split"] = {"train": 0.75, "val": 0.125, "test": 0.125, "seed": 0}
    if args.sizes:
        config["sample"]["sizes"] = args.sizes
    for section, changes in args.set.items():
        config[section] = {**config.get(section, {}), **changes}
    if args.avx2:
        config["train"]["precision"] = "fp32"
    return config


def one_run(directory: Path, config: dict, cores: int, env: dict, run: bool = True) -> dict:
    """Run the workflow in ``directory`` (``run`` False: only read a finished run) and collect
    the judged sets at the tile size and at the large sizes, on test and (for choices) on val."""
    if run:
        run_workflow(directory, config, cores, env)
    results = directory / "results"
    out: dict = {"sets": {}, "val_sets": {}}
    for latent in config["model"]["latent_sizes"]:
        with open(results / "models" / f"latent_{latent}" / "history.csv", newline="") as handle:
            history = list(csv.DictReader(handle))
        out["training_minutes"] = sum(float(r["seconds"]) for r in history) / 60
        out["steps"] = int(history[-1]["steps"])
        out["stop_reason"] = history[-1]["stop_reason"]
        metrics = json.loads((results / "evaluation" / f"latent_{latent}" / "metrics.json"
                              ).read_text())
        out["test_iou"] = metrics["reconstruction"]["iou"]
        large = json.loads((results / "evaluation" / f"latent_{latent}" / "large.json").read_text())
        samples = results / "samples" / f"latent_{latent}" / "samples.h5"
        val = evaluate_large(samples, results / "dataset" / "dataset.h5",
                             directory / f"large_val_{latent}.json", split="val")
        for name, values in val["sets"].items():
            out["val_sets"][f"latent {latent} {name}"] = judged(values)
        for name, values in large["sets"].items():
            entry = {**judged(values), "size": values["size"],
                     "compared_window": values["compared_window"],
                     "n_real_windows": values["n_real_windows"],
                     "real_phase_fraction": values["real_phase_fraction"]}
            if "periodic_s2_nrmse" in values:
                entry["periodic_s2_nrmse"] = values["periodic_s2_nrmse"]
            out["sets"][f"latent {latent} {name}"] = entry
        out["tile_sets"] = {name: judged(values) for name, values in metrics["sets"].items()
                            if name in ("prior", "field", "diffusion", "baseline_grf",
                                        "real_heldout")}
        if "conditioning" in metrics:
            out["conditioning"] = metrics["conditioning"]
        prior_file = results / "models" / f"latent_{latent}" / "diffusion.pt"
        if prior_file.exists():
            import torch

            history = torch.load(prior_file, weights_only=True)["diffusion"]["history"]
            out["diffusion_training_minutes"] = history["seconds"][-1] / 60
            out["diffusion_training_steps"] = history["step"][-1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--avx2", action="store_true", help="AVX2 kernels only, fp32")
    parser.add_argument("--gallery", choices=sorted(GALLERY), default=None,
                        help="a real micrograph of the gallery instead of the embedded default")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="generated sizes (default: conv.yaml's sample.sizes)")
    parser.add_argument("--set", type=json.loads, default={},
                        help="changes to config sections (JSON)")
    parser.add_argument("--tag", default="", help="runs in runs/large_TAG_N/, large_TAG.json")
    parser.add_argument("--collect", type=Path, nargs="+", default=None,
                        help="read finished workflow directories (one per seed, in --seeds "
                             "order; their config/config.yaml or --configfile) instead of "
                             "running")
    args = parser.parse_args()
    config = config_for(args)
    env = AVX2_ONLY if args.avx2 else {}
    name = "_".join(filter(None, ["large", args.gallery, args.tag, "avx2" if args.avx2 else ""]))
    runs = {}
    for i, seed in enumerate(args.seeds):
        seeded = {**config, "train": {**config["train"], "seed": seed}}
        directory = args.collect[i] if args.collect else REPO / "runs" / f"{name}_{seed}"
        runs[seed] = one_run(directory, seeded, args.cores, env, run=not args.collect)
        print(f"seed {seed}: {runs[seed]['training_minutes']:.1f} min, IoU "
              f"{runs[seed]['test_iou']:.3f}")
    table = {}
    for set_name in runs[args.seeds[0]]["sets"]:
        table[set_name] = {}
        for key in runs[args.seeds[0]]["sets"][set_name]["floor_multiple"]:
            values = [runs[s]["sets"][set_name]["floor_multiple"][key] for s in args.seeds]
            table[set_name][key] = {"median": statistics.median(values), "min": min(values),
                                    "max": max(values)}
        cells = [f"{k} {v['median']:.2f} [{v['min']:.2f}, {v['max']:.2f}]"
                 for k, v in table[set_name].items()]
        print(f"{set_name} (x floor p95): " + "; ".join(cells))
    save(name, {"seeds": args.seeds, "avx2_only_emulated": args.avx2, "config": config,
                "runs": {str(s): r for s, r in runs.items()}, "table": table})


if __name__ == "__main__":
    main()
