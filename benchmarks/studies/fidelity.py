"""How well the VAE learns real micrographs: the workflow on each image of the gallery
(benchmarks/studies/gallery.py, the real micrographs of tests/data), trained as gallery.REAL_TRAINING
says, and per image and latent size: test IoU of the reconstructions, their verdict, training
time, steps, stop reason, restarts, the latent rank and BCE over the mean image's at the best
epoch (collapse checks), and every unseeded mode judged beside the baselines and the real
held-out set, with the mode the evaluation chose on the val split.

    python benchmarks/studies/fidelity.py [--latent-sizes 64] [--only NAME ...] [--seeds 0]
        [--train '{"init": ...}'] [--model '{"init": "torch"}'] [--tag NAME]

Runs in runs/fidelity/<tag>/<name>/seed<k>/; results to benchmarks/results/fidelity[_tag].json.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from gallery import GALLERY, REAL_TRAINING, REPO, run, unseeded_table

from machine import judged, save


def history(directory, latent: int) -> list[dict[str, str]]:
    with open(directory / "results" / "models" / f"latent_{latent}" / "history.csv",
              newline="") as handle:
        return list(csv.DictReader(handle))


def measure(name: str, latent_sizes: list[int], seed: int, train: dict, model: dict,
            tag: str, cores: int, extra: dict | None = None) -> dict[int, dict]:
    directory = REPO / "runs" / "fidelity" / tag / name / f"seed{seed}"
    results_dir = run(name, {**train, "seed": seed}, cores, tuple(latent_sizes), directory, model,
                      extra)
    results = {}
    for latent in latent_sizes:
        metrics = json.loads((results_dir / "evaluation" / f"latent_{latent}" /
                              "metrics.json").read_text())
        epochs = history(directory, latent)
        best = min(epochs, key=lambda r: float(r["val_loss"]))
        results[latent] = {
            "test_iou": metrics["reconstruction"]["iou"],
            "reconstruction": judged(metrics["sets"]["reconstruction"]),
            "train_minutes": sum(float(r["seconds"]) for r in epochs) / 60,
            "epochs": len(epochs), "steps": int(epochs[-1]["steps"]),
            "stop_reason": epochs[-1]["stop_reason"], "restarts": int(epochs[-1]["restarts"]),
            "best_epoch": int(best["epoch"]), "best_latent_rank": int(best["latent_rank"]),
            "best_bce_over_mean_image": float(best["bce_over_mean_image"]),
            "reference": metrics["reference"],
        }
        modes, best_mode = unseeded_table(metrics)
        results[latent].update(unseeded=modes, best_unseeded=best_mode)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--latent-sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--only", nargs="*", default=list(GALLERY))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train", type=json.loads, default={},
                        help="changes to gallery.REAL_TRAINING (JSON)")
    parser.add_argument("--model", type=json.loads, default={},
                        help="model keys (JSON), e.g. {\"init\": \"torch\"}")
    parser.add_argument("--defaults", action="store_true",
                        help="no train section at all (the schema's defaults, as a user who adds "
                             "only a source), instead of gallery.REAL_TRAINING")
    parser.add_argument("--set", type=json.loads, default={},
                        help="other top-level config keys (JSON), e.g. "
                             "{\"diffusion\": {\"enabled\": false}}")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    train = dict(args.train) if args.defaults else {**REAL_TRAINING, **args.train}
    results: dict[str, dict] = {}
    for name in args.only:
        per_seed = {seed: measure(name, args.latent_sizes, seed, train, args.model,
                                  args.tag or "default", args.cores, args.set)
                    for seed in args.seeds}
        results[name] = {}
        for latent in args.latent_sizes:
            runs = [per_seed[seed][latent] for seed in args.seeds]
            ious = [r["test_iou"] for r in runs]
            results[name][latent] = {"seeds": args.seeds, "runs": runs,
                                     "test_iou_median": statistics.median(ious),
                                     "test_iou_min": min(ious), "test_iou_max": max(ious)}
            for seed, r in zip(args.seeds, runs):
                print(f"{name} latent {latent} seed {seed}: test IoU {r['test_iou']:.3f}; "
                      f"reconstructions {r['reconstruction']['verdict']}; "
                      f"{r['train_minutes']:.1f} min, {r['steps']} steps, stop: "
                      f"{r['stop_reason']}, restarts {r['restarts']}, best epoch "
                      f"{r['best_epoch']} (latent rank {r['best_latent_rank']}, BCE "
                      f"{r['best_bce_over_mean_image']:.2f} x the mean image's)", flush=True)
                for set_name, b in r["unseeded"].items():
                    chosen = " (chosen on val)" if set_name == r["best_unseeded"] else ""
                    multiples = ", ".join(f"{k} {v:.2f}" for k, v in b["floor_multiple"].items())
                    print(f"    {set_name}{chosen}: {b['verdict']}; x floor p95: {multiples}; "
                          f"novelty {b.get('novelty_fraction_closer', float('nan')):.2f}",
                          flush=True)
    suffix = f"_{args.tag}" if args.tag else ""
    save(f"fidelity{suffix}", {"train": train, "model": args.model, "set": args.set,
                               "results": results})


if __name__ == "__main__":
    main()
