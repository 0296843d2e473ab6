"""The v1 decoder ("predictor"): cross-attention from tokens to predict onto encoded tokens."""

from __future__ import annotations

import torch
from torch import nn

from geolatent.modalities import Modality
from geolatent.model.attention import CrossBlock
from geolatent.model.encodings import CompositeEncodings
from geolatent.model.tokens import MaskValue, Packing, flatten


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
    ):
        super().__init__()
        self.dim = dim
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.input_norm = nn.LayerNorm(encoder_dim)
        self.encoder_to_decoder_embed = nn.Linear(encoder_dim, dim)
        self.composite_encodings = CompositeEncodings(dim, modalities)
        self.blocks = nn.ModuleList(
            [CrossBlock(dim, num_heads, mlp_ratio, drop_path) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.to_output_embed = nn.Linear(dim, output_dim or encoder_dim)

    def forward(
        self,
        tokens: dict[str, torch.Tensor],
        token_mask: dict[str, torch.Tensor],
        timestamps: torch.Tensor,
        patch_size: int,
    ) -> dict[str, torch.Tensor]:
        """Decode.

        Args:
            tokens: encoder output per modality ``[B, h, w, T, S, D_enc]``.
            token_mask: per modality ``[B, h, w, T, S]`` roles.
            timestamps: ``[B, T, 3]``.
            patch_size: p.

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

        context_pack = Packing.from_selection(roles == MaskValue.ONLINE_ENCODER)
        query_pack = Packing.from_selection(roles == MaskValue.DECODER)
        context = context_pack.gather(x)
        out = context_pack.scatter(context)  # context kept unchanged, zeros elsewhere
        if query_pack.index.shape[1]:
            q = query_pack.gather(x)
            key_valid = None if bool(context_pack.attend.all()) else context_pack.attend
            for blk in self.blocks:
                q = blk(q, context, key_valid=key_valid)
            out = query_pack.scatter(q, out)
        return layout.split(self.to_output_embed(self.norm(out)))
