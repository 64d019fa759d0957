"""The 2-D conv model's decoder ceiling against its KL weight, on val: what the decoder makes of
real images it never saw, the bound of any prior over its latent grid.

The default `diffusion` misses the ferrite chords and the interface length against the firm
floor in every seed (docs/diffusion.md), and so did the decoder's reconstructions of 64 real
val windows, cut at 0.5 (not finished as the generated sets are). This study trains
config/conv.yaml's VAE (seed 0) at each KL weight, reconstructs 64 real 256 px windows of the
firm reference's 4 train volumes (0.25; volumes no model saw; posterior mean) and judges them
against the floor of its 8 **val** volumes: cut at 0.5, and cut at 0.5 then the data's
segmentation morphology (what the finishing of generated sets adds, without its calibrated
threshold), beside the 64 real windows themselves. Islands of at most 10 px per window say
what a cut drops.

    python benchmarks/studies/conv_ceiling.py [--weights 1 0.1] [--priors] [--seed 0]

With ``--priors`` each model's diffusion prior is trained too (the workflow up to rule
``train_prior``) and 64 of its images of 256 px (finished as the workflow finishes them) are
judged on the same floor: whether a sharper decoder helps the generated images.

Runs the workflow up to rule ``train`` in runs/conv_ceiling_kl{w}_seed{seed}/ (reused where
finished); adds the seed's part to benchmarks/results/conv_ceiling.json (``runs``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditioning import reference_dataset
from conditioning_floor import spaced_windows

from machine import REPO, judged, save
from microvae import cli
from microvae.modelfile import load_model
from microvae.sample import Finishing, encode, reconstruct
from microvae.stages import segmentation_morphology
from microvae.stages.evaluate import evaluate_large

N_IMAGES, SIZE, FRACTION = 64, 256, 0.25


def trained(weight: float, seed: int, until: str = "train") -> Path:
    directory = REPO / "runs" / f"conv_ceiling_kl{weight:g}_seed{seed}"
    model = directory / "results" / "models" / "latent_8" / "model.pt"
    config = yaml.safe_load((REPO / "config" / "conv.yaml").read_text())
    config["model"]["kl_weight"] = weight
    config["train"]["seed"] = seed
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                    "--directory", str(directory), "--cores", "2", "--quiet", "rules",
                    "--until", until], check=True, env=dict(os.environ))
    return model


def drawn(model_path: Path) -> Path:
    """64 images of 256 px from the model's diffusion prior (unconditioned, finished as the
    workflow finishes them), kept beside the run."""
    out = model_path.parents[3] / "diffusion_64_256.h5"
    if not out.exists():
        code = cli.main(["sample", "--model", str(model_path), "--diffusion",
                         str(model_path.with_name("diffusion.pt")), "--dataset",
                         str(model_path.parents[3] / "results" / "dataset" / "dataset.h5"),
                         "--sizes", str(SIZE), "--n-large", str(N_IMAGES), "--mode",
                         "diffusion", "--out", str(out)])
        if code:
            raise SystemExit(code)
    return out


def small_islands(maps: np.ndarray) -> dict:
    """Islands of phase 1 per window, and of them those of at most 10 px."""
    sizes = [np.bincount(ndimage.label(m)[0].ravel())[1:] for m in maps]
    return {"islands_per_window": float(np.mean([s.size for s in sizes])),
            "at_most_10_px_per_window": float(np.mean([(s <= 10).sum() for s in sizes]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--priors", action="store_true",
                        help="also train each model's diffusion prior and judge 64 of its "
                             "images of 256 px on the same floor")
    args = parser.parse_args()
    reference = reference_dataset(FRACTION, {})
    real = spaced_windows(reference, "train", N_IMAGES, SIZE).astype(np.uint8)
    morphology = segmentation_morphology(reference)
    sets = {"real_train_64": real}
    training = {}
    for weight in args.weights:
        model_path = trained(weight, args.seed, "train_prior" if args.priors else "train")
        model, _ = load_model(model_path)
        if args.priors:
            with h5py.File(drawn(model_path)) as h5:
                sets[f"diffusion_kl{weight:g}"] = h5[f"finished/large/diffusion_{SIZE}"][()]
        with torch.no_grad():
            z_mean, _ = encode(model, real.astype(np.float32))
            probabilities = reconstruct(model, real.astype(np.float32), z_mean)[0]
        cut = (probabilities > 0.5).astype(np.uint8)
        morphed, _ = Finishing(0.5, FRACTION, morphology, 0, [], 0.0).apply(probabilities)
        sets[f"reconstructed_kl{weight:g}_cut"] = cut
        sets[f"reconstructed_kl{weight:g}_morphology"] = morphed.astype(np.uint8)
        history = (model_path.parent / "history.csv").read_text().splitlines()
        training[f"{weight:g}"] = {"last_row": history[-1], "header": history[0],
                                   "iou_train_windows": float(
                                       (cut & real).sum() / max((cut | real).sum(), 1))}
    samples = REPO / "runs" / f"conv_ceiling_sets_seed{args.seed}.h5"
    with h5py.File(samples, "w") as h5:
        h5.attrs.update({"split": "val", "periodic": False, "latent_size": 8})
        for name, maps in sets.items():
            h5[f"large/{name}_{SIZE}"] = maps.astype(np.float32)
    metrics = evaluate_large(samples, reference, samples.with_suffix(".json"), split="val")
    out = {name: judged(values) for name, values in metrics["sets"].items()}
    for name, values in out.items():
        print(f"{name}: {values['verdict']}; failed {values['failed']}; " + ", ".join(
            f"{k} {m:.2f}" for k, m in values["floor_multiple"].items()), flush=True)
    path = REPO / "benchmarks" / "results" / "conv_ceiling.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.pop("machine", None)
    result.update({"reference_fraction": FRACTION, "n_images": N_IMAGES, "size": SIZE,
                   "floor": "the firm reference's 8 val volumes"})
    result.setdefault("runs", {})[str(args.seed)] = {
        "command": "python benchmarks/studies/conv_ceiling.py --weights "
                   + " ".join(f"{w:g}" for w in args.weights)
                   + (" --priors" if args.priors else "") + f" --seed {args.seed}",
        "training": training, "sets": out,
        "islands": {name: small_islands(maps) for name, maps in sets.items()},
        "reference": metrics["reference"]}
    save("conv_ceiling", result)


if __name__ == "__main__":
    main()
