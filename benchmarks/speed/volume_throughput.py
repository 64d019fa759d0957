"""Speed and memory of the conv3d model (issue 24): a training step on 32^3 crops (batch 8), a
training step of the 3-D diffusion prior (crops of 8^3 cells, batch 16), and the generation of
one periodic 256^3 volume (a draw of the diffusion prior, 25 DDIM steps, or of the field prior
over a 32^3 latent grid, decoded in slabs, cut at 0.5), with the channels of ``CHANNELS_3D``
and, natively, with the 2-D model's full channels for the record; natively and held to AVX2
kernels (the slower CPU kind, emulated: ``machine.AVX2_ONLY``). Weights are untrained: the
work does not depend on their values. Every measurement runs in a fresh process (its own peak
resident memory, its own instruction set); the rounds interleave the variants.

    python benchmarks/speed/volume_throughput.py [--rounds 2] [--threads 2] [--only VARIANT ...]
        [--tag _NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import AVX2_ONLY, save

TRAIN_STEPS, WARMUP_STEPS = 6, 2


def build(channels: str):
    import microvae.model as model_module
    from microvae.model import ConvVAE3d, initialize

    if channels == "full":  # the 2-D model's channels, for the record
        model_module.CHANNELS_3D, model_module.DENSE_3D = model_module.CHANNELS, \
            model_module.DENSE
    import torch

    torch.manual_seed(0)
    return initialize(ConvVAE3d(32, 8))


def child(task: str, channels: str, precision: str, side: int, slab: int) -> dict:
    import numpy as np
    import torch

    from microvae.device import select_runtime
    from microvae.field import fit_field
    from microvae.volume_vae import (
        VolumeTrainSettings,
        generate_volumes,
        train_volume_vae,
        volume_diffusion_config,
    )

    model = build(channels)
    if task == "train":
        runtime = select_runtime("cpu", precision)
        rng = np.random.default_rng(0)
        volumes = [(rng.random((64, 64, 64)) > 0.75).astype(np.uint8)]
        times = []
        generator = torch.Generator().manual_seed(0)
        settings = VolumeTrainSettings(steps=WARMUP_STEPS + TRAIN_STEPS)
        train_volume_vae(volumes, settings, generator, runtime, log_every=1,
                         on_log=lambda row: times.append(row["seconds"]))
        per_step = (times[-1] - times[WARMUP_STEPS - 1]) / TRAIN_STEPS
        return {"seconds_per_step": round(per_step, 4), "crops_per_second": round(8 / per_step, 1)}
    generator = torch.Generator().manual_seed(0)
    if task == "diffusion_train":
        from microvae.diffusion import fit_diffusion

        grids = torch.randn((4, 8, 12, 12, 12), generator=generator)
        conditions = torch.rand((4, 12, 12, 12), generator=generator)
        cfg = volume_diffusion_config(max_steps=WARMUP_STEPS + 4 * TRAIN_STEPS,
                                      max_minutes=None)
        prior = fit_diffusion(grids, conditions, cfg, 0.25)
        seconds = [row["seconds"] for row in prior.history]
        per_step = (seconds[-1] - seconds[WARMUP_STEPS - 1]) / (4 * TRAIN_STEPS)
        return {"seconds_per_step": round(per_step, 4)}
    if task.startswith("generate_diffusion"):
        from torch import nn

        import microvae.diffusion as diffusion_module
        from microvae.diffusion import Denoiser, DiffusionPrior

        if task.endswith("_stock"):  # before: PyTorch's own choice of kernel for one grid
            diffusion_module.CONVOLUTIONS[3] = nn.Conv3d
        torch.manual_seed(0)
        prior = DiffusionPrior(Denoiser(8, 32, dims=3).eval(), torch.zeros(8), torch.ones(8),
                               [], 0.25, (0.0, 1.0), None, 8)
    else:
        prior = fit_field(np.random.default_rng(0).standard_normal((2, 8, 16, 16, 16)))
    start = time.perf_counter()
    volume = generate_volumes(model, prior, 1, (side,) * 3, generator, periodic=True,
                              slab_cells=slab)[0]
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "shape": list(volume.shape),
            "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_child(args: list[str], avx2: bool, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **(AVX2_ONLY if avx2 else {})}
    done = subprocess.run([sys.executable, __file__, "--child", *args], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--slab", type=int, default=4, help="latent cells per decoded slab")
    parser.add_argument("--only", nargs="+", default=None,
                        help="run only these variants (ISA/TASK/CHANNELS/PRECISION); the result "
                             "goes to volume_throughput_only.json")
    parser.add_argument("--tag", default="", help="result file volume_throughput[_only]TAG.json")
    parser.add_argument("--child", nargs=5, metavar=("TASK", "CHANNELS", "PRECISION", "SIDE",
                                                     "SLAB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        task, channels, precision, side, slab = args.child
        print(json.dumps(child(task, channels, precision, int(side), int(slab))))
        return
    from microvae.device import cpu_has_fast_bf16

    variants = []
    for isa in ("native", "avx2_emulated"):
        precisions = ["fp32"] + (["bf16"] if isa == "native" and cpu_has_fast_bf16() else [])
        for channels in ("half", "full") if isa == "native" else ("half",):
            for precision in precisions:
                variants.append((isa, "train", channels, precision))
            variants.append((isa, "generate_field", channels, "fp32"))
        variants.append((isa, "generate_diffusion", "half", "fp32"))
        variants.append((isa, "generate_diffusion_stock", "half", "fp32"))
        variants.append((isa, "diffusion_train", "half", "fp32"))
    if args.only:
        variants = [v for v in variants if "/".join(v) in args.only]
    samples: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for isa, task, channels, precision in variants:
            key = f"{isa}/{task}/{channels}/{precision}"
            result = run_child([task, channels, precision, str(args.side), str(args.slab)],
                               isa != "native", args.threads)
            samples.setdefault(key, []).append(result)
            print(key, result, flush=True)
    summary = {}
    for key, rows in samples.items():
        summary[key] = {name: statistics.median(row[name] for row in rows)
                        for name in rows[0] if isinstance(rows[0][name], (int, float))}
    only = f" --only {' '.join(args.only)}" if args.only else ""
    tag = f" --tag {args.tag}" if args.tag else ""
    name = ("volume_throughput_only" if args.only else "volume_throughput") + args.tag
    save(name, {
        "command": f"python benchmarks/speed/volume_throughput.py --rounds {args.rounds} "
                   f"--threads {args.threads}{only}{tag}",
        "side": args.side, "slab_cells": args.slab, "threads": args.threads,
        "median": summary, "samples": samples})


if __name__ == "__main__":
    main()
