"""Generation at scale against the best PyTorch baseline (issue 27): decoding 64 images of 512 px
from the conv model and one periodic 256^3 volume from the conv3d model, as the project does it
(eager PyTorch, fp32, the stock layers: inference never takes the training layer's backward)
against ``torch.compile`` (inductor, the C++ CPU backend) of the same decoder, and bf16
autocast where the CPU computes bf16 natively. Untrained weights (the time does not depend on
them); latent grids drawn from N(0, I). Interleaved repeats, the minimum per variant; the first
compiled call (the compile time) is reported on its own.

    python benchmarks/speed/decode_scale.py [--repeats 2] [--threads 2] [--images 64] [--size 512]
        [--volume 256]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save
from microvae.device import select_runtime
from microvae.model import ConvVAE, ConvVAE3d, initialize
from microvae.sample import decode
from microvae.volume_vae import decode_volume


def images_variants(model: ConvVAE, z: torch.Tensor, bf16: bool) -> dict:
    compiled = torch.compile(model.decode_logits, dynamic=False)

    class Compiled(torch.nn.Module):  # sample.decode calls model.decode
        config = model.config

        def decode(self, z, periodic=False):
            return torch.sigmoid(compiled(z, periodic=periodic))

    variants = {"eager_fp32": lambda: decode(model, z, periodic=True),
                "compiled_fp32": lambda: decode(Compiled(), z, periodic=True)}
    if bf16:
        def eager_bf16():
            with torch.autocast("cpu", torch.bfloat16):
                return decode(model, z, periodic=True)
        variants["eager_bf16"] = eager_bf16
    return variants


def volume_variants(model: ConvVAE3d, z: torch.Tensor, bf16: bool) -> dict:
    eager_decode = model.decode_logits
    compiled_decode = torch.compile(model.decode_logits, dynamic=False)

    def run(function, autocast=False):
        def call():
            model.decode_logits = function
            context = (torch.autocast("cpu", torch.bfloat16) if autocast
                       else contextlib.nullcontext())
            with torch.no_grad(), context:
                return decode_volume(model, z, periodic=True)
        return call

    variants = {"eager_fp32": run(eager_decode), "compiled_fp32": run(compiled_decode)}
    if bf16:
        variants["eager_bf16"] = run(eager_decode, autocast=True)
    return variants


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure(variants: dict, repeats: int) -> dict:
    first = {name: timed(f) for name, f in variants.items()}  # compiles, warms up
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, f in variants.items():
            times[name].append(timed(f))
    best = {name: min(t) for name, t in times.items()}
    return {"first_call_s": first, "seconds": best, "all_seconds": times,
            "over_eager_fp32": {name: best["eager_fp32"] / t for name, t in best.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--volume", type=int, default=256)
    args = parser.parse_args()
    bf16 = select_runtime("cpu", "auto", True, args.threads).bf16
    torch.manual_seed(0)
    result = {"bf16_native": bf16, "repeats": args.repeats}
    model = initialize(ConvVAE(32, 8)).eval()
    z = torch.randn(args.images, 8, args.size // 8, args.size // 8)
    result["images"] = {"n": args.images, "size": args.size,
                        **measure(images_variants(model, z, bf16), args.repeats)}
    print(f"{args.images} images of {args.size} px:", result["images"]["seconds"],
          result["images"]["first_call_s"], flush=True)
    model3d = initialize(ConvVAE3d(32, 8)).eval()
    z3d = torch.randn(8, *(args.volume // 8,) * 3)
    result["volume"] = {"side": args.volume,
                        **measure(volume_variants(model3d, z3d, bf16), args.repeats)}
    print(f"one {args.volume}^3 volume:", result["volume"]["seconds"],
          result["volume"]["first_call_s"], flush=True)
    save("decode_scale", result)


if __name__ == "__main__":
    main()
