"""What this CPU is and which of its instruction-set flags matter to our kernels (torch-free)."""

from __future__ import annotations

import functools
import platform

# Flags that change which kernels run (bf16 matmul units, int8 dot products, AVX widths).
KERNEL_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_bf16", "amx_int8")


@functools.cache
def _cpuinfo_first_cpu() -> dict[str, str]:
    """`/proc/cpuinfo`'s fields for the first CPU ({} where there is no such file)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    return _cpuinfo_first_cpu().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo_first_cpu().get("flags", "").split())


def kernel_flags() -> list[str]:
    """The KERNEL_FLAGS this CPU has, in KERNEL_FLAGS order."""
    flags = cpu_flags()
    return [f for f in KERNEL_FLAGS if f in flags]


def has_fast_bf16() -> bool:
    """Native bf16 matmul: AMX or AVX512-BF16."""
    return not cpu_flags().isdisjoint({"amx_bf16", "avx512_bf16"})
