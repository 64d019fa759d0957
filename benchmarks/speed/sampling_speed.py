"""Sampling speed: 1000 prior samples at 128 x 128 px (latent 12) from the Table 1 network.

    python benchmarks/speed/sampling_speed.py [--n 1000] [--size 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save
from microvae.model import VAE
from microvae.modelfile import save_model
from microvae.sample import SampleConfig
from microvae.stages.sample import sample_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.pt"
        save_model(VAE(args.size, 12), model_path)
        started = time.perf_counter()
        sample_model(model_path, Path(tmp) / "samples.h5", None,
                       SampleConfig(n_prior=args.n), modes=("prior",))
        seconds = time.perf_counter() - started
    print(f"{args.n} prior samples of {args.size} px (model load, decode, HDF5 write): "
          f"{seconds:.2f} s ({args.n / seconds:.0f} images/s)")
    save("sampling_speed", {"n_images": args.n, "size": args.size, "threads": args.threads,
                            "seconds": seconds, "images_per_s": args.n / seconds})


if __name__ == "__main__":
    main()
