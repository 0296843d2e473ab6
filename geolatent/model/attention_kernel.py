"""CPU attention from a small C kernel: exact fp32 (AVX2/FMA or AVX-512) and bf16 (AVX512_BF16).

Why: at head width 16 (Nano) PyTorch's fused CPU attention spends most of its time moving score
blocks through memory; ``csrc/attention_f32.c`` keeps a 6-query x 512-key tile in registers
and L1 and runs 1.5-1.8x faster at the same fp32 results (see BENCHMARKS.md). It serves
inference only (no autograd); training and GPUs use ``scaled_dot_product_attention``.

The source builds three variants, chosen at run time by the CPU's features: ``avx512_bf16``
(the AVX-512 build plus bf16 attention, CPUs with AVX512_BF16: Zen 4+, Cooper Lake,
Sapphire Rapids+), ``avx512`` (16-lane vectors, CPUs with AVX-512 F) and ``avx2`` (8-lane,
AVX2 + FMA). ``GEOLATENT_ATTENTION_ISA`` (``auto`` | ``avx512_bf16`` | ``avx512`` | ``avx2``)
forces one, for tests and benchmarks; a variant the CPU lacks is an error naming the missing
feature. ``kernel_isa()`` reports the one in use. bf16 attention runs in the bf16 kernel only
where the chosen variant is ``avx512_bf16`` (:func:`can_use`); otherwise callers upcast to
the fp32 kernel.

The C file is compiled with the system C compiler (``$CC``, else ``cc``) into a cache directory
(``$GEOLATENT_CACHE_DIR``, else ``$XDG_CACHE_HOME/geolatent``, else ``~/.cache/geolatent``),
keyed by the source and flags, written atomically so concurrent processes can share it.

``GEOLATENT_ATTENTION`` chooses the backend: ``auto`` (default: the kernel where the CPU has
AVX2 + FMA and a compiler exists, else SDPA with one logged warning saying why), ``kernel``
(an error when it cannot be used) or ``sdpa``. ``attention_backend()`` reports the choice.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from geolatent.runtime import cpu_has

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "attention_f32.c"
FLAGS = ["-O3", "-mavx2", "-mfma", "-std=c11", "-fPIC", "-shared", "-fopenmp"]
# Variant -> (extra compiler flags, CPU features it needs, /proc/cpuinfo names).
ISA_FLAGS = {
    "avx512_bf16": ["-DGL_AVX512", "-DGL_BF16", "-mavx512f", "-mavx512bw", "-mavx512bf16"],
    "avx512": ["-DGL_AVX512", "-mavx512f"],
    "avx2": [],
}
ISA_NEEDS = {
    "avx512_bf16": ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"),
    "avx512": ("avx2", "fma", "avx512f"),
    "avx2": ("avx2", "fma"),
}
ISAS = ("auto", "avx512_bf16", "avx512", "avx2")
HEAD_DIMS = (16, 32, 48, 64)
DTYPES = {torch.float32: 0, torch.bfloat16: 1}  # the C entry point's dtype codes
BACKENDS = ("auto", "kernel", "sdpa")


class KernelUnavailable(RuntimeError):
    """The C attention kernel cannot be built or used on this machine."""


_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}  # per variant: a process may use both (tests, benchmarks)
_unavailable: dict[str, str] = {}
_warned_variants: set[str] = set()
_last_isa: str | None = None
_warned = False


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    if os.environ.get("GEOLATENT_CACHE_DIR"):
        return Path(os.environ["GEOLATENT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geolatent"


def _cpu_has_avx2_fma() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64") and cpu_has("avx2", "fma")


def requested_isa() -> str:
    """The value of ``GEOLATENT_ATTENTION_ISA`` (``auto`` when unset)."""
    name = os.environ.get("GEOLATENT_ATTENTION_ISA", "auto").strip().lower() or "auto"
    if name not in ISAS:
        raise ValueError(f"GEOLATENT_ATTENTION_ISA={name!r}: expected one of {', '.join(ISAS)}")
    return name


def supported_isas() -> list[str]:
    """Kernel variants this CPU can run, fastest first."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    return [isa for isa in ISAS[1:] if cpu_has(*ISA_NEEDS[isa])]


