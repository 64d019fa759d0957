"""Per-layer evidence for issue 27: the stride-2 3x3 transposed convolutions of the decoders,
computed four ways that give the same values (checked here in float64 first), timed forward
and forward + backward, interleaved (rounds of every variant in turn; the minimum per variant):

- stock: ``F.conv_transpose2d`` (oneDNN's deconvolution, its own backward);
- project: ``microvae.model._TransposedConvolution`` (stock forward; backward through the
  ordinary convolution kernels it is the adjoint of: what training runs today);
- subpixel: four ordinary convolutions with the 1x1, 1x2, 2x1 and 2x2 sub-kernels of the same
  weights, one per output phase, interleaved (a pixel shuffle): no multiplications by the zeros
  a deconvolution inserts;
- subpixel_fused: the four sub-kernels zero-padded to 2x2 and stacked as one ordinary 2x2
  convolution with 4x the output channels, then a pixel shuffle: one large kernel call instead
  of four small ones, at 16/9 of the multiplications;
- gemm_col2im: one matrix product (weights^T x input) and ``F.fold`` (col2im), as TensorFlow
  computes it.

    python benchmarks/speed/transposed_conv.py [--batch 32] [--rounds 5] [--bf16]
        [--channels-last] [--tag _bf16_cl]

--bf16 times every variant in bfloat16 (the project's precision on a CPU with AVX512-BF16),
--channels-last in the project's memory layout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import REPO, save

sys.path.insert(0, str(REPO / "src"))
from microvae.model import _TransposedConvolution  # noqa: E402

# (in channels, out channels, input side) of the Table 1 decoder at 32, 64 and 128 px
LAYERS = {32: [(256, 256, 4), (256, 128, 8), (128, 64, 16)],
          64: [(256, 256, 8), (256, 128, 16), (128, 64, 32)],
          128: [(256, 256, 16), (256, 128, 32), (128, 64, 64)]}


def stock(x, w, b):
    return F.conv_transpose2d(x, w, b, 2, 1, 1)


def project(x, w, b):
    return _TransposedConvolution.apply(x, w, b, (2, 2), (1, 1), (1, 1))


def subpixel(x, w, b):
    n, _, h, width = x.shape
    k = w.transpose(0, 1)  # (out, in, 3, 3) as a convolution's weight
    padded = F.pad(x, (0, 1, 0, 1))
    even_even = F.conv2d(x, k[:, :, 1:2, 1:2], b)
    even_odd = F.conv2d(padded[:, :, :h, :], k[:, :, 1:2, [2, 0]], b)
    odd_even = F.conv2d(padded[:, :, :, :width], k[:, :, [2, 0], 1:2], b)
    odd_odd = F.conv2d(padded, k[:, :, [2, 0]][:, :, :, [2, 0]], b)
    top = torch.stack((even_even, even_odd), -1)
    bottom = torch.stack((odd_even, odd_odd), -1)
    return torch.stack((top, bottom), 3).reshape(n, k.shape[0], 2 * h, 2 * width)


# output phase (0: even, 1: odd rows or columns) -> (input offset, kernel index) pairs of a
# stride-2 3x3 transposed convolution with padding 1 and output padding 1
PHASE_TAPS = {0: ((0, 1),), 1: ((0, 2), (1, 0))}


def subpixel_fused(x, w, b):
    c, oc = w.shape[:2]
    kernel = w.new_zeros(oc, 2, 2, c, 2, 2)
    for row_phase, row_taps in PHASE_TAPS.items():
        for col_phase, col_taps in PHASE_TAPS.items():
            for di, ki in row_taps:
                for dj, kj in col_taps:
                    kernel[:, row_phase, col_phase, :, di, dj] = w[:, :, ki, kj].t()
    y = F.conv2d(F.pad(x, (0, 1, 0, 1)), kernel.reshape(4 * oc, c, 2, 2),
                 None if b is None else b.repeat_interleave(4))
    return F.pixel_shuffle(y, 2)


def gemm_col2im(x, w, b):
    n, c, h, width = x.shape
    cols = torch.matmul(w.reshape(c, -1).t(), x.reshape(n, c, h * width))
    y = F.fold(cols, (2 * h, 2 * width), 3, padding=1, stride=2)
    return y if b is None else y + b.view(1, -1, 1, 1)


VARIANTS = {"stock": stock, "project": project, "subpixel": subpixel,
            "subpixel_fused": subpixel_fused, "gemm_col2im": gemm_col2im}


def check_equal() -> float:
    torch.manual_seed(0)
    worst = 0.0
    for c, oc, h in LAYERS[32]:
        x = torch.randn(3, c, h, h, dtype=torch.float64, requires_grad=True)
        w = torch.randn(c, oc, 3, 3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(oc, dtype=torch.float64, requires_grad=True)
        reference = None
        for f in VARIANTS.values():
            y = f(x, w, b)
            grads = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
            values = (y, *grads)
            if reference is None:
                reference = values
            worst = max(worst, *((a - r).abs().max().item() for a, r in zip(values, reference)))
    return worst


def timed(f, x, w, b, backward: bool, repeats: int = 3) -> float:
    if backward:
        x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    started = time.perf_counter()
    for _ in range(repeats):
        if backward:
            y = f(x, w, b)
            y.backward(torch.ones_like(y))
        else:
            with torch.no_grad():
                f(x, w, b)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--bf16", action="store_true", help="time in bfloat16")
    parser.add_argument("--channels-last", action="store_true", help="channels_last tensors")
    parser.add_argument("--tag", default="", help="suffix of the result file")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    worst = check_equal()
    print(f"largest difference from stock (float64, values and gradients): {worst:.2e}")
    torch.manual_seed(0)
    rows = []
    for size in args.sizes:
        for c, oc, h in LAYERS[size]:
            x = torch.randn(args.batch, c, h, h).to(dtype).contiguous(memory_format=layout)
            w = (torch.randn(c, oc, 3, 3) * 0.05).to(dtype).contiguous(memory_format=layout)
            b = torch.randn(oc).to(dtype)
            for backward in (False, True):
                for f in VARIANTS.values():  # warm-up
                    timed(f, x, w, b, backward, 1)
                times = {name: [] for name in VARIANTS}
                for _ in range(args.rounds):
                    for name, f in VARIANTS.items():
                        times[name].append(timed(f, x, w, b, backward))
                best = {name: min(t) * 1000 for name, t in times.items()}
                row = {"image_size": size, "layer": [c, oc, h], "pass": "forward+backward"
                       if backward else "forward", "ms": best,
                       "over_stock": {name: best["stock"] / t for name, t in best.items()}}
                rows.append(row)
                print(f"{size:4d} px {c:3d}->{oc:3d} at {h:3d}^2 {row['pass']:16s} " +
                      "  ".join(f"{name} {t:7.1f} ms ({row['over_stock'][name]:.2f}x)"
                                for name, t in best.items()))
    save("transposed_conv" + args.tag, {"batch": args.batch, "rounds": args.rounds,
                                        "dtype": str(dtype).removeprefix("torch."),
                                        "channels_last": args.channels_last,
                                        "max_difference_float64": worst, "rows": rows})


if __name__ == "__main__":
    main()
