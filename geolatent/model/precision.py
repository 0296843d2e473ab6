"""Reduced-precision inference for the encoder: ``fp32`` (exact) | ``bf16`` | ``int8`` | ``auto``.

- ``fp32``: the model as trained; CPU attention through the exact AVX2 / AVX-512 kernel.
- ``bf16``: the transformer blocks and the final norm hold bf16 weights and run on bf16
  activations (oneDNN matmuls on CPUs with AVX512_BF16 or AMX, tensor cores on GPUs);
  attention on CPU is geolatent's bf16 kernel (AVX512_BF16, fp32 softmax), on GPUs PyTorch's
  fused flash kernel (both blocked online softmax, never an ``N x N`` score matrix). Patch
  embedding, encodings, pooling and the contrastive head stay fp32 (under 1 % of the work)
  so that outputs are fp32 and missing-token zeros stay exact.
- ``int8``: every linear of the blocks holds int8 weights (per-channel scales) and quantizes
  its input per call (dynamic activation quantization, PyTorch's fbgemm / x86 / qnnpack
  engines); layer norms, GELU, softmax and attention stay fp32 (attention through the fp32
  kernel). CPU only.
- ``auto``: bf16 on a GPU or on a CPU with bf16 units (AMX-BF16 or AVX512_BF16), else int8 on
  a CPU with AVX2 (or an ARM CPU), else fp32. :func:`resolve_precision` says which and why.

Measured accuracy and speed: docs/precision.md and benchmarks/precision.py.

Conversion is in place (:func:`set_precision`) for models a command loads for itself, and
through a cached converted copy (:func:`encoder_at`) when ``embed`` is asked for another
precision than the model holds, so the caller's fp32 model is never changed.
"""

from __future__ import annotations

import copy
import logging
import types
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from geolatent.model import attention_kernel
from geolatent.model.attention import INFERENCE_ROWS, Attention, Block
from geolatent.runtime import cpu_has, cpu_info

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8", "auto")
_ATTR = "_geolatent_precision"
_CACHE = "_geolatent_precision_copies"


class PrecisionError(ValueError):
    """A precision this machine cannot run; the message names the missing CPU feature."""


