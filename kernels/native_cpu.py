"""Native CPU kernels (`native_cpu.cpp`): build once with the system C++ compiler, call by ctypes.

Decode attention: the torch reference (`attention._decode`) gathers each decode row's K/V into a
padded batch and runs SDPA over it; this kernel reads the keys in place through the ReqToToken table, once. Measured
on 2 cores (batch 32, 180..370 keys, 30 layers, distinct buffers per layer): ~21 ms per step
against ~35 ms for the reference in bf16, ~26 ms against ~120 ms in fp32.

Elementwise glue of the Llama layer (`add_rms_norm`, `silu_mul`, `rope`): on CPU at decode sizes
([32, 576] bf16) each torch op costs 10-60 us of dispatch and temporaries, and `F.rms_norm` in bf16
is ~8 of them (~160 us per call, ~10 ms per batch-32 step); one fused pass costs a few us. Each
rounds to the storage dtype where transformers' ops do, so they are exact stand-ins: the torch
references are `TorchOps` in `runtime/models/llama.py`, and tests compare the two.

Built lazily on first use into `<cache_dir>/kernels/` (file name from a hash of the source, the
flags, the compiler and the CPU's feature flags, since it is built with -march=native) with no torch
headers and no ninja: a plain `g++ -shared`, ~3 s. Loaded after torch, so its OpenMP calls bind to
the libgomp torch already loaded (same soname): one thread pool, not two. If there is no compiler or
the build fails, `load()` returns None with the reason in `load_error()`, and callers keep the
torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("native_cpu.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC", "-std=c++17"]
KIND = {torch.float32: 0, torch.bfloat16: 1}  # dtypes the kernel reads and writes

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": ctypes.CDLL | None, "error": str


def _cpu_flags() -> str:
    """The CPU's feature flags (the build uses -march=native); the processor name where there is no
    /proc/cpuinfo."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line for line in lines if line.startswith("flags")), platform.processor())


def _build(cache_dir: str, flags: list[str] = FLAGS) -> Path:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler {cxx!r} on PATH (set CXX)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256("\n".join([SOURCE.read_text(), " ".join(flags), version, _cpu_flags()]).encode()).hexdigest()
    out_dir = Path(cache_dir) / "kernels"
    lib = out_dir / f"native_cpu-{key[:16]}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    proc = subprocess.run([cxx, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"{cxx} failed to build {SOURCE.name}: {proc.stderr.strip()[-2000:]}")
    os.replace(tmp, lib)  # atomic: concurrent builders never load a half-written file
    return lib


