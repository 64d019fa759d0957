"""The sets generated at a target phase fraction judged against a floor that spans independent
volumes: the conditioning study's first reference put one synthetic volume in its test split,
so its floor (4 blocks cut from that one volume) held none of the differences between volumes
made with the same recipe, and its real windows held that one volume's fraction (0.271 at the
recipe's 0.30, where the recipe's volumes average 0.29). The reference of
``conditioning.reference_dataset`` holds 20 volumes made at the target, 8 of them in the test
split: each is a block of the floor, and 8 others are the real held-out set.

Re-judges, without sampling again, every set a run already holds (``against_{target}*.h5`` of
runs of conditioning.py and target_calibration.py), beside the verdict of the one-volume
reference stored next to it. Two controls: the same model asked for 0.25, a fraction of its
training mix (sampled here, 64 images of 256 px, calibration of targets on), against 20 fresh
volumes made at 0.25: whether a failure comes from the unseen fraction or from the generator;
and a real set of the generated sets' size (64 val windows of 256 px, 8 per val volume, evenly
spaced from its first section to its last, where the synthetic volumes thin out: the control's
phase fraction lies below the volumes'), judged like a generator: whether 64 images can pass
this floor at all.

    python benchmarks/studies/conditioning_floor.py --runs runs/conditioning_1 runs/conditioning_2
    python benchmarks/studies/conditioning_floor.py --default-runs runs/large512_0 \
        runs/large_firmfloor_1 runs/large_firmfloor_2
    python benchmarks/studies/conditioning_floor.py --texture-runs runs/conditioning_1 \
        runs/conditioning_2
    python benchmarks/studies/conditioning_floor.py --sweep-runs runs/conditioning_kl0.1_2 \
        runs/conditioning_kl0.1_0 [--weights 0.5 0.75 1.25] [--sweep-tag kl0.1]
    python benchmarks/studies/conditioning_floor.py --schedule-runs runs/conditioning_kl0.1_bf16_0 \
        runs/conditioning_kl0.1_bf16_1 runs/conditioning_kl0.1_bf16_2 [--schedule-from kl0.1]

The second judges the default model's (config/conv.yaml) unconditional sets at 256 and 512 px
against the 20 fresh volumes of its own recipe (0.25) in the same way (large512_0: seed 0 of
large_sizes.py; the others: ``large.py --seeds 1 2 --sizes 256 --tag firmfloor``). The third
chooses ``diffusion.target_texture`` (a constant condition map, or the local pattern of free
draws moved to the target) at the trained fraction 0.25 on this floor, the most descriptors
within it, and reports the held-out targets with the choice once. The fourth chooses the
guidance weight and the texture together on val: every pair asked for each trained fraction
(0.15, 0.25, 0.35: the whole span of the training mix), each against 20 fresh volumes made at
that fraction; the pair with the most descriptors within the floor summed over the trained
fractions and the runs (ties: the smallest median multiple) is taken and reported once at the
held-out targets (section ``sweep``, keyed by ``--sweep-tag``). The fifth tries a guidance
weight that rises with the target, fixed on val before any held-out draw: at each trained
fraction the weight that passed most descriptors there in the saved sweep ``--schedule-from``
(texture on, summed over its runs; ties: the smallest median multiple), linear in between; each
run asked for each held-out target with the scheduled weight and with the chosen constant one
(section ``schedule``, keyed by the sweep's tag). Section ``graded_schedule``: the graded map
0.15 -> 0.35 drawn with that schedule as one weight per cell and with the constant weight, made
by ``--graded-runs`` at commit 094192e (a weight per cell met the map worse, so the workflow
keeps the constant weight for maps and the option was taken out).

Writes benchmarks/results/conditioning_floor.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from conditioning import TARGETS, judged_against, reference_dataset

from machine import REPO, judged, machine, save
from microvae import cli
from microvae.diffusion import DiffusionConfig
from microvae.modelfile import load_model
from microvae.sample import encode, reconstruct
from microvae.stages import real_test_windows
from microvae.stages.evaluate import evaluate_large

TRAINED_CONTROL = 0.25
TRAINED = (0.15, 0.25, 0.35)
N_IMAGES = 64
# the sets of the workflow run (calibration of the first design) and of target_calibration.py's
# default (one feedback step)
VARIANTS = ("", "_one_step")


def volume_fractions(dataset: Path) -> dict:
    """Per split: the martensite fraction of each volume (mean over its tiles)."""
    out = {}
    with h5py.File(dataset) as h5:
        for split in ("train", "val", "test"):
            tiles, origin = h5[split][()], h5[f"{split}_origin"][()]
            volumes = np.unique(origin[:, 1])
            out[split] = [round(float(tiles[origin[:, 1] == v].mean()), 4) for v in volumes]
    return out


def sample_run(run: Path, out: Path, target: float, *options: str) -> None:
    """The run's model and prior asked for ``target``: 64 images of 256 px into ``out`` (kept:
    a later call reuses it), with ``options`` of ``microvae sample``."""
    if out.exists():
        return
    code = cli.main(["sample", "--model", str(model_of(run)), "--diffusion",
                     str(model_of(run).with_name("diffusion.pt")), "--dataset",
                     str(run / "results" / "dataset" / "dataset.h5"), "--sizes", "256",
                     "--n-large", str(N_IMAGES), "--phase-fractions", f"{target:g}", *options,
                     "--out", str(out)])
    if code:
        raise SystemExit(code)


def sampled_at(run: Path, target: float, reference: Path) -> Path:
    """The run's model and prior asked for ``target`` (with the unconditional sets beside)."""
    samples = run / f"sampled_{target:g}.h5"
    sample_run(run, samples, target, "--mode", "diffusion", "field")
    judged_against(samples, target, reference, run / f"against_{target:g}.h5")
    return samples


