"""3-D volumes at a chosen phase fraction: the conv3d models of ``volumes_learned.py`` (trained on
the default recipe, martensite fraction 0.25) asked for fractions they were never trained at,
judged against real synthetic volumes made at that fraction.

Per training seed and target (0.20, 0.30): 4 periodic 128^3 volumes with the target as the
diffusion prior's condition (``raw``) and 4 with the condition calibrated by one feedback step
on 8 volumes of 128^3 of their own (``calibrated``, ``volume_vae.target_condition``, what
``microvae volume --phase-fraction`` does); all cut at 0.5, no threshold that forces the
fraction; each set of 4 judged together. Real references per target: the default recipe at
that martensite fraction as cubes of 128^3, 8 test volumes (the blocks of the floor) and 2 held
out (the real ceiling, each judged alone); the trivial baseline: blurred white noise cut at the
target (the blur of volumes_learned.py). Sections every 16 voxels, windows of 64 px, judged per axis
(``microvae.volumes.judge_sections``).

    python benchmarks/studies/volumes_targets.py --seeds 0 1 2

Needs the models under runs/volumes_learned/ (trains them, about 14 minutes per seed, where
absent). Writes benchmarks/results/volumes_targets.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from volumes_from_sections import SPACING, WINDOW, judged_by_axis, study_start
from volumes_learned import SIDE, diffusion_prior, real_volumes, trained

from machine import save
from microvae.synthetic import SteelParameters, synthesize_volume
from microvae.volume_vae import generate_volumes, target_condition
from microvae.volumes import blurred_noise

TARGETS = (0.20, 0.30)
VOLUMES = 4  # per seed, target and set
REFERENCE_SEEDS = {"test": range(5100, 5108), "heldout": range(5200, 5202)}
BLUR = 5.0  # voxels: volumes_learned.json, synthetic, blurred_noise_blur


def references(target: float) -> dict[str, list[np.ndarray]]:
    params = SteelParameters(shape=(SIDE,) * 3, martensite_fraction=target)
    return {split: [synthesize_volume(params, seed)[1] for seed in seeds]
            for split, seeds in REFERENCE_SEEDS.items()}


def main() -> None:
    args, result, command = study_start("volumes_targets", __doc__.splitlines()[0])
    train = real_volumes()["train"]
    priors = {}
    for seed in args.seeds:
        model, record = trained(train, seed)
        priors[seed] = (model.float(), diffusion_prior(model, train, seed, record))
    result.update(command=command, targets=list(TARGETS), side=SIDE, window=WINDOW,
                  section_spacing=SPACING, reference_seeds={k: list(v) for k, v in
                                                            REFERENCE_SEEDS.items()},
                  blurred_noise_blur=BLUR, by_target={})
    for target in TARGETS:
        real = references(target)
        sets: dict[str, tuple[list[np.ndarray], str]] = {}
        reached = {}
        for seed, (model, prior) in priors.items():
            start = time.perf_counter()
            condition = target_condition(model, prior, target, (SIDE,) * 3,
                                         torch.Generator().manual_seed(4000 + seed), True)
            calibration_seconds = time.perf_counter() - start
            for name, asked in (("raw", target), ("calibrated", condition)):
                volumes = generate_volumes(model, prior, VOLUMES, (SIDE,) * 3,
                                           torch.Generator().manual_seed(3000 + seed), True,
                                           condition=asked)
                sets[f"conv3d_diffusion_{name}_seed{seed}"] = (volumes, "generator")
                fractions = [float(v.mean()) for v in volumes]
                reached[f"{name}_seed{seed}"] = {"condition": round(float(asked), 4),
                                                 "phase_fraction": float(np.mean(fractions)),
                                                 "phase_fractions": fractions}
            reached[f"calibrated_seed{seed}"]["calibration_seconds"] = round(
                calibration_seconds, 1)
            print(f"target {target}, seed {seed}: " + ", ".join(
                f"{name} condition {reached[f'{name}_seed{seed}']['condition']:.4f} -> "
                f"{reached[f'{name}_seed{seed}']['phase_fraction']:.4f}"
                for name in ("raw", "calibrated")), flush=True)
        for seed in args.seeds:
            sets[f"blurred_noise_seed{seed}"] = ([blurred_noise(
                (SIDE,) * 3, BLUR, target, np.random.default_rng(seed))], "baseline")
        for index, volume in enumerate(real["heldout"]):
            sets[f"real_heldout_{index}"] = ([volume], "ceiling")
        result["by_target"][str(target)] = {
            "real_test_phase_fractions": [float(v.mean()) for v in real["test"]],
            "real_heldout_phase_fractions": [float(v.mean()) for v in real["heldout"]],
            "reached": reached,
            "by_axis": judged_by_axis(real["test"], sets, WINDOW, SPACING)}
    save("volumes_targets", result)


if __name__ == "__main__":
    main()
