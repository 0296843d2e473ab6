"""The v1.3 attention pooler: learned location queries read the encoder tokens.

For a location-query patch size ``s`` (dividing p) the queries form a grid of ``H/s x W/s``
cells (one per ``s x s`` pixels). Each of ``pooler_depth`` layers reads the encoder tokens with
a cross-attention block (keys: LayerNorm'd tokens, only encoded ones), then the queries attend to
each other; both use 2-D axial RoPE with query coordinates ``((k + 0.5) * s / p - 0.5) * g``
(g = p * coordinate scale: the token spacing) and token coordinates ``(i * g, j * g)``.
``location_tokens = norm(queries)``; the distilled student is ``LayerNorm(Linear(.))`` of them.
"""

from __future__ import annotations

import torch
from torch import nn

from geolatent.model.attention import Block, CrossBlock


def query_coordinates(
    grid_hw: tuple[int, int], patch_size: int, query_size: int, spacing: float, device=None
) -> torch.Tensor:
    """``[r_h * r_w, 2]`` (row, col) of the location queries, row-major (float32)."""
    gh, gw = grid_hw
    p, s = patch_size, query_size
    rh, rw = gh * p // s, gw * p // s

    def axis(n: int) -> torch.Tensor:
        k = torch.arange(n, dtype=torch.float32, device=device)
        return ((k + 0.5) * s / p - 0.5) * spacing

    rows, cols = axis(rh), axis(rw)
    return torch.stack(
        [rows[:, None].expand(rh, rw), cols[None, :].expand(rh, rw)], dim=-1
    ).reshape(rh * rw, 2)


class AttentionPooler(nn.Module):
    """Location queries over the encoder tokens (v1.3 key layout ``encoder.attention_pooler.*``).

    Args:
        dim: encoder width D.
        pooler_dim: width P of the location tokens.
        depth: read + self-attention layers.
        num_heads: heads of both block kinds.
        attn_dim: inner attention width; None adds a ``Linear(D, P)`` K/V projection per read.
        per_depth_read_proj: one input LayerNorm (and K/V projection) per layer when depth > 1.
        student_dims: distilled embedding widths (largest built; smaller ones are prefixes).
        student_output_norm: LayerNorm after the student Linear.
    """

    def __init__(
        self,
        dim: int,
        pooler_dim: int,
        depth: int,
        num_heads: int,
        attn_dim: int | None = None,
        per_depth_read_proj: bool = False,
        student_dims: list[int] | None = None,
        student_output_norm: bool = True,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.depth = depth
        self.per_depth = per_depth_read_proj and depth > 1
        self.learned_query = nn.Parameter(torch.randn(1, pooler_dim) * 0.02)
        if self.per_depth:
            self.input_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(depth)])
        else:
            self.input_norm = nn.LayerNorm(dim)
        kv_dim = dim
        if attn_dim is None:
            if self.per_depth:
                self.kv_projs = nn.ModuleList([nn.Linear(dim, pooler_dim) for _ in range(depth)])
            else:
                self.kv_proj = nn.Linear(dim, pooler_dim)
            kv_dim = pooler_dim
        self.has_kv_proj = attn_dim is None
        inner = attn_dim or pooler_dim
        self.read_blocks = nn.ModuleList(
            [CrossBlock(pooler_dim, num_heads, mlp_ratio, 0.0, kv_dim, inner, "axial")
             for _ in range(depth)]
        )  # fmt: skip
        self.self_attn_blocks = nn.ModuleList(
            [Block(pooler_dim, num_heads, mlp_ratio, 0.0, None, inner, "axial")
             for _ in range(depth)]
        )  # fmt: skip
        self.norm = nn.LayerNorm(pooler_dim)
        self.student_dims = sorted(student_dims or [], reverse=True)
        if self.student_dims:
            layers: list[nn.Module] = [nn.Linear(pooler_dim, self.student_dims[0])]
            if student_output_norm:
                layers.append(nn.LayerNorm(self.student_dims[0]))
            self.student = nn.Sequential(*layers)

    def _source(self, i: int, x: torch.Tensor) -> torch.Tensor:
        norm = self.input_norms[i] if self.per_depth else self.input_norm
        src = norm(x)
        if self.has_kv_proj:
            src = (self.kv_projs[i] if self.per_depth else self.kv_proj)(src)
        return src

    def forward(
        self,
        x: torch.Tensor,
        token_pos: torch.Tensor,
        key_valid: torch.Tensor | None,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        """Pool.

        Args:
            x: ``[B, L, D]`` final encoder tokens.
            token_pos: ``[B, L, 2]`` their (row, col).
            key_valid: ``[B, L]`` bool, or None when every token is a key.
            query_pos: ``[Q, 2]`` query (row, col), row-major over the query grid.

        Returns:
            ``[B, Q, P]`` location tokens (after the final norm).
        """
        b = x.shape[0]
        q = self.learned_query.to(x.dtype).expand(b, query_pos.shape[0], -1)
        qpos = query_pos[None].expand(b, -1, -1)
        for i in range(self.depth):
            src = self._source(i, x)
            q = self.read_blocks[i](q, src, key_valid, qpos, token_pos)
            q = self.self_attn_blocks[i](q, pos=qpos)
        return self.norm(q)

    def embedding(self, location_tokens: torch.Tensor) -> torch.Tensor:
        """``[..., max(student_dims)]`` distilled embedding; its prefixes are the smaller ones."""
        if not self.student_dims:
            raise ValueError("this pooler has no distilled student embedding")
        return self.student(location_tokens)
