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
@pytest.mark.slow
def test_kept_memory_ends_the_page_faults_of_training_steps():
    """Fresh processes run training steps of the 64 px network (fp32, batch 32: activations of
    32 MB and more): with glibc's defaults every step maps them afresh and faults on each
    page (~50 000 faults), with the memory kept nearly none after the first steps. The median
    over 5 steps: the kernel may still unmap pages now and then."""
    script = textwrap.dedent("""
        import resource, sys, torch
        from microvae.device import keep_freed_memory
        from microvae.model import VAE
        torch.set_num_threads(1)
        if sys.argv[1] == "kept":
            assert keep_freed_memory()
        torch.manual_seed(0)
        model = VAE(64, 4)
        x = (torch.rand(32, 1, 64, 64) > 0.7).float()
        def step():
            logits, *_ = model(x)
            torch.nn.functional.binary_cross_entropy_with_logits(logits, x).backward()
        faults = []
        for i in range(7):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            step()
            if i >= 2:
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(sorted(faults)[2])
    """)
    faults = {mode: float(subprocess.run([sys.executable, "-c", script, mode], check=True,
                                         capture_output=True, text=True).stdout)
              for mode in ("default", "kept")}
    assert faults["default"] > 8000
    assert faults["kept"] < faults["default"] / 20
