"""Classifier-free guidance of the diffusion prior against the accuracy of generation at a target
phase fraction: from a run of benchmarks/studies/conditioning.py (a conv model and diffusion prior
trained on steels at martensite fractions 0.15, 0.25, 0.35), images of 256 px generated at
each guidance weight, at the trained fractions (the val targets the weight is chosen on) and at
0.20 and 0.30 (never seen in training: reported, not chosen on), and a graded map 0.15 -> 0.35;
achieved phase fraction cut at 0.5, mean probability, and finished as the workflow finishes
(the unconditional prior's calibrated cut and the segmentation's morphology).

    python benchmarks/studies/guidance.py --run runs/conditioning_0 [--weights 1 1.5 2 3] [--n 32]

Writes benchmarks/results/guidance.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save
from microvae.diffusion import linear_gradient
from microvae.evaluate import conditioning_metrics
from microvae.modelfile import load_model, load_prior
from microvae.sample import Finishing, diffusion
from microvae.samplesfile import finish_record
from microvae.stages import segmentation_morphology

VAL_TARGETS = (0.15, 0.25, 0.35)
TEST_TARGETS = (0.20, 0.30)
GRADED = (0.15, 0.35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = args.run / "results"
    model, _ = load_model(results / "models" / f"latent_{args.latent}" / "model.pt")
    prior, _ = load_prior(results / "models" / f"latent_{args.latent}" / "diffusion.pt")
    with h5py.File(results / "samples" / f"latent_{args.latent}" / "samples.h5") as h5:
        record = finish_record(h5, "diffusion")
    finishing = Finishing.from_record(record, segmentation_morphology(
        results / "dataset" / "dataset.h5"))
    cells = args.size // 8
    targets = {f"{t:g}": t for t in (*VAL_TARGETS, *TEST_TARGETS)}
    targets["graded"] = linear_gradient(*GRADED, cells, cells)
    out: dict = {"weights": args.weights, "n": args.n, "size": args.size, "by_weight": {}}
    for weight in args.weights:
        rows = {}
        for name, target in targets.items():
            generator = torch.Generator().manual_seed(args.seed)
            started = time.perf_counter()
            probabilities, _ = diffusion(model, prior, args.n, generator, args.size,
                                         phase_fraction=target, guidance=weight)
            seconds = time.perf_counter() - started
            finished, _ = finishing.apply(probabilities)
            at_half = (probabilities > 0.5).astype(np.uint8)
            rows[name] = {"finished": conditioning_metrics(finished, target, probabilities),
                          "cut_at_0.5": conditioning_metrics(at_half, target),
                          "seconds": seconds}
        val = [abs(rows[f"{t:g}"]["cut_at_0.5"]["error"]) for t in VAL_TARGETS]
        val_finished = [abs(rows[f"{t:g}"]["finished"]["error"]) for t in VAL_TARGETS]
        out["by_weight"][f"{weight:g}"] = {
            "sets": rows, "val_max_error_cut_at_0.5": max(val),
            "val_max_error_finished": max(val_finished)}
        print(f"guidance {weight:g}: val max |error| cut at 0.5 {max(val):.4f}, finished "
              f"{max(val_finished):.4f}; " + "; ".join(
                  f"{name} {r['cut_at_0.5']['phase_fraction_mean']:.3f}/"
                  f"{r['finished']['phase_fraction_mean']:.3f}"
                  + (f" (worst band {r['cut_at_0.5']['max_band_error']:.3f}/"
                     f"{r['finished']['max_band_error']:.3f})" if name == "graded" else "")
                  for name, r in rows.items()), flush=True)
    choices = [(entry[key], weight, key.removeprefix("val_max_error_"))
               for weight, entry in out["by_weight"].items()
               for key in ("val_max_error_cut_at_0.5", "val_max_error_finished")]
    error, weight, finishing_name = min(choices)
    out["chosen_on_val"] = {"guidance": float(weight), "finishing": finishing_name,
                            "val_max_error": error}
    chosen = out["by_weight"][weight]["sets"]
    out["test_at_choice"] = {f"{t:g}": chosen[f"{t:g}"][finishing_name]
                             for t in TEST_TARGETS}
    out["graded_at_choice"] = chosen["graded"][finishing_name]
    print("chosen on val:", out["chosen_on_val"], "test:",
          {k: round(v["phase_fraction_mean"], 4) for k, v in out["test_at_choice"].items()},
          "graded worst band", round(out["graded_at_choice"]["max_band_error"], 4))
    save("guidance", out)


if __name__ == "__main__":
    main()
