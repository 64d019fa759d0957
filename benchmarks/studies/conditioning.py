"""Generation at a chosen phase fraction, at fractions never seen in training: the conv model and
its diffusion prior trained on a mix of synthetic steels (martensite fractions 0.15, 0.25, 0.35;
config/conv.yaml otherwise), asked for 0.20 and 0.30, judged against real synthetic volumes made
at 0.20 and 0.30 (their own data sets: floor, real held-out windows) beside the unconditional
diffusion and field images of the same model; and a graded map (0.15 -> 0.35).

    python benchmarks/studies/conditioning.py [--seeds 0] [--avx2] [--tag _NAME]

Writes benchmarks/results/conditioning[TAG].json; runs in runs/conditioning[TAG]_{seed}/ and
runs/conditioning_reference_{fraction}/.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import AVX2_ONLY, REPO, judged, machine, run_workflow, save
from microvae import plots
from microvae.atomic import save_figure
from microvae.stages.evaluate import conditioned_sets, evaluate_large

TRAINED = (0.15, 0.25, 0.35)
TARGETS = (0.20, 0.30)


def base_config() -> dict:
    return yaml.safe_load((REPO / "config" / "conv.yaml").read_text())


def source(fraction: float, n_volumes: int, seed: int) -> dict:
    steel = copy.deepcopy(base_config()["sources"][0])
    steel["name"] = f"dp_{round(100 * fraction):03d}"
    steel["synthetic"].update(martensite_fraction=fraction, n_volumes=n_volumes, seed=seed)
    return steel


def mix_config(seed: int, avx2: bool) -> dict:
    config = base_config()
    config["sources"] = [source(f, 4, 1 + 100 * i) for i, f in enumerate(TRAINED)]
    config["train"]["seed"] = seed
    if avx2:
        config["train"]["precision"] = "fp32"
    config["sample"].update(sizes=[256], n_large=64, phase_fractions=list(TARGETS),
                            graded=[0.15, 0.35])
    return config


REFERENCE_VOLUMES = 20
REFERENCE_SPLIT = {"train": 0.2, "val": 0.4, "test": 0.4, "seed": 0}


def reference_path(fraction: float) -> Path:
    return (REPO / "runs" / f"conditioning_reference_{fraction:g}_volumes" / "results" / "dataset"
            / "dataset.h5")


def reference_dataset(fraction: float, env: dict) -> Path:
    """A data set of 20 synthetic volumes made at ``fraction`` (seeds no training volume has),
    8 of them in the test split: each test volume is a block of the floor, so the floor spans
    the differences between independent volumes (8 val volumes are the real held-out set; the
    4 train volumes fit the field baseline)."""
    directory = reference_path(fraction).parents[2]
    config = base_config()
    config["sources"] = [source(fraction, REFERENCE_VOLUMES, 1000 + round(1000 * fraction))]
    config["split"] = dict(REFERENCE_SPLIT)
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                    "--directory", str(directory), "--cores", "2", "--quiet", "rules",
                    "--until", "pack"], check=True, env={**os.environ, **env})
    return reference_path(fraction)


def judged_against(samples: Path, target: float, reference: Path, out: Path) -> dict:
    """The set generated at ``target`` and the model's unconditional sets, as large sets of one
    samples file, judged against the reference data set's real 256 px windows."""
    with h5py.File(samples) as h5, h5py.File(out, "w") as dst:
        dst.attrs.update({"split": "test", "periodic": False, "latent_size": 8})
        sets = {f"conditioned_{target:g}_256": f"conditioned/diffusion_{target:g}_256",
                "unconditioned_diffusion_256": "large/diffusion_256",
                "unconditioned_field_256": "large/field_256"}
        for name, key in sets.items():
            dst[f"large/{name}"] = h5[key][()]
            dst[f"finished/large/{name}"] = h5[f"finished/{key}"][()]
    metrics = evaluate_large(out, reference, out.with_suffix(".json"))
    return {name: {**judged(values), "n_real_windows": values["n_real_windows"],
                   "real_phase_fraction": values["real_phase_fraction"]}
            for name, values in metrics["sets"].items()}


def figure(samples: Path, metrics: dict, out: Path) -> None:
    with h5py.File(samples) as h5:
        examples = {f"{group}_{name}": h5["finished"][group][name][0]
                    for group in ("conditioned", "graded") for name in h5["finished"].get(group, {})}
    save_figure(plots.conditioning_figure(examples, metrics, title=(
        "diffusion prior trained at martensite fractions 0.15, 0.25, 0.35, asked for others")),
        out)


def merged_with_earlier_seeds(runs: dict, args: argparse.Namespace) -> dict:
    """The result file with these seeds' runs added to (or replacing) those of earlier runs of
    the study, each seed with the machine and command that made it."""
    path = REPO / "benchmarks" / "results" / f"conditioning{args.tag}.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    command = "python benchmarks/studies/conditioning.py " + " ".join(sys.argv[1:])
    # each seed keeps the config it was trained with (config/conv.yaml changes between stops)
    configs = {seed: earlier["config"] for seed in earlier.get("runs", {})
               if "config" in earlier}
    configs.update(earlier.get("configs", {}))
    configs.update({s: mix_config(int(s), args.avx2) for s in runs})
    result = {"trained_fractions": TRAINED, "targets": TARGETS, "configs": configs,
              "runs": {**earlier.get("runs", {}), **runs},
              "machines": {**earlier.get("machines", {}), **{s: machine() for s in runs}},
              "commands": {**earlier.get("commands", {}), **{s: command for s in runs}},
              "avx2_only_emulated": {**earlier.get("avx2_only_emulated", {}),
                                     **{s: args.avx2 for s in runs}}}
    result["seeds"] = sorted(int(seed) for seed in result["runs"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--avx2", action="store_true", help="AVX2 kernels only, fp32")
    parser.add_argument("--tag", default="",
                        help="runs in runs/conditioningTAG_{seed}/, conditioningTAG.json")
    args = parser.parse_args()
    env = AVX2_ONLY if args.avx2 else {}
    references = {target: reference_dataset(target, env) for target in TARGETS}
    runs = {}
    for seed in args.seeds:
        directory = REPO / "runs" / f"conditioning{args.tag}_{seed}"
        run_workflow(directory, mix_config(seed, args.avx2), 2, env)
        samples = directory / "results" / "samples" / "latent_8" / "samples.h5"
        run = {"conditioning": conditioned_sets(samples), "against_real": {}}
        for target, reference in references.items():
            run["against_real"][f"{target:g}"] = judged_against(
                samples, target, reference, directory / f"against_{target:g}.h5")
        runs[str(seed)] = run
        if seed == args.seeds[0]:
            figure(samples, run["conditioning"],
                   REPO / "docs" / "figures" / f"conditioning{args.tag}.png")
        for name, values in run["conditioning"].items():
            print(f"seed {seed} {name}: target {values['target']:.3f}, achieved "
                  f"{values['phase_fraction_mean']:.3f} (at 0.5: "
                  f"{values['phase_fraction_at_0.5']:.3f})"
                  + (f", worst band {values['max_band_error']:.3f}"
                     if "max_band_error" in values else ""))
        for target, sets in run["against_real"].items():
            for name, values in sets.items():
                print(f"  real at {target}: {name}: {values['verdict']}; phase fraction "
                      f"{values['phase_fraction']:.3f} (real {values['real_phase_fraction']:.3f})")
    save(f"conditioning{args.tag}", merged_with_earlier_seeds(runs, args))
    print(json.dumps({s: r["conditioning"] for s, r in runs.items()}, indent=1)[:2000])


if __name__ == "__main__":
    main()
