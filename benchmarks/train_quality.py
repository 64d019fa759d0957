"""Training quality per epoch: test-set reconstruction IoU and the phase fraction of prior
samples after each epoch of one latent size, for tuning the default budget (issue 3).
Uses resumption: each epoch continues the checkpoint of the one before.

    python benchmarks/train_quality.py --dataset results/dataset/dataset.h5 --latent 64 \\
        --params '{"epochs": 8, "max_train_images": 6000, "batch_size": 16}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from machine import save
from microvae.dataset import load_split
from microvae.model import VAE
from microvae.train import TrainConfig, train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--params", type=json.loads, default={"epochs": 6})
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cfg = TrainConfig(**{**args.params, "threads": args.threads})
    test = load_split(args.dataset, "test")
    train_phi = float(load_split(args.dataset, "train").mean())
    x = torch.from_numpy(test).float()[:, None]
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for epoch in range(1, cfg.epochs + 1):
            train_model(args.dataset, args.latent, cfg, out / "ck", out / "m.pt", out / "h.csv",
                        stop_after_epoch=epoch)
            state = torch.load(out / "ck" / "checkpoint.pt", weights_only=True)
            model = VAE(test.shape[1:], args.latent)
            model.load_state_dict(state["model"])
            model.eval()
            with torch.no_grad():
                recon = model.decode(model.encode(x)[0])[:, 0].numpy() > 0.5
                prior = model.decode(torch.randn(1000, args.latent,
                                                 generator=torch.Generator().manual_seed(0)))
            truth = test.astype(bool)
            iou = np.mean(np.count_nonzero(recon & truth, axis=(1, 2))
                          / np.maximum(np.count_nonzero(recon | truth, axis=(1, 2)), 1))
            row = {"epoch": epoch, "seconds": time.perf_counter() - started,
                   "test_iou": float(iou), "prior_phase_fraction": float((prior > 0.5).float().mean()),
                   "prior_mean_probability": float(prior.mean()), "train_phase_fraction": train_phi,
                   "val_loss": state["history"][-1]["val_loss"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    save(f"train_quality_latent{args.latent}", {"params": args.params, "rows": rows})


if __name__ == "__main__":
    main()
