"""Transformer blocks: pre-norm self-attention (encoder) and cross-attention-only (decoder).

Attention never materializes the full ``N x N`` score matrix per head. fp32 CPU inference goes
through geolatent's AVX2 kernel (``attention_kernel``: faster at the same results); everything
else (training, GPUs, bf16) through ``scaled_dot_product_attention`` and its fused kernels.
Padding is excluded with a key-padding mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geolatent.model import attention_kernel
from geolatent.model import rope as rope_lib


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        noise = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * noise / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention with separate ``q``, ``k``, ``v`` linears (release key layout).

    Args:
        dim: width of the queries' stream (input of ``q``, output of ``proj``).
        num_heads: heads; head width = ``attn_dim / num_heads``.
        kv_dim: width of the keys' / values' source (default ``dim``).
        attn_dim: inner width of q, k, v (default ``dim``).
        rope: None, ``"mixed"`` (v1.2 learned 3-D RoPE, key ``rope_mixed_freqs``
            ``[3, heads, head_dim/2]``) or ``"axial"`` (v1.3 fixed 2-D RoPE).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kv_dim: int | None = None,
        attn_dim: int | None = None,
        rope: str | None = None,
    ):
        super().__init__()
        inner = attn_dim or dim
        if inner % num_heads:
            raise ValueError(f"width {inner} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.inner = inner
        self.head_dim = inner // num_heads
        self.rope = rope
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(kv_dim or dim, inner)
        self.v = nn.Linear(kv_dim or dim, inner)
        self.proj = nn.Linear(inner, dim)
        if rope == "mixed":
            self.rope_mixed_freqs = nn.Parameter(init_mixed_freqs(num_heads, self.head_dim))
        elif rope not in (None, "axial"):
            raise ValueError(f"unknown rope {rope!r}")

    def qkv_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight ``[3A, D]`` and bias ``[3A]`` of q, k and v stacked: one matmul reads x once."""
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        return w, torch.cat([self.q.bias, self.k.bias, self.v.bias])

    def apply_rope(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_pos: torch.Tensor | None,
        k_pos: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate ``q`` ``[B, Nq, H, d]`` and ``k`` ``[B, Nk, H, d]`` by their positions."""
        if self.rope is None:
            return q, k
        if q_pos is None or k_pos is None:
            raise ValueError("this attention uses RoPE: token positions are required")

        def cos_sin(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.rope == "mixed":
                ang = rope_lib.mixed_angles(pos, self.rope_mixed_freqs)
            else:
                ang = rope_lib.axial_angles(pos, self.head_dim)
            return torch.cos(ang).to(q.dtype), torch.sin(ang).to(q.dtype)

        qc, qs = cos_sin(q_pos)
        # Self-attention: keys sit where the queries are; compute the angles once.
        kc, ks = (qc, qs) if k_pos is q_pos else cos_sin(k_pos)
        return rope_lib.rotate(q, qc, qs), rope_lib.rotate(k, kc, ks)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) v on ``[B, N, H, d]`` views; returns ``[B, Nq, H, d]``."""
        if attention_kernel.can_use(q):
            # Reads the strided views in place and writes [B, N, H, d]: no transposes.
            return attention_kernel.attention(q, k, v, key_valid)
        # The CPU flash kernel is faster on contiguous head-major [B, H, N, d] operands.
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        mask = None if key_valid is None else key_valid[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, mask).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_valid: torch.Tensor | None = None,
        q_pos: torch.Tensor | None = None,
        k_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` [B, Nq, D] to ``context`` [B, Nk, D_kv] (``x`` itself when None).

        ``key_valid`` [B, Nk] bool marks real keys; padded keys get no attention weight.
        ``q_pos`` / ``k_pos``: RoPE positions ``[B, N, 3]`` (mixed) or ``[B, N, 2]`` (axial).
        """
        b, n, _ = x.shape
        h, dh = self.num_heads, self.head_dim
        if context is None:
            qkv = F.linear(x, *self.qkv_params()).view(b, n, 3, h, dh)
            q, k, v = qkv.unbind(2)
            k_pos = q_pos if k_pos is None else k_pos
        else:
            q = self.q(x).view(b, n, h, dh)
            w = torch.cat([self.k.weight, self.v.weight])
            bias = torch.cat([self.k.bias, self.v.bias])
            kv = F.linear(context, w, bias).view(b, context.shape[1], 2, h, dh)
            k, v = kv.unbind(2)
        q, k = self.apply_rope(q, k, q_pos, k_pos)
        return self.proj(self.attend(q, k, v, key_valid).reshape(b, n, self.inner))


def init_mixed_freqs(num_heads: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Initial learned RoPE-Mixed frequencies ``[3, heads, head_dim/2]``.

    Standard RoPE frequencies per feature pair on each axis, scaled per head by a random
    direction (RoPE-Mixed's initialisation); trained checkpoints replace them.
    """
    freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angle = torch.rand(num_heads, 1) * 2 * torch.pi
    return torch.stack(
        [freq * 0.1 * torch.ones(num_heads, 1), freq * torch.cos(angle), freq * torch.sin(angle)]
    )


# Tokens per step of the blocked CPU inference path: a step's activations (fc1 output
# 512 x 4D floats) stay in cache and below glibc's mmap threshold, so they are reused
# instead of page-faulted in for every layer.
INFERENCE_ROWS = 512


class Block(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    ``kv_dim``, ``attn_dim`` and ``rope`` are passed to :class:`Attention`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        kv_dim: int | None = None,
        attn_dim: int | None = None,
        rope: str | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, kv_dim, attn_dim, rope)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        key_valid: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` [B, N, D]; ``pos``: its tokens' RoPE positions when the attention uses RoPE."""
        if (
            x.device.type == "cpu"
            and not torch.is_grad_enabled()
            and not self.training
            and not torch.is_autocast_enabled("cpu")
        ):
            return self._forward_blocked(x, key_valid, pos)
        x = x + self.drop_path(self.attn(self.norm1(x), key_valid=key_valid, q_pos=pos))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _forward_blocked(
        self, x: torch.Tensor, key_valid: torch.Tensor | None, pos: torch.Tensor | None
    ) -> torch.Tensor:
        """CPU inference: the same arithmetic, with every token-wise step run over row blocks.

        Only attention needs all tokens at once; norms, linears, GELU and residuals run on
        ``INFERENCE_ROWS`` tokens at a time, which is ~1.6x faster than whole-tensor ops at
        these widths on CPU (cache-resident activations, no page faults per layer).
        """
        b, n, d = x.shape
        a = self.attn
        rows = x.reshape(b * n, d)
        w_qkv, b_qkv = a.qkv_params()
        qkv = torch.empty(b * n, 3 * a.inner, dtype=x.dtype)
        for i in range(0, b * n, INFERENCE_ROWS):
            sl = slice(i, i + INFERENCE_ROWS)
            torch.addmm(b_qkv, self.norm1(rows[sl]), w_qkv.t(), out=qkv[sl])
        q, k, v = qkv.view(b, n, 3, a.num_heads, a.head_dim).unbind(2)
        q, k = a.apply_rope(q, k, pos, pos)
        attended = a.attend(q, k, v, key_valid).reshape(b * n, a.inner)
        out = torch.empty_like(rows)
        for i in range(0, b * n, INFERENCE_ROWS):
            sl = slice(i, i + INFERENCE_ROWS)
            y = rows[sl] + a.proj(attended[sl])
            torch.add(y, self.mlp(self.norm2(y)), out=out[sl])
        return out.view(b, n, d)


class CrossBlock(Block):
    """Decoder / pooler-read block: queries attend to a fixed context (not normalized, not
    updated)."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        key_valid: torch.Tensor | None = None,
        q_pos: torch.Tensor | None = None,
        k_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        attended = self.attn(self.norm1(x), context, key_valid, q_pos, k_pos)
        x = x + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.norm2(x)))