def open_library(path: Path) -> ctypes.CDLL:
    """dlopen a built library and declare its C signatures (all return 0 or an error code)."""
    lib = ctypes.CDLL(str(path))
    ptr, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    signatures = {
        "arborlm_decode_attention": [i32, ptr, i64, ptr, ptr, ptr, i64, ptr, ptr, i64, i64, i64, i64, f32, ptr, i64, i32],
        "arborlm_add_rms_norm": [i32, ptr, ptr, ptr, ptr, i64, i64, f32, i32],
        "arborlm_silu_mul": [i32, ptr, ptr, i64, i64, i32],
        "arborlm_rope": [i32, ptr, i64, i64, i64, i64, ptr, ptr, ptr, i32],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return lib


def load(cache_dir: str) -> ctypes.CDLL | None:
    """The built library, or None (see `load_error()`); builds at most once per process."""
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"] = open_library(_build(cache_dir))
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                _state["lib"] = None
                _state["error"] = str(exc)
        return _state["lib"]  # type: ignore[return-value]


def load_error() -> str | None:
    return _state.get("error")  # type: ignore[return-value]


def supports(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype in KIND


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"native {what} failed (code {rc})")


def decode_attention(
    lib: ctypes.CDLL,
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    table: torch.Tensor,
    rows: torch.Tensor,
    lens: torch.Tensor,
    max_len: int,
    scale: float,
) -> torch.Tensor:
    """q `[n, H, D]` (heads contiguous; rows may be strided), buffers `[num_slots, Hkv, D]` contiguous,
    table `[R, C]` int32 contiguous, rows/lens `[n]` int64 (1 <= lens[i] <= C). Returns `[n, H, D]`:
    row i attends to keys `table[rows[i], :lens[i]]`."""
    n, num_heads, head_dim = q.shape
    num_kv = k_buffer.shape[1]
    if num_heads % num_kv or k_buffer.shape[2] != head_dim or v_buffer.shape != k_buffer.shape:
        raise ValueError(f"q {tuple(q.shape)} does not fit K/V buffers {tuple(k_buffer.shape)}, {tuple(v_buffer.shape)}")
    if q.stride(2) != 1 or q.stride(1) != head_dim:
        q = q.contiguous()
    for name, t in (("k_buffer", k_buffer), ("v_buffer", v_buffer), ("table", table), ("rows", rows), ("lens", lens)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if q.dtype not in KIND or k_buffer.dtype != q.dtype or v_buffer.dtype != q.dtype:
        raise ValueError(f"dtypes q={q.dtype}, k={k_buffer.dtype}, v={v_buffer.dtype}: need one of {list(KIND)} for all")
    if table.dtype != torch.int32 or rows.dtype != torch.int64 or lens.dtype != torch.int64:
        raise ValueError("table must be int32, rows and lens int64")
    out = torch.empty(n, num_heads, head_dim, dtype=q.dtype)
    rc = lib.arborlm_decode_attention(
        KIND[q.dtype], q.data_ptr(), q.stride(0), k_buffer.data_ptr(), v_buffer.data_ptr(),
        table.data_ptr(), table.stride(0), rows.data_ptr(), lens.data_ptr(),
        n, num_heads, num_kv, head_dim, scale, out.data_ptr(), max_len, torch.get_num_threads(),
    )  # fmt: skip
    _check(rc, "decode attention")
    return out


def _rows_contiguous(name: str, t: torch.Tensor) -> None:
    if t.dim() != 2 or t.stride(1) != 1 or t.stride(0) != t.shape[1]:
        raise ValueError(f"{name} must be a contiguous 2-D tensor, got shape {tuple(t.shape)} strides {t.stride()}")


def add_rms_norm(
    lib: ctypes.CDLL, h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """h `[T, n]` is updated in place to `h + delta` (when delta is given); returns
    `rms_norm(h) * weight` `[T, n]`, rounded as transformers' LlamaRMSNorm rounds it."""
    _rows_contiguous("h", h)
    if delta is not None:
        _rows_contiguous("delta", delta)
        if delta.shape != h.shape or delta.dtype != h.dtype:
            raise ValueError(f"delta {tuple(delta.shape)} {delta.dtype} does not match h {tuple(h.shape)} {h.dtype}")
    if h.dtype not in KIND or weight.dtype != h.dtype or not weight.is_contiguous() or weight.numel() != h.shape[1]:
        raise ValueError(f"h {h.dtype} and weight {weight.dtype} [{weight.numel()}] must share a dtype in {list(KIND)}")
    x = torch.empty_like(h)
    rc = lib.arborlm_add_rms_norm(
        KIND[h.dtype], h.data_ptr(), None if delta is None else delta.data_ptr(), weight.data_ptr(), x.data_ptr(),
        h.shape[0], h.shape[1], eps, torch.get_num_threads(),
    )  # fmt: skip
    _check(rc, "add_rms_norm")
    return x


def silu_mul(lib: ctypes.CDLL, gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up `[T, 2 * I]` (gate then up) -> `silu(gate) * up` `[T, I]`."""
    _rows_contiguous("gate_up", gate_up)
    if gate_up.dtype not in KIND or gate_up.shape[1] % 2:
        raise ValueError(f"gate_up must be {list(KIND)} with an even width, got {gate_up.dtype} {tuple(gate_up.shape)}")
    rows, inter = gate_up.shape[0], gate_up.shape[1] // 2
    y = torch.empty(rows, inter, dtype=gate_up.dtype)
    _check(lib.arborlm_silu_mul(KIND[y.dtype], gate_up.data_ptr(), y.data_ptr(), rows, inter, torch.get_num_threads()), "silu_mul")
    return y


def rope_(
    lib: ctypes.CDLL, x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor, positions: torch.Tensor
) -> None:
    """In place: x `[T, heads, D]` (heads and D contiguous; rows may be strided, e.g. the q|k part of
    the fused qkv output) becomes `x * cos[pos] + rotate_half(x) * sin[pos]`; tables `[P, D]`, with
    rotate_half's sign folded into `sin_signed`; positions `[T]` int64 (< P)."""
    rows, heads, d = x.shape
    if x.stride(2) != 1 or x.stride(1) != d or d % 2:
        raise ValueError(f"x must have contiguous heads of even size, got strides {x.stride()} for {tuple(x.shape)}")
    if x.dtype not in KIND or cos.dtype != x.dtype or sin_signed.dtype != x.dtype:
        raise ValueError(f"x {x.dtype} and the tables must share a dtype in {list(KIND)}")
    if not (cos.is_contiguous() and sin_signed.is_contiguous()) or cos.shape[1] != d or sin_signed.shape != cos.shape:
        raise ValueError("cos/sin tables must be contiguous [P, D]")
    if positions.dtype != torch.int64 or not positions.is_contiguous() or positions.numel() != rows:
        raise ValueError("positions must be a contiguous int64 tensor with one entry per row")
    rc = lib.arborlm_rope(
        KIND[x.dtype], x.data_ptr(), x.stride(0), rows, heads, d, cos.data_ptr(), sin_signed.data_ptr(),
        positions.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    _check(rc, "rope")
