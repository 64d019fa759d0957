"""Training throughput of the Table 1 VAE: the fp32 eager NCHW baseline against the project's
training step (precision 'auto', channels_last and fused Adam, as `microvae train` runs it), at
32 (the default config), 64 and 128 px, batch 32, in one run. Prints images/s, GFLOP/s and the
ratio; --profile adds the top operators of the project's step. The peer, the same step in
Keras 3 / TensorFlow fp32 (benchmarks/keras_peer.py), runs in the same run where a Python with
TensorFlow is at hand (this one, or --peer-python; TensorFlow is the optional `bench` extra,
never a dependency of microvae): a third column and the project's ratio to it.

    python benchmarks/train_throughput.py [--sizes 32 64 128] [--batch 32] [--threads 2] [--profile]
        [--peer-python /path/to/python-with-tensorflow]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from machine import save
from microvae.device import Runtime, select_runtime
from microvae.model import VAE
from microvae.train import TrainConfig, to_tensor, train_step
from microvae.train import prepare as prepare_training


def forward_flops(model: VAE) -> float:
    """FLOPs (2 per multiply-add) of one forward pass of one image."""
    flops = 0.0
    height, width = model.config["image_size"]
    x = torch.zeros(1, 1, height, width)
    hooks = []

    def conv_hook(module, inputs, output):
        nonlocal flops
        if isinstance(module, nn.ConvTranspose2d):
            positions = inputs[0].shape[2] * inputs[0].shape[3]
        else:
            positions = output.shape[2] * output.shape[3]
        k = module.kernel_size[0] * module.kernel_size[1]
        flops += 2.0 * positions * module.in_channels * module.out_channels * k

    def linear_hook(module, inputs, output):
        nonlocal flops
        flops += 2.0 * module.in_features * module.out_features

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return flops


def prepare(size: int, batch: int, runtime: Runtime, project: bool = False):
    """One training step of the latent-12 network on a fixed batch (warmed up): the project's
    own :func:`microvae.train.train_step`, on the network and optimizer that
    :func:`microvae.train.prepare` builds (project) or on a plain NCHW network with unfused
    Adam (baseline)."""
    images = (np.random.default_rng(0).random((batch, size, size)) > 0.75).astype(np.uint8)
    if project:
        cfg = TrainConfig(channels_last=runtime.channels_last, crops=False,
                          precision="bf16" if runtime.bf16 else "fp32")
        training = prepare_training(images, images, 12, cfg, runtime)
        model, optimizer, x = training.model, training.optimizer, training.x_train
    else:
        torch.manual_seed(0)
        model = VAE(size, 12).to(runtime.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = to_tensor(images, runtime)
    eps = torch.randn(batch, 12).to(runtime.device)

    def step():
        train_step(model, optimizer, x, eps, 0.1, runtime)

    for _ in range(2):
        step()
    return step


def images_per_s(step, batch: int, seconds: float, device: torch.device) -> float:
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or steps < 3:
        step()
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def compare(size: int, batch: int, baseline: Runtime, project: Runtime, seconds: float,
            rounds: int, profile: bool = False) -> tuple[dict, dict]:
    """Median images/s of the baseline and the project's step, timed in alternating windows
    (a shared, noisy host slows both alike instead of whichever ran second)."""
    base_step = prepare(size, batch, baseline)
    ours_step = prepare(size, batch, project, project=True)
    base_rates, ours_rates = [], []
    for _ in range(rounds):
        base_rates.append(images_per_s(base_step, batch, seconds / rounds, baseline.device))
        ours_rates.append(images_per_s(ours_step, batch, seconds / rounds, project.device))
    train_flops = 3.0 * forward_flops(VAE(size, 12))  # counted on the CPU, whatever the device
    results = []
    for rates in (base_rates, ours_rates):
        rate = statistics.median(rates)
        results.append({"size": size, "batch": batch, "images_per_s": rate,
                        "rounds": [round(r, 2) for r in rates],
                        "gflop_per_image": train_flops / 1e9, "gflop_per_s": rate * train_flops / 1e9})
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                ours_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    return results[0], results[1]


def keras_peer(python: str, sizes: list[int], batch: int, threads: int, seconds: float,
               rounds: int) -> dict[int, dict]:
    """Median images/s of the Keras/TensorFlow step per size (benchmarks/keras_peer.py run by
    ``python``)."""
    script = Path(__file__).with_name("keras_peer.py")
    result = subprocess.run([python, str(script), "--sizes", *map(str, sizes), "--batch",
                             str(batch), "--threads", str(threads), "--seconds", str(seconds),
                             "--rounds", str(rounds)], capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {row["size"]: {"images_per_s": statistics.median(row["rounds"]),
                          "rounds": [round(r, 2) for r in row["rounds"]],
                          "tensorflow": row["tensorflow"]} for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per setup")
    parser.add_argument("--rounds", type=int, default=4, help="alternating timing windows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--peer-python", default=None,
                        help="a Python with TensorFlow for the Keras peer (default: this one, "
                             "where it has TensorFlow)")
    args = parser.parse_args()
    peer_python = args.peer_python
    if peer_python is None and importlib.util.find_spec("tensorflow") is not None:
        peer_python = sys.executable
    if peer_python is None:
        print("TensorFlow is not installed here: no Keras/TensorFlow column (pip install -e "
              "'.[bench]', or --peer-python with a Python that has it)")
    baseline = Runtime(torch.device(args.device), bf16=False, channels_last=False)
    project = select_runtime(args.device, "auto", True, args.threads)
    rows = []
    for size in args.sizes:
        base, ours = compare(size, args.batch, baseline, project, args.seconds, args.rounds,
                             args.profile)
        ratio = ours["images_per_s"] / base["images_per_s"]
        rows.append({"size": size, "baseline_fp32_nchw": base,
                     "project": {**ours, "bf16": project.bf16,
                                 "channels_last": project.channels_last},
                     "ratio": ratio})
        print(f"{size} px, batch {args.batch}: baseline fp32 NCHW {base['images_per_s']:.1f} img/s "
              f"({base['gflop_per_s']:.0f} GFLOP/s) | project "
              f"({'bf16' if project.bf16 else 'fp32'}, channels_last, fused Adam) "
              f"{ours['images_per_s']:.1f} img/s ({ours['gflop_per_s']:.0f} GFLOP/s) | ratio {ratio:.2f}x | "
              f"{ours['gflop_per_image']:.2f} GFLOP per image per step")
    if peer_python is not None and args.device == "cpu":
        peer = keras_peer(peer_python, args.sizes, args.batch, args.threads, args.seconds,
                          args.rounds)
        for row in rows:
            row["keras_tensorflow_fp32"] = peer[row["size"]]
            row["project_over_keras"] = (row["project"]["images_per_s"]
                                         / peer[row["size"]]["images_per_s"])
            print(f"{row['size']} px: Keras/TensorFlow {peer[row['size']]['tensorflow']} fp32 "
                  f"{peer[row['size']]['images_per_s']:.1f} img/s | project / Keras "
                  f"{row['project_over_keras']:.2f}x")
    save("train_throughput" + ("_cuda" if args.device == "cuda" else ""), {"rows": rows})


if __name__ == "__main__":
    main()
