"""Generation speed of the diffusion prior against the field prior: 64 images of 256 px (and of
512 px), latent grids drawn and decoded, from a trained conv model and its diffusion prior
(a run of benchmarks/studies/large.py or of the workflow with config/conv.yaml), in one run with
interleaved repeats; peak memory of the process.

    python benchmarks/speed/diffusion_speed.py --run runs/large_diffusion_0 [--sizes 256 512]
        [--n 64] [--repeats 2] [--threads 2] [--tag _NAME]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save
from microvae.h5io import load_training_regions
from microvae.modelfile import load_model, load_prior
from microvae.sample import FIELD_WINDOWS, diffusion, field, field_windows, fit_field_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a workflow directory")
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None,
                        help="DDIM steps (default: the prior's settings, diffusion.sampling_steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="", help="result file diffusion_speedTAG.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = args.run / "results" / "models" / f"latent_{args.latent}"
    model, _ = load_model(models / "model.pt")
    prior, payload = load_prior(models / "diffusion.pt")
    steps = args.steps or json.loads(payload["extra"]["diffusion"])["sampling_steps"]
    generator = torch.Generator().manual_seed(0)
    regions = load_training_regions(args.run / "results" / "dataset" / "dataset.h5")
    started = time.perf_counter()
    field_fit = fit_field_prior(model, field_windows(*regions, FIELD_WINDOWS, generator),
                                generator)
    field_fit_seconds = time.perf_counter() - started
    timings: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for size in args.sizes:
            for name, draw in (
                    ("field", lambda size=size: field(model, field_fit, args.n, generator,
                                                      size)),
                    ("diffusion", lambda size=size: diffusion(model, prior, args.n, generator,
                                                              size, steps=steps))):
                started = time.perf_counter()
                draw()
                timings.setdefault(f"{name}_{size}", []).append(time.perf_counter() - started)
    result = {"command": "python benchmarks/speed/diffusion_speed.py " + " ".join(sys.argv[1:]),
              "n_images": args.n, "sizes": args.sizes, "ddim_steps": steps,
              "threads": args.threads, "repeats": args.repeats,
              "field_fit_seconds": field_fit_seconds,
              "diffusion_training_minutes": prior.describe()["minutes"],
              "diffusion_training_steps": prior.describe()["steps"],
              "seconds_median": {k: statistics.median(v) for k, v in timings.items()},
              "seconds": timings,
              "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for key, value in result["seconds_median"].items():
        print(f"{args.n} images {key}: {value:.1f} s (median of {args.repeats})")
    print(f"peak memory {result['peak_memory_mb']:.0f} MB")
    save("diffusion_speed" + args.tag, result)


if __name__ == "__main__":
    main()
