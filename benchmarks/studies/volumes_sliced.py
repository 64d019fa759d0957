"""A 3-D generator learned from 2-D sections along one axis only
(``microvae.slice_generator``), judged section by section along each axis against the floor
of independent real volumes, beside the descriptor-based reconstruction from the same sections
(volumes_from_sections.py: the baseline a learned route must beat), blurred noise and real
held-out volumes.

Real data and judge as volumes_from_sections.py (the same synthetic volumes, windows, sections
and judge; the generated sets are judged one by one against the same floor, so the rows of
both result files compare): the generator sees the xy sections of the 4 train volumes (every
4th), taken as isotropic. Per seed one generator is trained (``--steps`` steps on volumes of
64^3 drawn by itself; the step count, not a time limit, bounds it, so that a busy machine
changes the time and not the result) and draws one periodic volume of 128^3; ``--gram-weight
0`` trains on the plane statistics alone (the reconstruction's loss, amortised), an ablation
of the Gram term. The time and peak memory of one 256^3 volume are measured in a fresh process.

    python benchmarks/studies/volumes_sliced.py --seeds 0 1 2 [--gram-weight 1] [--steps 1000] \
        [--levels 3]

Writes benchmarks/results/volumes_sliced.json (one part per setting, keyed
``gram{w}_levels{L}``) and
keeps each generator and volume under runs/volumes_sliced/ (a run reuses them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from volumes_from_sections import (
    SEEDS,
    SEEN_AXIS,
    SIDE,
    SPACING,
    TARGET_SPACING,
    WINDOW,
    fitted_blur,
    judged_by_axis,
    real_volumes,
)

from machine import REPO, save
from microvae.reconstruct3d import plane_statistics
from microvae.slice_generator import (
    SliceGenerator,
    SliceGeneratorSettings,
    generate_sliced_volume,
    train_slice_generator,
)
from microvae.volumes import blurred_noise, sections, volume_descriptors

OUT = REPO / "runs" / "volumes_sliced"
BIG = 256


def trained(path: Path, target, seen: np.ndarray, settings: SliceGeneratorSettings):
    """The generator of ``settings`` (kept at ``path``; reused where it exists), its history
    summary and its training seconds."""
    if path.exists():
        saved = torch.load(path, weights_only=False)
        model = SliceGenerator(**saved["config"])
        model.load_state_dict(saved["state"])
        return model.eval(), saved["summary"]
    run = train_slice_generator(target, seen, settings)
    history = run.history
    summary = {"steps": len(history), "seconds": round(run.seconds, 1),
               "seconds_per_step": round(run.seconds / len(history), 3),
               "threads": torch.get_num_threads(),
               "first_loss": float(np.mean([h["loss"] for h in history[:20]])),
               "last_loss": float(np.mean([h["loss"] for h in history[-20:]])),
               "last_statistics": float(np.mean([h["statistics"] for h in history[-20:]])),
               "last_gram": float(np.mean([h["gram"] for h in history[-20:]])),
               "last_phase_fraction": float(np.mean([h["phase_fraction"]
                                                     for h in history[-20:]]))}
    torch.save({"config": run.model.config, "state": run.model.state_dict(),
                "summary": summary, "settings": asdict(settings)}, path)
    return run.model, summary


BIG_VOLUME = """
import json, resource, sys, time, torch
from microvae.slice_generator import SliceGenerator, generate_sliced_volume
torch.set_num_threads(int(sys.argv[3]))
saved = torch.load(sys.argv[1], weights_only=False)
model = SliceGenerator(**saved["config"]).eval()
model.load_state_dict(saved["state"])
side = int(sys.argv[2])
start = time.perf_counter()
volume = generate_sliced_volume(model, (side,) * 3, torch.Generator().manual_seed(0))
seconds = time.perf_counter() - start
print(json.dumps({"side": side, "seconds": round(seconds, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "phase_fraction": float(volume.mean())}))
"""


def big_volume(path: Path, threads: int) -> dict:
    """Time and peak memory of one 256^3 volume in a fresh process."""
    out = subprocess.run([sys.executable, "-c", BIG_VOLUME, str(path), str(BIG), str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gram-weight", type=float, default=SliceGeneratorSettings.gram_weight)
    parser.add_argument("--steps", type=int, default=SliceGeneratorSettings.steps)
    parser.add_argument("--levels", type=int, default=SliceGeneratorSettings.levels,
                        help="the noise at 1 / 2^levels of the side (2: a receptive field of "
                             "about 28 voxels, 3: about 60)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    real = real_volumes()
    seen = np.concatenate([sections(v, SEEN_AXIS, TARGET_SPACING) for v in real["train"]])
    target = plane_statistics(seen, isotropic=True)
    blur = fitted_blur(target, SIDE, np.random.default_rng(0))
    tag = f"gram{args.gram_weight:g}_levels{args.levels}"
    sets, training, big = {}, {}, {}
    for seed in args.seeds:
        settings = replace(SliceGeneratorSettings(), steps=args.steps, max_minutes=None,
                           gram_weight=args.gram_weight, levels=args.levels, seed=seed)
        path = OUT / f"{tag}_steps{args.steps}_seed{seed}.pt"
        model, training[seed] = trained(path, target, seen, settings)
        print(f"{tag} seed {seed}: {training[seed]}", flush=True)
        start = time.perf_counter()
        volume = generate_sliced_volume(model, (SIDE,) * 3,
                                        torch.Generator().manual_seed(1000 + seed))
        training[seed]["seconds_128"] = round(time.perf_counter() - start, 2)
        np.save(OUT / f"{tag}_steps{args.steps}_seed{seed}_volume.npy", volume)
        sets[f"learned_seed{seed}"] = ([volume], "generator")
        sets[f"blurred_noise_seed{seed}"] = ([blurred_noise(
            (SIDE,) * 3, blur, target.phase_fraction, np.random.default_rng(seed))], "baseline")
        big[seed] = big_volume(path, args.threads)
        print(f"{tag} seed {seed}: 256^3 {big[seed]}", flush=True)
    for index, volume in enumerate(real["heldout"]):
        sets[f"real_heldout_{index}"] = ([volume], "ceiling")
    descriptors_3d = {name: [volume_descriptors(v) for v in volumes]
                      for name, (volumes, _) in sets.items()}
    descriptors_3d["real_test"] = [volume_descriptors(v) for v in real["test"]]
    path = REPO / "benchmarks" / "results" / "volumes_sliced.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.pop("machine", None)
    result[tag] = {
        "command": "python benchmarks/studies/volumes_sliced.py --seeds "
                   + " ".join(map(str, args.seeds))
                   + f" --gram-weight {args.gram_weight:g} --steps {args.steps}"
                   + f" --levels {args.levels}",
        "settings": asdict(replace(SliceGeneratorSettings(), steps=args.steps, max_minutes=None,
                                   gram_weight=args.gram_weight, levels=args.levels)),
        "side": SIDE, "window": WINDOW, "section_spacing": SPACING, "seen_axis": SEEN_AXIS,
        "volume_seeds": {k: list(v) for k, v in SEEDS.items()}, "blurred_noise_blur": blur,
        "training": training, "volume_256": big,
        "by_axis": judged_by_axis(real["test"], sets, WINDOW, SPACING),
        "volume_descriptors": descriptors_3d}
    save("volumes_sliced", result)


if __name__ == "__main__":
    main()
