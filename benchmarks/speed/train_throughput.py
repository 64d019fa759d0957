"""Training throughput of the Table 1 VAE: stock PyTorch (fp32, NCHW, the stock transposed
convolution, unfused Adam, glibc's default allocator) against the project's training step (as
`microvae train` runs it: precision 'auto', channels_last, fused Adam, the transposed convolution
of microvae.model, freed memory kept: microvae.device), at 32 (the default config), 64 and
128 px, batch 32, in one run, timed in alternating windows. Prints images/s, GFLOP/s and the
ratio. The peer, the same step in Keras 3 / TensorFlow in each configuration a Keras user can
pick (fp32, mixed_bfloat16, each with and without XLA: benchmarks/speed/keras_peer.py), runs in
the same run where a Python with TensorFlow is at hand (this one, or --peer-python; TensorFlow
is the optional `bench` extra, never a dependency of microvae): a column per configuration and
the project's ratio to the best of them. The roofline beside it: the machine's matrix-product
peak in the project's precision (a 2048^3 product timed after each round of windows; the best)
and the share of it that the project's step and the best Keras step reach.

--ablation adds the project's step with each of its CPU changes undone (stock transposed
convolution; default allocator); --layers times forward + backward of each layer alone (stock
fp32 NCHW, stock in the project's precision and layout, the project's layer; with the peer, the
Keras layer too); --profile prints the top operators of the project's step.

    python benchmarks/speed/train_throughput.py [--sizes 32 64 128] [--batch 32] [--threads 2]
        [--ablation] [--layers] [--profile] [--peer-python /path/to/python-with-tensorflow]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import save
from microvae.device import Runtime, keep_freed_memory, select_runtime
from microvae.model import VAE, ConvTranspose2d
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


def default_allocator() -> None:
    """glibc's malloc as a stock process has it once warmed up (its dynamic mmap threshold at
    the 32 MB maximum): blocks over 32 MB mapped afresh for each allocation. Undone by
    :func:`microvae.device.keep_freed_memory`; the benchmark switches between the two for the
    windows of stock and project steps (both set process-wide)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    for parameter, value in ((-3, 32 * 2 ** 20), (-1, 64 * 2 ** 20), (-4, 65536)):
        libc.mallopt(parameter, value)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_MMAP_MAX
    libc.malloc_trim(0)


def stock_transposed_convolutions(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with PyTorch's own transposed convolution (same parameters; microvae's layer
    is a subclass that only changes the backward pass)."""
    for module in model.modules():
        if isinstance(module, ConvTranspose2d):
            module.__class__ = nn.ConvTranspose2d
    return model


def prepare(size: int, batch: int, runtime: Runtime, project: bool = False,
            stock_layers: bool = False):
    """One training step of the latent-12 network on a fixed batch (warmed up): the project's
    own :func:`microvae.train.train_step`, on the network and optimizer that
    :func:`microvae.train.prepare` builds (project; ``stock_layers``: with PyTorch's transposed
    convolution) or on a plain NCHW network with unfused Adam (baseline)."""
    images = (np.random.default_rng(0).random((batch, size, size)) > 0.75).astype(np.uint8)
    if project:
        cfg = TrainConfig(channels_last=runtime.channels_last, crops=False,
                          precision="bf16" if runtime.bf16 else "fp32", architecture="table1")
        training = prepare_training(images, images, 12, cfg, runtime)
        model, optimizer, x = training.model, training.optimizer, training.x_train
        if stock_layers:
            stock_transposed_convolutions(model)
    else:
        torch.manual_seed(0)
        model = stock_transposed_convolutions(VAE(size, 12).to(runtime.device))
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
            rounds: int, ablation: bool = False, profile: bool = False,
            peer: KerasPeer | None = None) -> dict[str, dict]:
    """Median images/s of each setup (baseline, project, with ``ablation`` the project with
    the stock transposed convolution and with the default allocator, with ``peer`` the
    Keras/TensorFlow step), timed in alternating windows of ``seconds / rounds`` (a shared,
    noisy host slows all alike instead of whichever ran last)."""
    def torch_window(step, kept: bool):
        def timed(window_seconds: float) -> float:
            keep_freed_memory() if kept else default_allocator()
            step()
            return images_per_s(step, batch, window_seconds, project.device)
        return timed

    project_step = prepare(size, batch, project, project=True)
    setups = {"baseline": torch_window(prepare(size, batch, baseline), False),
              "project": torch_window(project_step, True)}
    if ablation:
        setups["project_stock_transposed_conv"] = torch_window(
            prepare(size, batch, project, project=True, stock_layers=True), True)
        setups["project_default_allocator"] = torch_window(project_step, False)
    unavailable = {}
    for config in (peer.configs if peer is not None else []):
        answer = peer.ask(prepare=size, config=config)
        if "error" in answer:
            unavailable[config] = answer["error"]
            print(f"    Keras {config} does not run here: {answer['error']}", flush=True)
            continue
        setups[f"keras_tensorflow_{config}"] = (
            lambda window_seconds, config=config: peer.ask(
                window=size, config=config, seconds=window_seconds)["images_per_s"])
    rates: dict[str, list[float]] = {name: [] for name in setups}
    peaks = []
    for _ in range(rounds):
        for name, timed in setups.items():
            rates[name].append(timed(seconds / rounds))
        peaks.append(matmul_peak(torch.bfloat16 if project.bf16 else torch.float32))
    keep_freed_memory()
    train_flops = 3.0 * forward_flops(VAE(size, 12))  # counted on the CPU, whatever the device
    results = {}
    for name, values in rates.items():
        rate = statistics.median(values)
        results[name] = {"size": size, "batch": batch, "images_per_s": rate,
                         "rounds": [round(r, 2) for r in values],
                         "gflop_per_image": train_flops / 1e9,
                         "gflop_per_s": rate * train_flops / 1e9}
    results["matmul_peak_gflop_per_s"] = max(peaks)
    results["keras_unavailable"] = unavailable
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                project_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    return results


def matmul_peak(dtype: torch.dtype, side: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``side``^3 matrix product in ``dtype`` on this CPU (the best of
    ``repeats``): the roofline that any convolution kernel of the step runs under."""
    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2.0 * side ** 3 / best / 1e9


