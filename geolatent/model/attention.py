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
    """Multi-head attention with separate ``q``, ``k``, ``v`` linears (v1 key layout)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def qkv_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight ``[3D, D]`` and bias ``[3D]`` of q, k and v stacked: one matmul reads x once."""
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        return w, torch.cat([self.q.bias, self.k.bias, self.v.bias])

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
    ) -> torch.Tensor:
        """Attend from ``x`` [B, Nq, D] to ``context`` [B, Nk, D] (``x`` itself when None).

        ``key_valid`` [B, Nk] bool marks real keys; padded keys get no attention weight.
        """
        b, n, d = x.shape
        h = self.num_heads
        if context is None:
            qkv = F.linear(x, *self.qkv_params()).view(b, n, 3, h, d // h)
            q, k, v = qkv.unbind(2)
        else:
            q = self.q(x).view(b, n, h, d // h)
            w = torch.cat([self.k.weight, self.v.weight])
            bias = torch.cat([self.k.bias, self.v.bias])
            kv = F.linear(context, w, bias).view(b, context.shape[1], 2, h, d // h)
            k, v = kv.unbind(2)
        return self.proj(self.attend(q, k, v, key_valid).reshape(b, n, d))


# Tokens per step of the blocked CPU inference path: a step's activations (fc1 output
# 512 x 4D floats) stay in cache and below glibc's mmap threshold, so they are reused
# instead of page-faulted in for every layer.
INFERENCE_ROWS = 512


class Block(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and not torch.is_grad_enabled()
            and not self.training
            and not torch.is_autocast_enabled("cpu")
        ):
            return self._forward_blocked(x, key_valid)
        x = x + self.drop_path(self.attn(self.norm1(x), key_valid=key_valid))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _forward_blocked(self, x: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        """CPU inference: the same arithmetic, with every token-wise step run over row blocks.

        Only attention needs all tokens at once; norms, linears, GELU and residuals run on
        ``INFERENCE_ROWS`` tokens at a time, which is ~1.6x faster than whole-tensor ops at
        these widths on CPU (cache-resident activations, no page faults per layer).
        """
        b, n, d = x.shape
        h = self.attn.num_heads
        rows = x.reshape(b * n, d)
        w_qkv, b_qkv = self.attn.qkv_params()
        qkv = torch.empty(b * n, 3 * d, dtype=x.dtype)
        for i in range(0, b * n, INFERENCE_ROWS):
            sl = slice(i, i + INFERENCE_ROWS)
            torch.addmm(b_qkv, self.norm1(rows[sl]), w_qkv.t(), out=qkv[sl])
        q, k, v = qkv.view(b, n, 3, h, d // h).unbind(2)
        attended = self.attn.attend(q, k, v, key_valid).reshape(b * n, d)
        out = torch.empty_like(rows)
        for i in range(0, b * n, INFERENCE_ROWS):
            sl = slice(i, i + INFERENCE_ROWS)
            y = rows[sl] + self.attn.proj(attended[sl])
            torch.add(y, self.mlp(self.norm2(y)), out=out[sl])
        return out.view(b, n, d)


class CrossBlock(Block):
    """Decoder block: queries attend to a fixed context (not normalized, not updated)."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, context: torch.Tensor, key_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), context=context, key_valid=key_valid))
        return x + self.drop_path(self.mlp(self.norm2(x)))
