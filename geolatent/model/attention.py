"""Transformer blocks: pre-norm self-attention (encoder) and cross-attention-only (decoder).

Attention always goes through ``scaled_dot_product_attention`` so the fused kernels (flash /
memory-efficient on GPU, the flash CPU kernel) are used and the full ``N x N`` score matrix is
never materialized per head. Padding is excluded with a key-padding mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

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
            # One matmul for q, k and v (reads x once), laid out head-major in one copy: the
            # CPU attention kernel is faster on contiguous [B, H, N, d_head] operands.
            w = torch.cat([self.q.weight, self.k.weight, self.v.weight])
            bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
            qkv = F.linear(x, w, bias).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.contiguous().unbind(0)
        else:
            q = self._heads(self.q(x)).contiguous()
            w = torch.cat([self.k.weight, self.v.weight])
            bias = torch.cat([self.k.bias, self.v.bias])
            m = context.shape[1]
            kv = F.linear(context, w, bias).view(b, m, 2, h, d // h).permute(2, 0, 3, 1, 4)
            k, v = kv.contiguous().unbind(0)
        mask = None if key_valid is None else key_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


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
        x = x + self.drop_path(self.attn(self.norm1(x), key_valid=key_valid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossBlock(Block):
    """Decoder block: queries attend to a fixed context (not normalized, not updated)."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, context: torch.Tensor, key_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), context=context, key_valid=key_valid))
        return x + self.drop_path(self.mlp(self.norm2(x)))