def spaced_windows(dataset: Path, split: str, n: int = N_IMAGES, size: int = 256) -> np.ndarray:
    """``n`` real windows of ``size`` px of a split, as many per volume, evenly spaced from
    its first section to its last."""
    _, windows, placement = real_test_windows(dataset, size, split)
    groups = placement["group"]
    picked = np.concatenate([np.flatnonzero(groups == g)[np.linspace(
        0, np.count_nonzero(groups == g) - 1, n // len(np.unique(groups))).astype(int)]
        for g in np.unique(groups)])
    return windows[picked]


def with_real_control(samples: Path, reference: Path, model_path: Path | None = None) -> Path:
    """A copy of a judged file with 64 real val windows added as one more large set, and (given
    the model) their reconstructions from the posterior mean, cut at 0.5: what the decoder
    makes of real images, a ceiling for any prior of its latent grid."""
    real = spaced_windows(reference, "val")
    out = samples.with_name(f"{samples.stem}_with_real.h5")
    shutil.copy(samples, out)
    with h5py.File(out, "a") as h5:
        h5["large/real_val_64_256"] = real
        if model_path is not None:
            model, _ = load_model(model_path)
            images = real.astype(np.float32)
            with torch.no_grad():
                z_mean, _ = encode(model, images)
                h5["large/reconstructed_val_64_256"] = reconstruct(model, images, z_mean)[0]
    return out


def rejudged(run: Path, target: float, reference: Path) -> dict:
    out = {}
    for suffix in VARIANTS:
        samples = run / f"against_{target:g}{suffix}.h5"
        if not samples.exists():
            continue
        variant = samples.stem.removeprefix(f"against_{target:g}").lstrip("_") or "workflow"
        metrics = evaluate_large(with_real_control(samples, reference, model_of(run)),
                                 reference, run / f"{samples.stem}_volumes.json")
        earlier = samples.with_suffix(".json")
        one_volume = (json.loads(earlier.read_text())["sets"]
                      if target != TRAINED_CONTROL and earlier.exists() else {})
        out[variant] = {
            name: {**judged(values), "n_real_windows": values["n_real_windows"],
                   "real_phase_fraction": values["real_phase_fraction"],
                   **({"one_volume_reference": judged(one_volume[name])}
                      if name in one_volume else {})}
            for name, values in metrics["sets"].items()}
        out[variant]["reference"] = metrics["reference"]
        for name in (f"conditioned_{target:g}_256", "real_val_64_256",
                     "reconstructed_val_64_256"):
            values = out[variant][name]
            print(f"{run.name} {variant} at {target:g}: {name}: {values['verdict']}"
                  + (f" (one volume: {values['one_volume_reference']['verdict']})"
                     if "one_volume_reference" in values else "")
                  + f"; failed {values['failed']}", flush=True)
    return out


def guided(run: Path, target: float, weight: float, reference: Path,
           texture: bool = False) -> dict:
    """The run's prior asked for ``target`` at guidance ``weight`` (64 images of 256 px, the
    calibration of targets on), with or without ``diffusion.target_texture``, against the fresh
    volumes made at ``target``, with the real and reconstructed controls."""
    tag = f"{target:g}_w{weight:g}" + ("_texture" if texture else "")
    samples = run / f"guided_{tag}.h5"
    sample_run(run, samples, target, "--mode", "diffusion", "--guidance", f"{weight:g}",
               "--target-texture" if texture else "--no-target-texture")
    judged_file = run / f"guided_{tag}_judged.h5"
    verdict = judged_file.with_suffix(".json")
    if verdict.exists() and verdict.stat().st_mtime > samples.stat().st_mtime:
        metrics = json.loads(verdict.read_text())  # judged by an earlier, interrupted call
    else:
        with h5py.File(samples) as h5, h5py.File(judged_file, "w") as dst:
            dst.attrs.update({"split": "test", "periodic": False, "latent_size": 8})
            name = f"conditioned_{target:g}_256"
            dst[f"large/{name}"] = h5[f"conditioned/diffusion_{target:g}_256"][()]
            dst[f"finished/large/{name}"] = h5[
                f"finished/conditioned/diffusion_{target:g}_256"][()]
        metrics = evaluate_large(with_real_control(judged_file, reference, model_of(run)),
                                 reference, verdict)
    out = {name: {**judged(values), "real_phase_fraction": values["real_phase_fraction"]}
           for name, values in metrics["sets"].items()}
    print(f"{run.name} w {weight:g} at {target:g}: "
          f"{out[f'conditioned_{target:g}_256']['verdict']}; failed "
          f"{out[f'conditioned_{target:g}_256']['failed']}; phase fraction "
          f"{out[f'conditioned_{target:g}_256']['phase_fraction']:.4f}", flush=True)
    return out


def chosen_variant(by_weight: dict, target: float) -> str:
    """The weight (or variant) whose set at ``target`` passes most descriptors, ties broken by
    the smallest median multiple of the floor over the judged descriptors."""
    def score(item):
        values = item[1][f"conditioned_{target:g}_256"]
        return (-values["n_within"], float(np.median(judged_multiples(values))))
    return min(by_weight.items(), key=score)[0]


def judged_multiples(values: dict) -> list[float]:
    """A set's multiples of the floor on the judged descriptors (the phase fraction, met by
    the calibration of targets, left out)."""
    return [m for k, m in values["floor_multiple"].items() if k != "phase_fraction"]


def model_of(run: Path) -> Path:
    return run / "results" / "models" / "latent_8" / "model.pt"


def default_judged(run: Path, reference: Path) -> dict:
    """A run of config/conv.yaml's model (whose synthetic steel is made at 0.25): its large
    sets (``large/{mode}_{size}``; of large_sizes.py's file where the run has one, else of the
    workflow's samples) against the 20 fresh volumes of that recipe."""
    samples = run / "sizes_256_512.h5"
    if not samples.exists():
        samples = run / "results" / "samples" / "latent_8" / "samples.h5"
    metrics = evaluate_large(with_real_control(samples, reference, model_of(run)), reference,
                             run / f"{samples.stem}_volumes.json")
    out = {name: {**judged(values), "n_real_windows": values["n_real_windows"],
                  "real_phase_fraction": values["real_phase_fraction"]}
           for name, values in metrics["sets"].items()}
    for name, values in out.items():
        print(f"{run.name}: {name}: {values['verdict']}; failed {values['failed']}", flush=True)
    return {**out, "samples": str(samples.relative_to(run)), "reference": metrics["reference"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="*", default=[],
                        help="runs of conditioning.py (with target_calibration.py's sets)")
    parser.add_argument("--texture-runs", type=Path, nargs="*", default=[],
                        help="runs of conditioning.py on which diffusion.target_texture is "
                             "chosen at the trained fraction 0.25 (then reported at the "
                             "held-out targets)")
    parser.add_argument("--default-runs", type=Path, nargs="*", default=[],
                        help="runs of config/conv.yaml's model with large sets")
    parser.add_argument("--sweep-runs", type=Path, nargs="*", default=[],
                        help="runs of conditioning.py on which the guidance weight and "
                             "diffusion.target_texture are chosen together at the trained "
                             "fractions (then reported at the held-out targets)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.75, 1.25],
                        help="guidance weights of the sweep")
    parser.add_argument("--sweep-tag", default="default",
                        help="the sweep's key in the result's section 'sweep'")
    parser.add_argument("--schedule-runs", type=Path, nargs="*", default=[],
                        help="runs of conditioning.py asked for the held-out targets with the "
                             "weight schedule of the saved sweep --schedule-from")
    parser.add_argument("--schedule-from", default="kl0.1",
                        help="the saved sweep (its tag) whose val sets fix the schedule")
    args = parser.parse_args()
    controls = args.runs or args.texture_runs or args.default_runs or args.sweep_runs
    references = {target: reference_dataset(target, {})  # the schedule needs the targets only
                  for target in (*TARGETS, *((TRAINED_CONTROL,) if controls else ()))}
    if args.sweep_runs:
        references.update({t: reference_dataset(t, {}) for t in TRAINED})
    for run in args.runs:
        sampled_at(run, TRAINED_CONTROL, references[TRAINED_CONTROL])
    command = "python benchmarks/studies/conditioning_floor.py " + " ".join(sys.argv[1:])
    fractions = {f"{t:g}": {"volume_fractions": volume_fractions(path)}
                 for t, path in references.items()}
    runs = {run.name: {f"{t:g}": rejudged(run, t, path) for t, path in references.items()}
            for run in args.runs}
    saved(command, fractions, runs=runs)
    default = {run.name: default_judged(run, references[TRAINED_CONTROL])
               for run in args.default_runs}
    saved(command, fractions, default=default)
    if args.texture_runs:
        variants = {"constant": False, "texture": True}
        weight = float(DiffusionConfig.guidance)
        texture = {"guidance": weight, "at_trained": {
            run.name: {name: guided(run, TRAINED_CONTROL, weight, references[TRAINED_CONTROL],
                                    textured) for name, textured in variants.items()}
            for run in args.texture_runs}}
        texture["chosen_per_run"] = {run: chosen_variant(sets, TRAINED_CONTROL)
                                     for run, sets in texture["at_trained"].items()}
        # one choice for all runs: the variant chosen on most of them (the first on a tie)
        votes = list(texture["chosen_per_run"].values())
        texture["chosen"] = max(variants, key=votes.count)
        texture["held_out"] = {}
        saved(command, fractions, texture=texture)
        for run in args.texture_runs:  # saved after each run: the held-out sets are slow
            texture["held_out"][run.name] = {
                f"{t:g}": guided(run, t, weight, references[t], variants[texture["chosen"]])
                for t in TARGETS}
            saved(command, fractions, texture=texture)
    if args.sweep_runs:
        swept(args.sweep_runs, args.weights, references,  # saved as it goes
              lambda entry: saved(command, fractions, sweep={args.sweep_tag: entry}))
    if args.schedule_runs:
        path = REPO / "benchmarks" / "results" / "conditioning_floor.json"
        sweep = json.loads(path.read_text())["sweep"][args.schedule_from]
        scheduled(args.schedule_runs, sweep, references,  # saved as it goes
                  lambda entry: saved(command, fractions, schedule={args.schedule_from: entry}))


def pair_name(weight: float, texture: bool) -> str:
    return f"w{weight:g}_" + ("texture" if texture else "constant")


def sweep_score(sets_by_run_and_fraction: list[dict], name: str) -> tuple[int, float]:
    """Descriptors within the floor summed over runs and trained fractions (negated, to be
    minimised) and the median multiple of the floor over all judged descriptors."""
    within, multiples = 0, []
    for sets in sets_by_run_and_fraction:
        values = sets[name]
        within += values["n_within"]
        multiples += judged_multiples(values)
    return -within, float(np.median(multiples))


def swept(runs: list[Path], weights: list[float], references: dict, checkpoint) -> dict:
    """Each (guidance weight, texture) pair at each trained fraction on each run; the pair with
    the best ``sweep_score`` reported at the held-out targets."""
    pairs = {pair_name(w, t): (w, t) for w in weights for t in (True, False)}
    entry: dict = {"weights": weights, "val_fractions": TRAINED, "at_trained": {}}
    for run in runs:
        entry["at_trained"][run.name] = {
            f"{f:g}": {name: guided(run, f, w, references[f], t)[f"conditioned_{f:g}_256"]
                       for name, (w, t) in pairs.items()} for f in TRAINED}
        checkpoint(entry)
    scores = {name: sweep_score([sets for run in entry["at_trained"].values()
                                 for sets in run.values()], name) for name in pairs}
    entry["val_score"] = {name: {"n_within": -s[0], "median_multiple": s[1]}
                          for name, s in scores.items()}
    entry["chosen"] = min(scores, key=scores.get)
    weight, texture = pairs[entry["chosen"]]
    print(f"chosen on val: {entry['chosen']} ({entry['val_score'][entry['chosen']]})", flush=True)
    entry["held_out"] = {}
    for run in runs:
        entry["held_out"][run.name] = {f"{t:g}": guided(run, t, weight, references[t], texture)
                                       for t in TARGETS}
        checkpoint(entry)
    return entry


def weight_schedule(sweep: dict) -> dict[str, float]:
    """The guidance weight at each trained fraction of a saved sweep: the weight (texture on)
    whose sets there pass most descriptors summed over the sweep's runs, ties broken by the
    smallest median multiple."""
    schedule = {}
    for fraction in (f"{f:g}" for f in sweep["val_fractions"]):
        sets = [run[fraction] for run in sweep["at_trained"].values()]
        scores = {w: sweep_score(sets, pair_name(w, True)) for w in sweep["weights"]}
        schedule[fraction] = float(min(scores, key=scores.get))
    return schedule


def scheduled_weight(schedule: dict[str, float], target: float) -> float:
    """The schedule's weight at ``target``: linear between trained fractions, constant
    beyond them."""
    fractions = sorted(schedule, key=float)
    return float(np.interp(target, [float(f) for f in fractions],
                           [schedule[f] for f in fractions]))


def scheduled(runs: list[Path], sweep: dict, references: dict, checkpoint) -> dict:
    """Each run asked for each held-out target with the schedule's weight and with the sweep's
    chosen constant weight (texture on for both), judged against the volumes made there."""
    schedule = weight_schedule(sweep)
    constant = float(sweep["chosen"].removeprefix("w").split("_")[0])
    entry: dict = {"weights_at_trained": schedule, "constant": constant,
                   "weights_at_targets": {f"{t:g}": scheduled_weight(schedule, t)
                                          for t in TARGETS}, "held_out": {},
                    "machine": machine()}  # the file's own "machine" is its last writer's
    print(f"schedule {schedule}: at the targets {entry['weights_at_targets']}", flush=True)
    for run in runs:
        entry["held_out"][run.name] = {f"{t:g}": {
            name: guided(run, t, weight, references[t], True)
            for name, weight in (("constant", constant),
                                 ("scheduled", scheduled_weight(schedule, t)))}
            for t in TARGETS}
        checkpoint(entry)
    return entry


def saved(command: str, fractions: dict, **sections: dict) -> None:
    """The result file with these sections' entries added (read afresh: runs of the study
    with other options may write it meanwhile)."""
    path = REPO / "benchmarks" / "results" / "conditioning_floor.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.pop("machine", None)
    if command not in result.setdefault("commands", []):
        result["commands"].append(command)
    result["references"] = fractions
    for key, entries in sections.items():
        if entries:
            result.setdefault(key, {}).update(entries)
    save("conditioning_floor", result)

if __name__ == "__main__":
    main()
