"""Generation at a target phase fraction with and without the calibration of the target
(sample.calibrate_targets: feedback steps on 32 draws of their own each; one step, the default,
and three; without calibration a map is asked for smoothed as the training conditions were):
the conditioning study's models and diffusion priors (runs of conditioning.py), the same
sampling seed, 64 images of 256 px at 0.20 and 0.30 (never trained on) and a graded map
0.15 -> 0.35; each set against its target (no threshold forces it) and against the real
volumes made at the target.

    python benchmarks/studies/target_calibration.py --runs runs/conditioning_1 runs/conditioning_2

Writes benchmarks/results/target_calibration.json (the results of the first design, whose
error of a map was measured per cell, kept in it under ``per_cell_error``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from conditioning import TARGETS, judged_against, reference_path

from machine import REPO, save
from microvae import cli
from microvae import sample as sample_module
from microvae.stages.evaluate import conditioned_sets


def calibrated_variants(run: Path, n: int) -> dict:
    results = run / "results"
    model = results / "models" / "latent_8" / "model.pt"
    out = {}
    # (calibrate_targets, feedback steps): no calibration, one step (the default,
    # microvae.sample.TARGET_CALIBRATION_STEPS), three steps
    variants = {"uncalibrated": (False, 0), "one_step": (True, 1), "three_steps": (True, 3)}
    default_steps = sample_module.TARGET_CALIBRATION_STEPS
    for variant, (calibrate, steps) in variants.items():
        samples = run / f"target_calibration_{variant}.h5"
        started = time.perf_counter()
        sample_module.TARGET_CALIBRATION_STEPS = steps or default_steps
        try:
            code = cli.main(["sample", "--model", str(model),
                             "--diffusion", str(model.with_name("diffusion.pt")), "--dataset",
                             str(results / "dataset" / "dataset.h5"), "--mode", "diffusion",
                             "field", "--sizes", "256", "--n-large", str(n),
                             "--phase-fractions", *map(str, TARGETS), "--graded", "0.15",
                             "0.35", "--calibrate-targets" if calibrate else
                             "--no-calibrate-targets", "--out", str(samples)])
        finally:
            sample_module.TARGET_CALIBRATION_STEPS = default_steps
        if code:
            raise SystemExit(code)
        seconds = time.perf_counter() - started
        against = {f"{t:g}": judged_against(samples, t, reference_path(t),
                                            run / f"against_{t:g}_{variant}.h5")
                   for t in TARGETS}
        out[variant] = {"calibrate_targets": calibrate, "feedback_steps": steps,
                        "conditioning": conditioned_sets(samples), "against_real": against,
                        "sample_seconds": seconds}
        for name, values in out[variant]["conditioning"].items():
            print(f"{run.name} {variant}: {name}: target {values['target']:.3f}, achieved "
                  f"{values['phase_fraction_mean']:.4f}"
                  + (f", worst band {values['max_band_error']:.3f}"
                     if "max_band_error" in values else ""), flush=True)
        for target, sets in against.items():
            name = f"conditioned_{target}_256"
            print(f"  real at {target}: {sets[name]['verdict']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True,
                        help="runs of conditioning.py")
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    path = REPO / "benchmarks" / "results" / "target_calibration.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    runs = {**earlier.get("runs", {}),
            **{run.name: calibrated_variants(run, args.n) for run in args.runs}}
    save("target_calibration", {"n": args.n, "command": "python benchmarks/studies/"
                                "target_calibration.py " + " ".join(sys.argv[1:]),
                                "runs": runs, "per_cell_error": earlier.get("per_cell_error")})


if __name__ == "__main__":
    main()