@dataclass(frozen=True)
class Resolved:
    """The precision that will run and why (for logs and run reports)."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def _bf16_units() -> list[str]:
    return [f for f in ("amx_bf16", "avx512_bf16") if cpu_has(f)]


def _int8_engine() -> str | None:
    """The quantized engine for int8 linears on this CPU, or None."""
    engines = torch.backends.quantized.supported_engines
    info = cpu_info()
    if info.arch in ("x86_64", "amd64"):
        if not cpu_has("avx2"):
            return None
        return next((e for e in ("x86", "fbgemm", "onednn") if e in engines), None)
    return "qnnpack" if "qnnpack" in engines else None


def resolve_precision(
    precision: str = "fp32", device: str | torch.device = "cpu", option: str = "precision"
) -> Resolved:
    """Check ``precision`` against this machine; ``auto`` becomes the fastest supported path.

    Args:
        precision: ``fp32`` | ``bf16`` | ``int8`` | ``auto``.
        device: where the encoder runs.
        option: how the user spelled the setting (``--precision`` in the CLI): errors name it.

    Raises:
        PrecisionError: an unknown name, or a path this CPU / device cannot run (the message
            names the missing CPU feature and what to use instead).
    """
    name = (precision or "fp32").strip().lower()
    if name not in PRECISIONS:
        raise PrecisionError(f"{option} {precision!r}: expected one of {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    model = cpu_info().model
    if dev.type == "cuda":
        if name == "int8":
            raise PrecisionError(
                f"{option} int8 is a CPU path (dynamic int8 linears); on a GPU use bf16 or fp32"
            )
        if name == "auto":
            return Resolved("bf16", "auto: GPU")
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            raise PrecisionError(f"{option} bf16: {torch.cuda.get_device_name(dev)} has no bf16 "
                                 "support (compute capability 8.0+); use fp32")  # fmt: skip
        return Resolved(name, "requested")
    if dev.type != "cpu":
        if name in ("fp32", "auto"):
            return Resolved("fp32", "requested" if name == "fp32" else f"auto: {dev.type}")
        raise PrecisionError(f"{option} {name} is supported on CPU and CUDA, not {dev.type}")
    units = _bf16_units()
    if name == "auto":
        if units:
            return Resolved("bf16", f"auto: CPU has {', '.join(u.upper() for u in units)}")
        if _int8_engine():
            return Resolved("int8", "auto: CPU has no bf16 units; int8 linears with "
                                    f"{_int8_engine()}")  # fmt: skip
        return Resolved("fp32", "auto: CPU has neither bf16 units nor AVX2 for int8")
    if name == "bf16" and not units:
        raise PrecisionError(
            f"{option} bf16 needs a CPU with AMX-BF16 or AVX512_BF16 (this CPU, {model}, has "
            "neither, so bf16 would be emulated and slower than fp32); use "
            f"{option} int8 (or auto)"
        )
    if name == "int8" and _int8_engine() is None:
        missing = "AVX2" if cpu_info().arch in ("x86_64", "amd64") else "a quantized engine"
        raise PrecisionError(
            f"{option} int8 needs a CPU with {missing} (this CPU, {model}, has none); use "
            f"{option} fp32"
        )
    return Resolved(name, "requested")


def current_precision(module: nn.Module) -> str:
    """The precision an encoder (or a model's ``.encoder``) was converted to; ``fp32`` if never."""
    enc = getattr(module, "encoder", module)
    return getattr(enc, _ATTR, "fp32")


# ---------------------------------------------------------------- bf16


def _to_bf16_pre(module: nn.Module, args: tuple, kwargs: dict):
    return (args[0].to(torch.bfloat16), *args[1:]), kwargs


def _to_fp32_post(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def _attend_cpu_kernel(self: Attention, q, k, v, key_valid=None) -> torch.Tensor:
    """bf16 q, k, v through geolatent's CPU attention kernel; result in bf16.

    The bf16 kernel (AVX512_BF16 dot products, fp32 softmax) where the kernel variant in use is
    ``avx512_bf16``; else the exact fp32 kernel on upcast q, k, v; else PyTorch's SDPA in bf16.
    Why: at 12,288 tokens the bf16 kernel ran 1.4x (Nano, head width 16) to 2.0x (Base, 64) the
    upcast fp32 kernel and 2.4-3.0x PyTorch's bf16 SDPA (``benchmarks/attention_kernel.py
    --bf16``), and PyTorch's bf16 SDPA was slower than the upcast fp32 kernel.
    """
    if attention_kernel.can_use(q):  # bf16 q: only where the variant has the bf16 kernel
        return attention_kernel.attention(q, k, v, key_valid)
    q32 = q.float()
    if not attention_kernel.can_use(q32):
        return Attention.attend(self, q, k, v, key_valid)  # SDPA in bf16 (flash, blocked)
    return attention_kernel.attention(q32, k.float(), v.float(), key_valid).to(q.dtype)


def _convert_bf16(encoder: nn.Module) -> None:
    # Blocks and the final norm in bf16: the first block casts its input, the norm its output.
    encoder.blocks.to(torch.bfloat16)
    encoder.norm.to(torch.bfloat16)
    if next(encoder.parameters()).device.type == "cpu":
        for blk in encoder.blocks:
            blk.attn.attend = types.MethodType(_attend_cpu_kernel, blk.attn)
    encoder.blocks[0].register_forward_pre_hook(_to_bf16_pre, with_kwargs=True)
    encoder.norm.register_forward_hook(_to_fp32_post)


# ---------------------------------------------------------------- int8


def _full_range_activations() -> bool:
    """Whether int8 linears may quantize activations to all 8 bits (else 7, ``reduce_range``).

    fbgemm's AVX2 / AVX-512 kernels multiply u8 x s8 pairs with ``vpmaddubsw``, whose int16 sum
    saturates at full range, so PyTorch's dynamic linear uses 7-bit activations everywhere. CPUs
    with VNNI (``vpdpbusd``: 32-bit sums) or AMX-INT8 do not saturate, and the 8th bit halves the
    activation rounding error (measured: benchmarks/precision_probe.py, docs/precision.md).
    """
    return _int8_engine() in ("x86", "fbgemm", "onednn") and any(
        cpu_has(f) for f in ("avx512_vnni", "avx_vnni", "amx_int8")
    )


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with int8 weights (per-output-channel scales) and ``x`` quantized per
    call (dynamic, per tensor): PyTorch's ``quantized::linear_dynamic`` on packed weights.

    ``full_range``: 8-bit activations (VNNI / AMX CPUs) instead of PyTorch's default 7 bits.
    """

    def __init__(self, linear: nn.Linear, full_range: bool):
        super().__init__()
        with warnings.catch_warnings():
            # torch.ao.quantization warns that it is deprecated in favour of torchao; torchao's
            # CPU int8 path needs torch.compile and ran at 0.8x fbgemm's speed here
            # (docs/precision.md).
            warnings.simplefilter("ignore")
            from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
            from torch.ao.quantization import per_channel_dynamic_qconfig

            linear.qconfig = per_channel_dynamic_qconfig
            self.packed = DynamicLinear.from_float(linear)
        self.full_range = full_range

    def weight(self) -> torch.Tensor:
        """The int8 weight ``[out, in]`` (a quantized tensor)."""
        return self.packed.weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self.packed._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, params, reduce_range=not self.full_range)


def _quantize_linear(linear: nn.Linear) -> nn.Module:
    """A dynamic-int8 copy of ``linear`` (see :class:`Int8Linear`)."""
    return Int8Linear(linear, _full_range_activations())


class Int8Block(nn.Module):
    """A :class:`~geolatent.model.attention.Block` for inference with dynamic-int8 linears.

    Same arithmetic as the fp32 block up to int8 rounding: ``x + proj(attn(norm1(x)))`` then
    ``+ fc2(gelu(fc1(norm2(.))))`` on ``[B, N, D]``; q, k and v come from one fused
    ``[3D, D]`` int8 matmul. Token-wise steps run over ``INFERENCE_ROWS`` rows at a time (the
    activation scale is per call, so per block of rows: finer than per tensor).
    """

    def __init__(self, block: Block):
        super().__init__()
        attn: Attention = block.attn
        self.num_heads = attn.num_heads
        self.norm1, self.norm2 = block.norm1, block.norm2
        w, b = attn.qkv_params()
        fused = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            fused.weight.copy_(w)
            fused.bias.copy_(b)
        self.qkv = _quantize_linear(fused)
        self.proj = _quantize_linear(attn.proj)
        self.fc1 = _quantize_linear(block.mlp.fc1)
        self.fc2 = _quantize_linear(block.mlp.fc2)
        self._attend = attn.attend  # fp32 attention (the exact kernel on CPU)
        self._rope = attn.apply_rope  # v1.2+: q and k rotated by their positions (fp32)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None,
                pos: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads
        rows = x.reshape(b * n, d)
        qkv = torch.cat([self.qkv(self.norm1(rows[i:i + INFERENCE_ROWS]))
                         for i in range(0, b * n, INFERENCE_ROWS)])  # fmt: skip
        q, k, v = qkv.view(b, n, 3, h, d // h).unbind(2)
        q, k = self._rope(q, k, pos, pos)
        attended = self._attend(q, k, v, key_valid).reshape(b * n, d)
        out = torch.empty_like(rows)
        for i in range(0, b * n, INFERENCE_ROWS):
            sl = slice(i, i + INFERENCE_ROWS)
            y = rows[sl] + self.proj(attended[sl])
            out[sl] = y + self.fc2(F.gelu(self.fc1(self.norm2(y))))
        return out.view(b, n, d)


def _convert_int8(encoder: nn.Module) -> None:
    engine = _int8_engine()
    if engine is None:  # resolve_precision checked already; a direct caller gets the reason
        resolve_precision("int8")
    torch.backends.quantized.engine = engine
    for i, blk in enumerate(encoder.blocks):
        encoder.blocks[i] = Int8Block(blk)


# ---------------------------------------------------------------- public


def set_precision(model: nn.Module, precision: str = "fp32", option: str = "precision") -> Resolved:
    """Convert the encoder of ``model`` (a model with ``.encoder``, or an encoder) in place.

    For inference only: a bf16 or int8 encoder cannot be trained or saved as a checkpoint.
    Converting an fp32 encoder to ``fp32`` is a no-op; converting an already converted encoder
    to another precision is an error (reload the checkpoint instead).

    Returns:
        The :class:`Resolved` precision (``auto`` replaced by what runs).
    """
    enc = getattr(model, "encoder", model)
    device = next(enc.parameters()).device
    resolved = resolve_precision(precision, device, option)
    have = getattr(enc, _ATTR, "fp32")
    if resolved.name == have:
        return resolved
    if have != "fp32":
        raise PrecisionError(
            f"this encoder already runs in {have}; load the checkpoint again for {resolved.name}"
        )
    if resolved.name == "bf16":
        _convert_bf16(enc)
    elif resolved.name == "int8":
        _convert_int8(enc)
    enc.eval()
    setattr(enc, _ATTR, resolved.name)
    log.info("encoder precision: %s", resolved)
    return resolved


def _fingerprint(enc: nn.Module) -> tuple:
    # In-place updates (optimizer steps, load_state_dict) bump a tensor's version counter.
    return tuple((p.data_ptr(), p._version) for p in enc.parameters())


def encoder_at(model: nn.Module, precision: str | None, option: str = "precision"):
    """``(encoder, resolved)``: the encoder of ``model`` at ``precision``, ``model`` unchanged.

    ``None`` keeps the model's own precision. Another precision than the model holds gives a
    converted copy, cached on the model and rebuilt when its fp32 weights change.
    """
    enc = model.encoder
    have = current_precision(enc)
    if precision is None:
        return enc, Resolved(have, "the model's precision")
    resolved = resolve_precision(precision, next(enc.parameters()).device, option)
    if resolved.name == have:
        return enc, resolved
    if have != "fp32":
        raise PrecisionError(
            f"{option} {resolved.name}: this model was loaded in {have}; load it with "
            f"precision={resolved.name!r} (or fp32) instead"
        )
    cache = model.__dict__.setdefault(_CACHE, {})
    key = (resolved.name, _fingerprint(enc))
    if key not in cache:
        cache.clear()  # one converted copy at a time: bounded memory
        copy_ = copy.deepcopy(enc)
        set_precision(copy_, resolved.name, option)
        cache[key] = copy_
    return cache[key], resolved
