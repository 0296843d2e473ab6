"""The OlmoEarth v1 encoder: patch embedding, composite encodings, ViT blocks, pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geolatent.modalities import Modality
from geolatent.model.attention import Block
from geolatent.model.encodings import CompositeEncodings
from geolatent.model.patch_embed import PatchEmbeddings
from geolatent.model.tokens import MaskValue, Packing, flatten


@dataclass
class EncoderOutput:
    """Encoder results.

    Attributes:
        tokens: per modality ``[B, H/p, W/p, T, S, D]``; exactly 0 at tokens that were not encoded.
        token_mask: per modality ``[B, H/p, W/p, T, S]`` int, ``MaskValue`` roles (0 = encoded).
        pooled: ``[B, D]`` mean over all encoded tokens of all modalities (NaN if none).
        project_aggregated: ``[B, D]`` the contrastive head applied to ``pooled``.
    """

    tokens: dict[str, torch.Tensor]
    token_mask: dict[str, torch.Tensor]
    pooled: torch.Tensor
    project_aggregated: torch.Tensor

    @property
    def feature_map(self) -> torch.Tensor:
        """``[B, H/p, W/p, D]``: per modality the mean over (T, S) of encoded tokens, then the mean
        over the modalities that have an encoded token at that location (NaN where none has)."""
        return spatial_mean(self.tokens, self.token_mask)


def encoded_mask(token_mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {m: t == MaskValue.ONLINE_ENCODER for m, t in token_mask.items()}


def pooled_mean(
    tokens: dict[str, torch.Tensor], token_mask: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``[B, D]`` mean over every encoded token of every modality (NaN for a sample with none)."""
    total, count = None, None
    for m, tok in tokens.items():
        valid = (token_mask[m] == MaskValue.ONLINE_ENCODER).to(tok.dtype)
        s = torch.einsum("bhwtsd,bhwts->bd", tok, valid)
        c = valid.flatten(1).sum(1)
        total = s if total is None else total + s
        count = c if count is None else count + c
    return total / count[:, None]


def spatial_mean(
    tokens: dict[str, torch.Tensor], token_mask: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``[B, h, w, D]`` masked feature map (see :attr:`EncoderOutput.feature_map`)."""
    total, present = None, None
    for m, tok in tokens.items():
        valid = (token_mask[m] == MaskValue.ONLINE_ENCODER).to(tok.dtype)
        cnt = valid.sum(dim=(3, 4))  # [B, h, w]
        mean = torch.einsum("bhwtsd,bhwts->bhwd", tok, valid) / cnt.clamp_min(1)[..., None]
        has = (cnt > 0).to(tok.dtype)
        total = mean if total is None else total + mean
        present = has if present is None else present + has
    return total / present[..., None]  # 0/0 -> NaN where no modality has a token


class ProjectAndAggregate(nn.Module):
    """Contrastive head: mean pooling then ``Linear(D, D)`` (key ``projection.0``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(dim, dim))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.projection(pooled)


class Encoder(nn.Module):
    """Multimodal spatio-temporal ViT encoder (v1 key layout).

    Args:
        modalities: the supported modalities (decide which patch-embedding keys exist).
        dim: embedding width D.
        depth, num_heads, mlp_ratio: transformer shape.
        drop_path: stochastic depth rate (training only).
    """

    def __init__(
        self,
        modalities: list[Modality],
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.modalities = {m.name: m for m in modalities}
        self.dim = dim
        self.patch_embeddings = PatchEmbeddings(modalities, dim)
        self.composite_encodings = CompositeEncodings(dim, modalities)
        self.blocks = nn.ModuleList(
            [Block(dim, num_heads, mlp_ratio, drop_path) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.project_and_aggregate = ProjectAndAggregate(dim)

    def tokenize(
        self,
        inputs: dict[str, torch.Tensor],
        timestamps: torch.Tensor,
        patch_size: int,
        token_mask: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Patch embedding plus composite encodings: ``[B, H, W, T, C]`` -> ``[B, h, w, T, S, D]``.

        Bandsets without any encoded token in the batch are not embedded (they are zero).
        """
        out = {}
        for m, x in inputs.items():
            active = None
            if token_mask is not None:
                enc = token_mask[m] == MaskValue.ONLINE_ENCODER  # [B, h, w, T, S]
                active = enc.flatten(0, 3).any(dim=0).tolist()
            tok = self.patch_embeddings(m, x, patch_size, bandset_active=active)
            enc_add = self.composite_encodings.encoding(m, tok.shape[1:3], timestamps, patch_size)
            out[m] = tok + enc_add
        return out

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        timestamps: torch.Tensor,
        patch_size: int,
        token_mask: dict[str, torch.Tensor] | None = None,
    ) -> EncoderOutput:
        """Encode normalized inputs.

        Args:
            inputs: per modality normalized ``[B, H, W, T, C]`` (static modalities T = 1).
            timestamps: int ``[B, T, 3]`` (day, month 0-11, year).
            patch_size: p in 1..8.
            token_mask: optional per modality ``[B, H/p, W/p, T, S]`` roles; only
                ``ONLINE_ENCODER`` tokens are attended (each sample on its own). None encodes every
                token (v1's inference "fast pass").
        """
        tokens = self.tokenize(inputs, timestamps, patch_size, token_mask)
        x, layout = flatten(tokens, trailing_dims=1)
        if token_mask is None:
            token_mask = {
                m: torch.zeros(t.shape[:5], dtype=torch.long, device=t.device)
                for m, t in tokens.items()
            }
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
        else:
            sel, _ = flatten({m: token_mask[m] for m in tokens}, trailing_dims=0)
            packing = Packing.from_selection(sel == MaskValue.ONLINE_ENCODER)
            h = packing.gather(x)
            key_valid = None if bool(packing.attend.all()) else packing.attend
            for blk in self.blocks:
                h = blk(h, key_valid=key_valid)
            x = packing.scatter(self.norm(h))
        out_tokens = layout.split(x)
        pooled = pooled_mean(out_tokens, token_mask)
        return EncoderOutput(out_tokens, token_mask, pooled, self.project_and_aggregate(pooled))