def layer_table(size: int, batch: int, project: Runtime, seconds: float = 1.0) -> list[dict]:
    """Milliseconds of forward + backward (input and weight gradients; none for the input of
    the first layer, as in training) of each layer of the network alone, on random inputs of
    its training shape: stock fp32 NCHW, stock in the project's precision and layout, and the
    project's layer. Each timing: median of 5 windows of ``seconds``/5."""
    grid = size // 8
    c1, c2, c3 = 64, 128, 256
    layers = [("conv1", lambda: nn.Conv2d(1, c1, 3, 2, 1), (1, size, size)),
              ("conv2", lambda: nn.Conv2d(c1, c2, 3, 2, 1), (c1, size // 2, size // 2)),
              ("conv3", lambda: nn.Conv2d(c2, c3, 3, 2, 1), (c2, size // 4, size // 4)),
              ("dense_encoder", lambda: nn.Linear(c3 * grid * grid, 256), (c3 * grid * grid,)),
              ("dense_decoder", lambda: nn.Linear(12, c3 * grid * grid), (12,)),
              ("tconv1", lambda: ConvTranspose2d(c3, c3, 3, 2, 1, 1), (c3, grid, grid)),
              ("tconv2", lambda: ConvTranspose2d(c3, c2, 3, 2, 1, 1), (c3, 2 * grid, 2 * grid)),
              ("tconv3", lambda: ConvTranspose2d(c2, c1, 3, 2, 1, 1), (c2, 4 * grid, 4 * grid)),
              ("tconv4", lambda: ConvTranspose2d(c1, 1, 3, 1, 1), (c1, size, size))]
    variants = {"stock_fp32_nchw": (False, False, True),
                "stock_project_precision_layout": (project.bf16, project.channels_last, True),
                "project": (project.bf16, project.channels_last, False)}
    rows = []
    for name, build, shape in layers:
        row = {"size": size, "layer": name}
        for variant, (bf16, channels_last, stock) in variants.items():
            torch.manual_seed(0)
            layer = build()
            if stock:
                stock_transposed_convolutions(layer)
            x = torch.randn(batch, *shape)
            if channels_last and x.dim() == 4:
                layer = layer.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_(name != "conv1")
            keep_freed_memory() if not stock else default_allocator()

            def step(layer=layer, x=x, bf16=bf16):
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    y = layer(x)
                y.float().sum().backward()

            for _ in range(2):
                step()
            windows = [1e3 / images_per_s(step, 1, seconds / 5, torch.device("cpu"))
                       for _ in range(5)]
            row[variant] = round(statistics.median(windows), 2)
        rows.append(row)
        print(f"{size} px {name:14s} " + " | ".join(f"{k} {v:7.2f} ms" for k, v in row.items()
                                                   if k not in ("size", "layer")), flush=True)
    keep_freed_memory()
    return rows


class KerasPeer:
    """benchmarks/speed/keras_peer.py --serve run by ``python``: timing windows of the Keras/TensorFlow
    step on request, between the PyTorch ones."""

    def __init__(self, python: str, batch: int, threads: int, configs: list[str]):
        self.configs = configs
        script = Path(__file__).with_name("keras_peer.py")
        self.process = subprocess.Popen(
            [python, str(script), "--serve", "--batch", str(batch), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Keras peer ended (exit status {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per setup")
    parser.add_argument("--rounds", type=int, default=4, help="alternating timing windows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--layers", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--peer-python", default=None,
                        help="a Python with TensorFlow for the Keras peer (default: this one, "
                             "where it has TensorFlow)")
    parser.add_argument("--peer-configs", nargs="+",
                        default=["fp32", "mixed_bfloat16", "fp32_xla", "mixed_bfloat16_xla"],
                        help="the Keras configurations to time (keras_peer.py CONFIGS)")
    parser.add_argument("--tag", default="", help="suffix of the result file")
    args = parser.parse_args()
    peer_python = args.peer_python
    if peer_python is None and importlib.util.find_spec("tensorflow") is not None:
        peer_python = sys.executable
    if peer_python is None:
        print("TensorFlow is not installed here: no Keras/TensorFlow column (pip install -e "
              "'.[bench]', or --peer-python with a Python that has it)")
    if args.device != "cpu":
        peer_python = None
    baseline = Runtime(torch.device(args.device), bf16=False, channels_last=False)
    project = select_runtime(args.device, "auto", True, args.threads)
    precision = "bf16" if project.bf16 else "fp32"
    peer = (KerasPeer(peer_python, args.batch, args.threads, args.peer_configs)
            if peer_python else None)
    rows = []
    for size in args.sizes:
        setups = compare(size, args.batch, baseline, project, args.seconds, args.rounds,
                         args.ablation, args.profile, peer)
        peak = setups.pop("matmul_peak_gflop_per_s")
        unavailable = setups.pop("keras_unavailable")
        base, ours = setups["baseline"], setups["project"]
        row = {"size": size, "baseline_stock_fp32_nchw": base,
               "project": {**ours, "precision": precision,
                           "channels_last": project.channels_last},
               "ratio": ours["images_per_s"] / base["images_per_s"],
               "matmul_peak_gflop_per_s": peak, "keras_unavailable": unavailable,
               "project_share_of_peak": ours["gflop_per_s"] / peak,
               **{name: value for name, value in setups.items()
                  if name not in ("baseline", "project")}}
        print(f"{size} px, batch {args.batch}: stock fp32 NCHW {base['images_per_s']:.1f} img/s "
              f"({base['gflop_per_s']:.0f} GFLOP/s) | project ({precision}) "
              f"{ours['images_per_s']:.1f} img/s ({ours['gflop_per_s']:.0f} GFLOP/s) | ratio "
              f"{row['ratio']:.2f}x | {ours['gflop_per_image']:.2f} GFLOP per image per step | "
              f"{precision} matmul peak {peak:.0f} GFLOP/s, project at {row['project_share_of_peak']:.0%}",
              flush=True)
        for name in setups:
            if name.startswith("project_"):
                print(f"    {name}: {setups[name]['images_per_s']:.1f} img/s", flush=True)
        if peer is not None:
            ran = [config for config in peer.configs if config not in unavailable]
            version = peer.ask(prepare=size, config=ran[0])["tensorflow"]
            for config in ran:
                keras = setups[f"keras_tensorflow_{config}"]
                keras["tensorflow"] = version
                paired = [a / b for a, b in zip(ours["rounds"], keras["rounds"])]
                keras["project_over"] = ours["images_per_s"] / keras["images_per_s"]
                keras["project_over_per_round"] = [round(r, 3) for r in paired]
                print(f"    Keras/TensorFlow {version} {config} {keras['images_per_s']:.1f} "
                      f"img/s | project / it {keras['project_over']:.2f}x (per round "
                      f"{min(paired):.2f}-{max(paired):.2f}x)", flush=True)
            best = max(ran,
                       key=lambda c: setups[f"keras_tensorflow_{c}"]["images_per_s"])
            keras = setups[f"keras_tensorflow_{best}"]
            row["best_keras"] = best
            row["project_over_keras"] = keras["project_over"]
            row["project_over_keras_per_round"] = keras["project_over_per_round"]
            row["best_keras_share_of_peak"] = keras["gflop_per_s"] / peak
            row["share_of_peak_for_1_3x"] = 1.3 * keras["gflop_per_s"] / peak
            row["share_of_peak_for_1_5x"] = 1.5 * keras["gflop_per_s"] / peak
            print(f"    best Keras: {best}, at {row['best_keras_share_of_peak']:.0%} of the peak; "
                  f"1.3x / 1.5x it need {row['share_of_peak_for_1_3x']:.0%} / "
                  f"{row['share_of_peak_for_1_5x']:.0%} of the peak", flush=True)
        if args.layers:
            row["layers_ms"] = layer_table(size, args.batch, project)
            if peer is not None:
                row["keras_layers_ms"] = peer.ask(layers=size)["layers_ms"]
                for layer, ms in row["keras_layers_ms"].items():
                    print(f"{size} px Keras {layer:14s} {ms:7.2f} ms", flush=True)
        rows.append(row)
    if peer is not None:
        peer.close()
    save("train_throughput" + ("_cuda" if args.device == "cuda" else "") + args.tag,
         {"rows": rows})


if __name__ == "__main__":
    main()
