"""Training quality per epoch: val-set reconstruction IoU and the phase fraction of prior
samples after each epoch of one latent size, for tuning the training budget. Measured after
every epoch of one training run (the on_epoch hook of microvae.train.fit). A budget is a
choice: it is made on the val split, never on test (the test split is reported once, by the
workflow).

    python benchmarks/studies/train_quality.py --dataset results/dataset/dataset.h5 --latent 64 \\
        --params '{"epochs": 8, "max_train_images": 6000, "batch_size": 16}'
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
from machine import save
from microvae.device import select_runtime
from microvae.h5io import load_split, load_training_regions
from microvae.model import VAE
from microvae.train import TrainConfig, Training, fit, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--params", type=json.loads, default={"epochs": 6})
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cfg = TrainConfig.from_options(args.params)
    runtime = select_runtime(cfg.device, cfg.precision, cfg.channels_last, args.threads)
    val = load_split(args.dataset, "val")  # choices are made on val, never on test
    train_phi = float(load_split(args.dataset, "train").mean())
    x = torch.from_numpy(val).float()[:, None]
    rows, started = [], time.perf_counter()

    def measure(training: Training) -> None:
        model = VAE(val.shape[1:], args.latent)
        model.load_state_dict({k: v.float().cpu() for k, v in training.model.state_dict().items()})
        model.eval()
        with torch.no_grad():
            recon = model.decode(model.encode(x)[0])[:, 0].numpy() > 0.5
            prior = model.decode(torch.randn(1000, args.latent,
                                             generator=torch.Generator().manual_seed(0)))
        truth = val.astype(bool)
        iou = np.mean(np.count_nonzero(recon & truth, axis=(1, 2))
                      / np.maximum(np.count_nonzero(recon | truth, axis=(1, 2)), 1))
        row = {"epoch": training.epoch, "seconds": time.perf_counter() - started,
               "val_iou": float(iou), "prior_phase_fraction": float((prior > 0.5).float().mean()),
               "prior_mean_probability": float(prior.mean()), "train_phase_fraction": train_phi,
               "val_loss": training.history[-1]["val_loss"]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    regions = load_training_regions(args.dataset) if cfg.crops else None
    training = prepare(load_split(args.dataset, "train"), load_split(args.dataset, "val"),
                       args.latent, cfg, runtime, *(regions or (None, None)))
    fit(training, on_epoch=measure)
    save(f"train_quality_latent{args.latent}", {"params": args.params, "rows": rows})


if __name__ == "__main__":
    main()
