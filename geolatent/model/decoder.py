"""The decoder ("predictor"): cross-attention from tokens to predict onto encoded tokens.

v1 / v1.1 use additive encodings only; v1.2 adds mixed 3-D RoPE (channel and month quarters
remain); v1.3 reads the encoder's location tokens instead of the encoded tokens, with 2-D axial
RoPE and the slot-index quarter for multitemporal maps.
"""

from __future__ import annotations

import torch
from torch import nn

from geolatent.modalities import Modality
from geolatent.model import rope as rope_lib
from geolatent.model.attention import CrossBlock
from geolatent.model.encodings import CompositeEncodings
from geolatent.model.pooler import query_coordinates
from geolatent.model.tokens import MaskValue, Packing, flatten
from geolatent.model.versions import version_spec


class Decoder(nn.Module):
    """Predicts target latents at ``DECODER`` positions.

    ``x = encoder_to_decoder_embed(input_norm(tokens))``; ``DECODER`` positions become
    ``mask_token``; the decoder's own encodings are added; ``depth`` cross-attention blocks
    update the queries (``DECODER`` tokens) against the context (``ONLINE_ENCODER`` tokens, never
    updated); output ``to_output_embed(norm(x))``.
    """

    def __init__(
        self,
        modalities: list[Modality],
        encoder_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        output_dim: int | None = None,
        drop_path: float = 0.0,
        version: str = "v1",
        rope_time_scale: float = 1.0 / 30.0,
        rope_coordinate_scale: float = 1.0,
        pooler_dim: int | None = None,
    ):
        super().__init__()
        spec = version_spec(version)
        self.spec = spec
        self.dim = dim
        self.rope_time_scale = rope_time_scale
        self.rope_coordinate_scale = rope_coordinate_scale
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.input_norm = nn.LayerNorm(encoder_dim)
        self.encoder_to_decoder_embed = nn.Linear(encoder_dim, dim)
        if spec.attention_pooler:
            slot, spatial, rope = "computed", False, "axial"
        elif spec.rope_3d:
            slot, spatial, rope = None, False, "mixed"
        else:
            slot = "table" if spec.slot_index_table else "computed"
            spatial, rope = True, None
        self.composite_encodings = CompositeEncodings(dim, modalities, slot_index=slot,
                                                      spatial=spatial)  # fmt: skip
        self.blocks = nn.ModuleList(
            [CrossBlock(dim, num_heads, mlp_ratio, drop_path, rope=rope) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.to_output_embed = nn.Linear(dim, output_dim or encoder_dim)
        if spec.attention_pooler:
            self.location_tokens_to_decoder_embed = nn.Linear(pooler_dim or encoder_dim, dim)

    def forward(
        self,
        tokens: dict[str, torch.Tensor],
        token_mask: dict[str, torch.Tensor],
        timestamps: torch.Tensor,
        patch_size: int,
        location_tokens: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Decode.

        Args:
            tokens: encoder output per modality ``[B, h, w, T, S, D_enc]``.
            token_mask: per modality ``[B, h, w, T, S]`` roles.
            timestamps: ``[B, T, 3]``.
            patch_size: p.
            location_tokens: v1.3: the encoder's ``[B, h, w, pooler_dim]`` (query size p).

        Returns:
            per modality ``[B, h, w, T, S, D_out]``; meaningful at ``DECODER`` positions only.
        """
        parts = {}
        for m, tok in tokens.items():
            x = self.encoder_to_decoder_embed(self.input_norm(tok))
            is_dec = (token_mask[m] == MaskValue.DECODER)[..., None]
            x = torch.where(is_dec, self.mask_token.to(x.dtype), x)
            enc = self.composite_encodings.encoding(m, tok.shape[1:3], timestamps, patch_size)
            parts[m] = x + enc
        x, layout = flatten(parts, trailing_dims=1)
        roles, _ = flatten({m: token_mask[m] for m in parts}, trailing_dims=0)
        spacing = (10.0 * patch_size / 10.0) * self.rope_coordinate_scale
        pos = None
        if self.spec.rope_3d:
            pos = flatten({
                m: rope_lib.token_positions(timestamps, t.shape[1:3], t.shape[3], t.shape[4],
                                            spacing, self.rope_time_scale)
                for m, t in tokens.items()
            }, trailing_dims=1)[0]  # fmt: skip
        query_pack = Packing.from_selection(roles == MaskValue.DECODER)
        if self.spec.attention_pooler:
            if location_tokens is None:
                raise ValueError("a v1.3 decoder reads the encoder's location tokens")
            b, gh, gw, _ = location_tokens.shape
            context = self.encoder_to_context(location_tokens)
            k_pos = query_coordinates((gh, gw), patch_size, patch_size, spacing, x.device)
            k_pos = k_pos[None].expand(b, -1, -1)
            key_valid = None
            out = torch.zeros_like(x)
        else:
            context_pack = Packing.from_selection(roles == MaskValue.ONLINE_ENCODER)
            context = context_pack.gather(x)
            k_pos = None if pos is None else context_pack.gather(pos)
            out = context_pack.scatter(context)  # context kept unchanged, zeros elsewhere
            key_valid = None if bool(context_pack.attend.all()) else context_pack.attend
        if query_pack.index.shape[1]:
            q = query_pack.gather(x)
            q_pos = None
            if self.spec.attention_pooler:
                q_pos = query_pack.gather(pos[..., 1:] if pos is not None else self._grid_pos(
                    tokens, spacing))  # fmt: skip
            elif pos is not None:
                q_pos = query_pack.gather(pos)
            for blk in self.blocks:
                q = blk(q, context, key_valid, q_pos, k_pos)
            out = query_pack.scatter(q, out)
        return layout.split(self.to_output_embed(self.norm(out)))

    def encoder_to_context(self, location_tokens: torch.Tensor) -> torch.Tensor:
        """v1.3: ``[B, h, w, P]`` location tokens -> ``[B, h*w, dim]`` decoder keys/values."""
        return self.location_tokens_to_decoder_embed(location_tokens.flatten(1, 2))

    @staticmethod
    def _grid_pos(tokens: dict[str, torch.Tensor], spacing: float) -> torch.Tensor:
        """``[B, N, 2]`` (row, col) of the flattened tokens."""
        per_mod = {}
        for m, t in tokens.items():
            b, h, w, nt, ns = t.shape[:5]
            rows = torch.arange(h, dtype=torch.float32, device=t.device) * spacing
            cols = torch.arange(w, dtype=torch.float32, device=t.device) * spacing
            shape = (b, h, w, nt, ns)
            per_mod[m] = torch.stack([rows[None, :, None, None, None].expand(shape),
                                      cols[None, None, :, None, None].expand(shape)], -1)
        return flatten(per_mod, trailing_dims=1)[0]
