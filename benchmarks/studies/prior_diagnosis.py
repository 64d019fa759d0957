"""Why prior samples miss the real phase fraction (issue 3): how much of the latent space the
encoder uses, and what the decoder makes of prior draws restricted to that part.

Prints the eigenvalues of the covariance of the training images' z_mean, the phase fraction of
prior draws projected onto the top-k eigen-directions, and that of draws from the Gaussian fitted
to the aggregate posterior (the `aggregate` sampling mode).

    python benchmarks/studies/prior_diagnosis.py --model results/models/latent_64/model.pt \\
        --dataset results/dataset/dataset.h5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save
from microvae.dataset import evenly_spaced
from microvae.h5io import load_split
from microvae.modelfile import load_model
from microvae.sample import aggregate, decode, encode, fit_aggregate_posterior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--n", type=int, default=2000, help="prior draws")
    parser.add_argument("--max-fit-images", type=int, default=5000)
    args = parser.parse_args()
    model, _ = load_model(args.model)
    train = evenly_spaced(load_split(args.dataset, "train"), args.max_fit_images)
    real_phi = float(load_split(args.dataset, "test").mean())
    z_mean, z_log_var = encode(model, train)
    eigenvalues, vectors = torch.linalg.eigh(torch.cov(z_mean.double().T))
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
    z = torch.randn(args.n, model.latent_size, generator=torch.Generator().manual_seed(0))

    def phase_fraction(images: np.ndarray) -> float:
        return float((images > 0.5).mean())

    projected = {}
    for k in sorted({1, 2, 5, 10, 20, 30, model.latent_size} & set(range(1, model.latent_size + 1))):
        basis = vectors[:, :k].float()
        projected[k] = phase_fraction(decode(model, z @ basis @ basis.T))
    mean, cov = fit_aggregate_posterior(z_mean, z_log_var)
    fitted, _ = aggregate(model, mean, cov, args.n, torch.Generator().manual_seed(1))
    result = {
        "model": args.model, "latent_size": model.latent_size, "real_phase_fraction": real_phi,
        "z_mean_variance_per_coordinate": float(z_mean.var(0).mean()),
        "posterior_std_mean": float((0.5 * z_log_var).exp().mean()),
        "z_mean_covariance_eigenvalues": [round(float(v), 4) for v in eigenvalues],
        "directions_with_variance_above_0.1": int((eigenvalues > 0.1).sum()),
        "prior_phase_fraction_projected_on_top_k": projected,
        "aggregate_phase_fraction": phase_fraction(fitted)}
    for key, value in result.items():
        print(f"{key}: {value}")
    save(f"prior_diagnosis_latent{model.latent_size}", result)


if __name__ == "__main__":
    main()
