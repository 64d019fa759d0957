"""Choice of device, precision and threads for training and inference."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import MicrovaeError


@dataclass(frozen=True)
class Runtime:
    """Where and how the network runs."""

    device: torch.device
    bf16: bool
    channels_last: bool

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere PyTorch
    emulates it, which was 10x slower than fp32 on an AVX2-only CPU."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def select_runtime(device: str = "auto", precision: str = "auto", channels_last: bool = True,
                   threads: int | None = None) -> Runtime:
    """Resolve ``device`` (auto|cpu|cuda) and ``precision`` (auto|fp32|bf16) to a Runtime.

    ``auto`` precision means bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere.
    ``threads`` sets PyTorch's intra-op threads (the rule's ``threads``).
    """
    if threads:
        torch.set_num_threads(int(threads))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MicrovaeError("train.device: 'cuda' requested but no CUDA GPU is visible "
                            "(use 'auto' to fall back to the CPU)")
    if device not in ("cpu", "cuda"):
        raise MicrovaeError(f"train.device: unknown device {device!r}")
    if precision == "auto":
        bf16 = device == "cuda" or cpu_has_fast_bf16()
    elif precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"
    else:
        raise MicrovaeError(f"train.precision: unknown precision {precision!r}")
    return Runtime(torch.device(device), bf16, channels_last)
