"""Where a model runs and in what precision: ``pick_device`` and ``pick_dtype``.

Its own module because both the Embedder and the int8 path (``fastest_dtype``) decide by device,
and neither should import the other for it.
"""

from __future__ import annotations

import torch


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; ValueError for a device this machine does not have."""
    if device != "auto":
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N, mps") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} is not available here (no CUDA GPU, or torch built without CUDA); "
                             "use --device cpu or auto")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA GPUs")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r} is not available here; use --device cpu or auto")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_flags() -> set[str]:
    """The instruction-set flags of this machine's CPU (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul instructions (AVX-512 BF16 or AMX); without them a bf16
    matmul is emulated (measured 50x slower than fp32 on an AVX2-only EPYC, BENCHMARKS.md)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8_dot() -> bool:
    """True when the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX), which make the int8
    path faster than float32; on plain AVX2 it measured no faster (BENCHMARKS.md, "The int8 CPU path")."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def pick_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto``: bf16 where the hardware runs it well (CUDA with bf16, CPUs with AVX-512 BF16/AMX), else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    named = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype != "auto":
        try:
            return named[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; valid: auto, int8, {', '.join(named)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


__all__ = ["cpu_flags", "cpu_has_fast_bf16", "cpu_has_int8_dot", "pick_device", "pick_dtype"]
