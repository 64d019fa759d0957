"""What drawing random crops on the fly costs a training step: the step on a batch of fixed tiles
(indexed from the tile tensor, as `train.crops: false` does) against the step on a batch of
fresh random crops with dihedral transforms (`train.crops: true`, `train.augment: dihedral`),
interleaved in one run, with the project's runtime (precision 'auto', channels_last, fused Adam).
Also times the crop draw alone.

    python benchmarks/speed/crop_overhead.py [--sizes 32 64 128] [--batch 32] [--steps 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save
from microvae.crops import CropSampler
from microvae.dataset import training_regions
from microvae.device import select_runtime
from microvae.synthetic import SteelParameters, synthesize_volume
from microvae.train import TrainConfig, prepare, to_layout, train_step


def regions_and_tiles(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sections of a synthetic steel volume (true phase), as tiles and as regions."""
    params = SteelParameters(shape=(8, 4 * size, 4 * size))
    phase = synthesize_volume(params, seed=0)[1].astype(np.uint8)
    tiles, origin = [], []
    for z in range(phase.shape[0]):
        for y in range(0, phase.shape[1], size):
            for x in range(0, phase.shape[2], size):
                tiles.append(phase[z, y:y + size, x:x + size])
                origin.append((0, 0, 0, z, y, x))
    tiles = np.stack(tiles)
    regions, mask, _ = training_regions(tiles, np.array(origin))
    return tiles, regions, mask


def time_steps(size: int, batch: int, steps: int, runtime) -> tuple[dict[str, float], int, int]:
    """Median seconds of a step on fixed tiles, of a step on fresh crops, and of the draw."""
    tiles, regions, mask = regions_and_tiles(size)
    training = prepare(tiles, tiles[:64], 12, TrainConfig(batch_size=batch, crops=False), runtime)
    sampler = CropSampler(torch.from_numpy(regions), mask, size, "dihedral")
    generator = torch.Generator().manual_seed(0)
    eps = torch.randn(batch, 12, generator=generator)

    def tile_batch():
        index = torch.randperm(len(training.x_train), generator=generator)[:batch]
        return training.x_train[index]

    def crop_batch():
        return to_layout(sampler.sample(batch, generator), runtime)

    timings: dict[str, list[float]] = {"tiles": [], "crops": [], "draw": []}
    for step in range(steps + 5):
        for name, make in (("tiles", tile_batch), ("crops", crop_batch)):
            started = time.perf_counter()
            xb = make()
            drawn = time.perf_counter()
            train_step(training.model, training.optimizer, xb, eps, 0.1, runtime)
            if step >= 5:  # warm-up
                timings[name].append(time.perf_counter() - started)
                if name == "crops":
                    timings["draw"].append(drawn - started)
    return ({k: statistics.median(v) for k, v in timings.items()}, sampler.n_windows,
            len(tiles))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    runtime = select_runtime("cpu", "auto", True, args.threads)
    results = {}
    for size in args.sizes:
        medians, windows, n_tiles = time_steps(size, args.batch, args.steps, runtime)
        overhead = medians["crops"] / medians["tiles"] - 1
        results[size] = {"step_ms_tiles": 1e3 * medians["tiles"],
                         "step_ms_crops": 1e3 * medians["crops"],
                         "draw_ms": 1e3 * medians["draw"], "overhead": overhead,
                         "windows": windows, "tiles": n_tiles}
        print(f"{size} px, batch {args.batch}: step {1e3 * medians['tiles']:.2f} ms on fixed "
              f"tiles, {1e3 * medians['crops']:.2f} ms on random dihedral crops "
              f"({100 * overhead:+.1f}%); the draw alone {1e3 * medians['draw']:.3f} ms; "
              f"{windows} windows vs {n_tiles} tiles", flush=True)
    save("crop_overhead", {"batch": args.batch, "steps": args.steps, "threads": args.threads,
                           "results": results})


if __name__ == "__main__":
    main()
