import os
import subprocess
import sys
import textwrap

import pytest
import torch

from microvae import device
from microvae.device import select_runtime


def test_bf16_only_where_the_process_may_use_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert device.cpu_has_fast_bf16()
    assert select_runtime("cpu", "auto").bf16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN held to AVX2 kernels
    assert not device.cpu_has_fast_bf16()
    assert not select_runtime("cpu", "auto").bf16
    assert select_runtime("cpu", "bf16").bf16  # asked for: given
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert device.cpu_has_fast_bf16()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not device.cpu_has_fast_bf16()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not device.cpu_has_fast_bf16()


def glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not glibc(), reason="glibc's malloc only")
def test_kept_memory_ends_the_page_faults_of_large_tensors():
    """A fresh process allocating and touching a 64 MB tensor again and again: with glibc's
    defaults each one is mapped afresh (16 384 page faults of 4 KiB), with the memory kept
    nearly none after the first."""
    script = textwrap.dedent("""
        import resource, sys, torch
        from microvae.device import keep_freed_memory
        if sys.argv[1] == "kept":
            assert keep_freed_memory()
        for _ in range(2):
            torch.ones(16 * 2 ** 20)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            torch.ones(16 * 2 ** 20)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    """)
    faults = {mode: float(subprocess.run([sys.executable, "-c", script, mode], check=True,
                                         capture_output=True, text=True).stdout)
              for mode in ("default", "kept")}
    assert faults["default"] > 8000
    assert faults["kept"] < 100
