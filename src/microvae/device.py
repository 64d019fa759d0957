"""Choice of device, precision and threads for training and inference."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
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


# oneDNN ISA limits below native bf16 (ONEDNN_MAX_CPU_ISA): such a process emulates bf16.
_ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                             "AVX512_CORE_VNNI")


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX) and this process may use
    it; elsewhere PyTorch emulates it, which was 10x slower than fp32 on an AVX2-only CPU. A
    process held to AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``)
    counts as AVX2-only, whatever the CPU."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if not any(getattr(torch.cpu, name, lambda: False)() for name in checks):
        return False
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return False
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() not in _ONEDNN_ISAS_WITHOUT_BF16


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next allocation instead of returning it
    to the kernel. By default every block over 32 MB (the activations of a training step at
    64 px and more) is mapped afresh and zeroed page by page on first touch: 25 000 page faults
    per step at 64 px; keeping them made the step 6% / 14% faster at 64 / 128 px
    (benchmarks/speed/train_throughput.py --ablation). The
    process then holds its peak memory until it ends, as a caching allocator does. Returns
    False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 30))


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
    if device == "cpu":
        keep_freed_memory()
    if precision == "auto":
        bf16 = device == "cuda" or cpu_has_fast_bf16()
    elif precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"
    else:
        raise MicrovaeError(f"train.precision: unknown precision {precision!r}")
    return Runtime(torch.device(device), bf16, channels_last)
