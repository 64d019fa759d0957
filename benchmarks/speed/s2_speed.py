"""S2 of 1000 images of 128 x 128 px: the batched FFT implementation against a loop over
porespy's two_point_correlation, in the same run, with a check that they agree.

    python benchmarks/speed/s2_speed.py [--n 1000] [--size 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import porespy as ps
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save
from microvae.descriptors import two_point_correlation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--porespy-n", type=int, default=None,
                        help="time porespy on this many images and scale (default: all)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = (ndimage.gaussian_filter(rng.random((args.n, args.size, args.size)), (0, 3, 3))
              > 0.5).astype(np.uint8)
    two_point_correlation(images[:8])  # warm-up: plan and FFT setup
    started = time.perf_counter()
    ours = two_point_correlation(images)
    ours_s = time.perf_counter() - started

    n_ref = args.porespy_n or args.n
    ps.metrics.two_point_correlation(images[0].astype(bool))  # numba compilation
    started = time.perf_counter()
    reference = [ps.metrics.two_point_correlation(im.astype(bool)).probability_scaled
                 for im in images[:n_ref]]
    porespy_s = (time.perf_counter() - started) * args.n / n_ref
    bins = len(reference[0])
    error = float(np.max(np.abs(ours.radial[:n_ref, :bins] - np.array(reference))))
    result = {"n_images": args.n, "size": args.size, "batched_s": ours_s,
              "porespy_loop_s": porespy_s, "porespy_images_timed": n_ref,
              "speedup": porespy_s / ours_s, "max_abs_difference": error}
    print(f"batched S2: {ours_s:.2f} s, porespy loop: {porespy_s:.2f} s "
          f"-> {porespy_s / ours_s:.1f}x; max |difference| {error:.2e}")
    save("s2_speed", result)


if __name__ == "__main__":
    main()
