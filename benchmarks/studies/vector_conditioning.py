"""Generation at a target phase fraction by the diffusion prior of Table 1 models: the trained
VAEs and priors of the runs of ``seeds.py --priors-only --tag vectorprior`` (the default
config's three training seeds), each asked for every target with 500 images of the tile size;
the achieved phase fraction of the finished images (the unconditional prior's cut: no
threshold forces the target) and at a cut at 0.5, against the target.

    python benchmarks/studies/vector_conditioning.py --runs runs/seed_vectorprior_0
        runs/seed_vectorprior_1 runs/seed_vectorprior_2 --latents 12 64 --targets 0.15 0.35

Writes benchmarks/results/vector_conditioning.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save
from microvae import cli
from microvae.stages.evaluate import conditioned_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--latents", type=int, nargs="+", default=[12, 64])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.15, 0.35])
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    results = {}
    for run in args.runs:
        for latent in args.latents:
            models = run / "results" / "models" / f"latent_{latent}"
            samples = run / f"vector_conditioning_{latent}.h5"
            code = cli.main(["sample", "--model", str(models / "model.pt"), "--diffusion",
                             str(models / "diffusion.pt"), "--dataset",
                             str(run / "results" / "dataset" / "dataset.h5"), "--mode",
                             "diffusion", "--n-prior", str(args.n), "--n-large", str(args.n),
                             "--phase-fractions", *map(str, args.targets), "--out",
                             str(samples)])
            if code:
                raise SystemExit(code)
            sets = conditioned_sets(samples)
            results[f"{run.name} latent {latent}"] = sets
            for name, values in sets.items():
                print(f"{run.name} latent {latent} {name}: target {values['target']:.3f}, "
                      f"achieved {values['phase_fraction_mean']:.4f} (at 0.5: "
                      f"{values['phase_fraction_at_0.5']:.4f})", flush=True)
    save("vector_conditioning", {"command": "python benchmarks/studies/vector_conditioning.py "
                                 + " ".join(sys.argv[1:]), "n": args.n, "results": results})


if __name__ == "__main__":
    main()