def _choose_isa() -> str:
    name, have = requested_isa(), supported_isas()
    if name == "auto":
        if not have:
            raise KernelUnavailable("this CPU has no AVX2 + FMA")
        return have[0]
    if name not in have:
        missing = [f.upper() for f in ISA_NEEDS[name] if not cpu_has(f)]
        raise KernelUnavailable(
            f"GEOLATENT_ATTENTION_ISA={name}: this CPU lacks {', '.join(missing)}"
        )
    return name


def _build(isa: str = "avx2") -> Path:
    compiler = os.environ.get("CC", "cc")
    flags = FLAGS + ISA_FLAGS[isa]
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *flags]).encode()).hexdigest()
    target_dir = cache_dir()
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        target_dir = Path(tempfile.gettempdir()) / f"geolatent-{os.getuid()}"
        target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"attention_{isa}-{key[:16]}.so"
    if target.exists():
        return target
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target_dir)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp],
                              capture_output=True, text=True, check=False)  # fmt: skip
    except OSError as exc:
        os.unlink(tmp)
        raise KernelUnavailable(f"no C compiler ({compiler}): {exc}") from exc
    if proc.returncode != 0:
        os.unlink(tmp)
        raise KernelUnavailable(f"compiling {SOURCE.name} failed:\n{proc.stderr.strip()}")
    os.replace(tmp, target)  # atomic: a concurrent process sees the old name or a whole file
    return target


def _load() -> ctypes.CDLL:
    """The library of the chosen variant. Under ``auto`` a variant that does not build here (a
    compiler without ``-mavx512bf16``, say) gives way to the next one, with one warning."""
    global _last_isa
    first = _choose_isa()  # raises when no variant can run on this CPU
    chain = supported_isas() if requested_isa() == "auto" else [first]
    with _lock:
        for isa in chain[:-1]:
            try:
                lib = _load_variant(isa)
            except KernelUnavailable as exc:
                if isa not in _warned_variants:
                    _warned_variants.add(isa)
                    log.warning("attention kernel variant %s unavailable (%s); trying the next",
                                isa, exc)  # fmt: skip
                continue
            _last_isa = isa
            return lib
        lib = _load_variant(chain[-1])
        _last_isa = chain[-1]
        return lib


def _load_variant(isa: str) -> ctypes.CDLL:
    """Builds (once, cached) and loads one variant; the caller holds ``_lock``."""
    if isa in _libs:
        return _libs[isa]
    if isa in _unavailable:
        raise KernelUnavailable(_unavailable[isa])
    try:
        lib = ctypes.CDLL(str(_build(isa)))
    except (KernelUnavailable, OSError) as exc:
        _unavailable[isa] = str(exc)
        raise KernelUnavailable(_unavailable[isa]) from exc
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.gl_attention.argtypes = (
        [ctypes.c_int] + [ptr, i64, i64, i64] * 4 + [ptr, i64] + [i64] * 5
        + [ctypes.c_float, ctypes.c_int]
    )  # fmt: skip
    lib.gl_attention.restype = ctypes.c_int
    _libs[isa] = lib
    return lib


def kernel_isa() -> str | None:
    """``avx512_bf16`` / ``avx512`` / ``avx2``: the variant last used (None before any use or
    when unavailable)."""
    return _last_isa


def requested_backend() -> str:
    """The value of ``GEOLATENT_ATTENTION`` (``auto`` when unset)."""
    name = os.environ.get("GEOLATENT_ATTENTION", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"GEOLATENT_ATTENTION={name!r}: expected one of {', '.join(BACKENDS)}")
    return name


def attention_backend() -> str:
    """``"kernel"`` or ``"sdpa"``: what CPU fp32 inference attention uses here and why."""
    try:
        return "kernel" if kernel_enabled() else "sdpa (GEOLATENT_ATTENTION=sdpa)"
    except KernelUnavailable as exc:
        return f"sdpa (kernel unavailable: {exc})"


def kernel_enabled() -> bool:
    """Whether CPU fp32 inference attention should go through the kernel.

    Raises ``KernelUnavailable`` when ``GEOLATENT_ATTENTION=kernel`` and it cannot be built.
    """
    global _warned
    name = requested_backend()
    if name == "sdpa":
        return False
    try:
        _load()
    except KernelUnavailable as exc:
        if name == "kernel":
            raise
        if not _warned:
            _warned = True
            log.warning("fast CPU attention kernel unavailable (%s); using PyTorch SDPA, "
                        "same results, slower", exc)  # fmt: skip
        return False
    return True


def can_use(q: torch.Tensor) -> bool:
    """Whether ``attention`` applies: CPU tensors, no autograd, a supported head width, the
    kernel enabled, and float32, or bfloat16 where the variant in use is ``avx512_bf16`` (the
    CPU has AVX512_BF16 and ``GEOLATENT_ATTENTION_ISA`` does not force another variant)."""
    return (
        q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.bfloat16)
        and not torch.is_grad_enabled()
        and q.shape[-1] in HEAD_DIMS
        and kernel_enabled()
        and (q.dtype == torch.float32 or _last_isa == "avx512_bf16")
    )


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head, in the dtype of ``q``, ``k`` and ``v``.

    float32: exact (error at PyTorch's own level). bfloat16 (the ``avx512_bf16`` variant):
    AVX512_BF16 dot products for q k^T and P v with fp32 scores, softmax and sums; the
    probabilities are rounded to bf16 for P v and the output to bf16 (tested: per-row cosine to
    the fp32 kernel on the same bf16 inputs >= 0.9999, max abs difference <= 2e-2 on
    unit-variance inputs). Memory O((Nq + Nk) d) either way: no N x N matrix.

    Args:
        q: ``[B, Nq, H, d]`` float32 or bfloat16 CPU, any strides with a contiguous last axis.
        k, v: ``[B, Nk, H, d]`` likewise, the same dtype.
        key_valid: optional bool ``[B, Nk]``; False keys get no weight. A query whose keys are
            all invalid gets zeros.

    Returns:
        ``[B, Nq, H, d]`` contiguous in the inputs' dtype, so ``.view(B, Nq, H * d)`` feeds the
        output projection.

    Raises:
        KernelUnavailable: bfloat16 inputs while the variant in use is not ``avx512_bf16`` (a
            CPU without AVX512_BF16, or ``GEOLATENT_ATTENTION_ISA`` forcing another);
            :func:`can_use` says so beforehand.
    """
    lib = _load()
    if q.dtype == torch.bfloat16 and _last_isa != "avx512_bf16":
        raise KernelUnavailable(
            f"bf16 attention needs the avx512_bf16 kernel variant; this process uses {_last_isa} "
            "(GEOLATENT_ATTENTION_ISA, or a CPU without AVX512_BF16): upcast to float32"
        )
    return _run(lib.gl_attention, q, k, v, key_valid)


def _run(fn, q, k, v, key_valid) -> torch.Tensor:
    """Checks shapes and dtypes and calls the C entry point ``fn``."""
    b, nq, h, d = q.shape
    nk = k.shape[1]
    if k.shape != (b, nk, h, d) or v.shape != k.shape:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} disagree")
    if d not in HEAD_DIMS:
        raise ValueError(f"head width {d} is not one of {HEAD_DIMS}")
    tensors, dtype = (q, k, v), q.dtype
    if dtype not in DTYPES or any(t.dtype != dtype or t.device.type != "cpu" for t in tensors):
        got = ", ".join(str(t.dtype) for t in tensors)
        raise ValueError(f"the attention kernel takes float32 (or bfloat16) CPU tensors, all "
                         f"three alike; got {got}")  # fmt: skip
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in tensors)
    out = torch.empty((b, nq, h, d), dtype=dtype)
    if key_valid is not None:
        if key_valid.shape != (b, nk):
            raise ValueError(f"key_valid {tuple(key_valid.shape)} should be {(b, nk)}")
        key_valid = key_valid.to(device="cpu", dtype=torch.uint8).contiguous()
    if out.numel() == 0:
        return out

    def strides(t: torch.Tensor) -> list:
        return [t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)]

    status = fn(
        DTYPES[dtype], *strides(q), *strides(k), *strides(v), *strides(out),
        None if key_valid is None else key_valid.data_ptr(), nk,
        b, h, nq, nk, d, float(d) ** -0.5, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"attention kernel failed with status {status}")
    return out
