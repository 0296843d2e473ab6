"""The OlmoEarth encoder (every release version): patch embedding, encodings, ViT blocks,
pooling, and (v1.3) the attention pooler. What each version changes: :mod:`.versions`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from geolatent.modalities import Modality
from geolatent.model import rope as rope_lib
from geolatent.model.attention import Block
from geolatent.model.encodings import CompositeEncodings
from geolatent.model.patch_embed import PatchEmbeddings
from geolatent.model.pooler import AttentionPooler, query_coordinates
from geolatent.model.tokens import MaskValue, Packing, flatten
from geolatent.model.versions import version_spec


@dataclass
class EncoderOutput:
    """What the encoder returns, and what :func:`geolatent.embed` returns: the one encoder-output
    type of every path (embed, fine-tuning heads, predict, evals, pretraining).

    Missing-data rule of the outputs (one rule, everywhere): a *token* that was not encoded (its
    bandset had no valid value in the patch, or a pretraining view masked it) is exactly **0** in
    ``tokens`` and is told apart only by ``token_mask`` (never by its value); every *aggregate*
    over tokens (``feature_map``, ``pooled``) is **NaN** where no encoded token contributes, so a
    location or sample without data can never pass for a real vector. Consumers that need finite
    values (heads, kNN) fill or drop NaN explicitly.

    Attributes:
        tokens: per modality ``[B, H/p, W/p, T, S, D]``; exactly 0 at tokens that were not encoded.
        token_mask: per modality ``[B, H/p, W/p, T, S]`` int, ``MaskValue`` roles (0 = encoded,
            3 = missing).
        pooled: ``[B, D]`` mean over all encoded tokens of all modalities (NaN if none).
        project_aggregated: ``[B, D]`` the contrastive head applied to ``pooled`` (v1.3: to the
            mean of the location tokens, ``[B, pooler_dim]``).
        location_tokens: v1.3 only: ``[B, H/s, W/s, pooler_dim]`` attention-pooler outputs
            (s = ``location_patch_size``).
        location_embedding: v1.3 only: ``[B, H/s, W/s, max(student_dims)]`` distilled embedding
            (128-d for Base); its prefixes ``[..., :k]`` are the Matryoshka embeddings.
        patch_size: p (set by :func:`geolatent.embed`; None from a bare encoder call).
        nonfinite: per modality the number of +-inf input values :func:`geolatent.embed`
            treated as missing.
    """

    tokens: dict[str, torch.Tensor]
    token_mask: dict[str, torch.Tensor]
    pooled: torch.Tensor
    project_aggregated: torch.Tensor
    location_tokens: torch.Tensor | None = None
    location_embedding: torch.Tensor | None = None
    patch_size: int | None = None
    nonfinite: dict[str, int] = field(default_factory=dict)

    @cached_property
    def feature_map(self) -> torch.Tensor:
        """``[B, H/p, W/p, D]``: per modality the mean over (T, S) of encoded tokens, then the mean
        over the modalities that have an encoded token at that location (NaN where none has).
        Computed once, on first access."""
        return spatial_mean(self.tokens, self.token_mask)

    @property
    def token_valid(self) -> torch.Tensor:
        """bool ``[B, H/p, W/p]``: some modality encoded a token at that location (where
        ``feature_map`` is not NaN)."""
        return ~torch.isnan(self.feature_map[..., 0])


@dataclass
class EncodedTokens:
    """:meth:`Encoder.forward_features` result, the input of :meth:`Encoder.forward_head`.

    Attributes:
        tokens: per modality ``[B, H/p, W/p, T, S, D]`` normed tokens (0 where not encoded).
        token_mask: per modality ``[B, H/p, W/p, T, S]`` roles (0 = encoded).
        packed: ``[B, N, D]`` the encoded tokens as the blocks saw them (packed when masked).
        packed_pos: ``[B, N, 3]`` their (t, row, col) RoPE positions (v1.2+), else None.
        key_valid: ``[B, N]`` bool: real (not padding) entries of ``packed``; None when all are.
        patch_size: p.
    """

    tokens: dict[str, torch.Tensor]
    token_mask: dict[str, torch.Tensor]
    packed: torch.Tensor
    packed_pos: torch.Tensor | None
    key_valid: torch.Tensor | None
    patch_size: int


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
    """Multimodal spatio-temporal ViT encoder (release key layout).

    Args:
        modalities: the supported modalities with the model's bandsets (decide which
            patch-embedding keys exist).
        dim: embedding width D.
        depth, num_heads, mlp_ratio: transformer shape.
        drop_path: stochastic depth rate (training only).
        version: release version (see :mod:`geolatent.model.versions`).
        hidden_sizes: per-pixel MLP widths of the linear patch embedding (v1.1+).
        rope_time_scale, rope_coordinate_scale: v1.2+ RoPE coordinate scales.
        pooler: v1.3 :class:`~geolatent.model.config.PoolerConfig`.
    """

    def __init__(
        self,
        modalities: list[Modality],
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        version: str = "v1",
        hidden_sizes: list[int] | None = None,
        rope_time_scale: float = 1.0 / 30.0,
        rope_coordinate_scale: float = 1.0,
        pooler=None,
    ):
        super().__init__()
        spec = version_spec(version)
        # The ModelConfig this encoder was built from (set by from_config): input preparation
        # (prepare_inputs) reads its version and bandsets.
        self.model_config = None
        # Where the weights came from (see LatentMIM.provenance); loaders fill it.
        self.provenance: dict = {"source": "random initialization", "version": version}
        self.version = version
        self.spec = spec
        self.modalities = {m.name: m for m in modalities}
        self.dim = dim
        self.rope_time_scale = rope_time_scale
        self.rope_coordinate_scale = rope_coordinate_scale
        self.patch_embeddings = PatchEmbeddings(
            modalities, dim, (hidden_sizes or []) if spec.linear_patch_embed else None
        )
        slot = None
        if spec.slot_index_encoding:
            slot = "table" if spec.slot_index_table else "computed"
        self.composite_encodings = CompositeEncodings(
            dim, modalities, slot_index=slot, spatial=spec.spatial_encoding
        )
        rope = "mixed" if spec.rope_3d else None
        self.blocks = nn.ModuleList(
            [Block(dim, num_heads, mlp_ratio, drop_path, rope=rope) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.attention_pooler = None
        head_dim = dim
        if spec.attention_pooler:
            if pooler is None:
                raise ValueError(f"{version} needs an attention pooler configuration")
            self.attention_pooler = AttentionPooler(
                dim, pooler.pooler_dim, pooler.pooler_depth, pooler.num_heads or num_heads,
                pooler.attn_dim, pooler.per_depth_read_proj, pooler.student_dims,
                pooler.student_output_norm, mlp_ratio,
            )  # fmt: skip
            head_dim = pooler.pooler_dim
        self.project_and_aggregate = ProjectAndAggregate(head_dim)

    @classmethod
    def from_config(cls, config) -> Encoder:
        """A randomly initialized encoder of a :class:`~geolatent.model.config.ModelConfig`."""
        from geolatent.model.config import model_modalities

        enc = cls(
            model_modalities(config), config.embedding_size, config.depth, config.num_heads,
            config.mlp_ratio, config.drop_path, config.version, config.patch_embed_hidden_sizes,
            config.rope_temporal_coordinate_scale, config.rope_coordinate_scale, config.pooler,
        )  # fmt: skip
        enc.model_config = config
        return enc

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

    def token_spacing(self, patch_size: int) -> float:
        """Distance between neighbouring token centres in RoPE units (10 m pixels * scale)."""
        return (10.0 * patch_size / 10.0) * self.rope_coordinate_scale

    def positions(
        self, tokens: dict[str, torch.Tensor], timestamps: torch.Tensor, patch_size: int
    ) -> torch.Tensor:
        """``[B, N, 3]`` (t, row, col) of the flattened tokens (v1.2+ RoPE)."""
        per_mod = {
            m: rope_lib.token_positions(
                timestamps, tok.shape[1:3], tok.shape[3], tok.shape[4],
                self.token_spacing(patch_size), self.rope_time_scale,
            )  # fmt: skip
            for m, tok in tokens.items()
        }
        return flatten(per_mod, trailing_dims=1)[0]

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        timestamps: torch.Tensor,
        patch_size: int,
        token_mask: dict[str, torch.Tensor] | None = None,
        location_patch_size: int | None = None,
    ) -> EncoderOutput:
        """Encode normalized inputs: :meth:`forward_features`, then :meth:`forward_head`.

        Args:
            inputs: per modality normalized ``[B, H, W, T, C]`` (static modalities T = 1).
            timestamps: int ``[B, T, 3]`` (day, month 0-11, year).
            patch_size: p in 1..8.
            token_mask: optional per modality ``[B, H/p, W/p, T, S]`` roles; only
                ``ONLINE_ENCODER`` tokens are attended (each sample on its own). None encodes every
                token (the reference's inference "fast pass").
            location_patch_size: v1.3: pixels per location query (divides p; default p).
        """
        features = self.forward_features(inputs, timestamps, patch_size, token_mask)
        return self.forward_head(features, location_patch_size)

    def forward_features(
        self,
        inputs: dict[str, torch.Tensor],
        timestamps: torch.Tensor,
        patch_size: int,
        token_mask: dict[str, torch.Tensor] | None = None,
    ) -> EncodedTokens:
        """Tokenize, encode and normalize (the backbone, timm's ``forward_features``); arguments
        as :meth:`forward`. Returns the tokens of every modality and what :meth:`forward_head`
        needs to pool them."""
        tokens = self.tokenize(inputs, timestamps, patch_size, token_mask)
        x, layout = flatten(tokens, trailing_dims=1)
        pos = self.positions(tokens, timestamps, patch_size) if self.spec.rope_3d else None
        if token_mask is None:
            token_mask = {
                m: torch.zeros(t.shape[:5], dtype=torch.long, device=t.device)
                for m, t in tokens.items()
            }
            for blk in self.blocks:
                x = blk(x, pos=pos)
            h = x = self.norm(x)
            h_pos, key_valid = pos, None
        else:
            sel, _ = flatten({m: token_mask[m] for m in tokens}, trailing_dims=0)
            packing = Packing.from_selection(sel == MaskValue.ONLINE_ENCODER)
            h = packing.gather(x)
            h_pos = None if pos is None else packing.gather(pos)
            key_valid = None if bool(packing.attend.all()) else packing.attend
            for blk in self.blocks:
                h = blk(h, key_valid=key_valid, pos=h_pos)
            h = self.norm(h)
            x = packing.scatter(h)
            key_valid = packing.attend if key_valid is not None else None
        return EncodedTokens(layout.split(x), token_mask, h, h_pos, key_valid, patch_size)

    def forward_head(self, features: EncodedTokens,
                     location_patch_size: int | None = None) -> EncoderOutput:
        """Pool and project (timm's ``forward_head``): the mean over encoded tokens, the
        contrastive projection, and for v1.3 the attention pooler's location tokens."""
        out_tokens, token_mask = features.tokens, features.token_mask
        patch_size = features.patch_size
        pooled = pooled_mean(out_tokens, token_mask)
        if self.attention_pooler is None:
            return EncoderOutput(out_tokens, token_mask, pooled, self.project_and_aggregate(pooled))
        h, h_pos, key_valid = features.packed, features.packed_pos, features.key_valid
        grid = next(iter(out_tokens.values())).shape[1:3]
        s = patch_size if location_patch_size is None else int(location_patch_size)
        if s < 1 or patch_size % s:
            raise ValueError(
                f"location_patch_size must divide patch_size={patch_size}, got {s}"
            )
        spacing = self.token_spacing(patch_size)
        qpos = query_coordinates(grid, patch_size, s, spacing, h.device)
        loc = self.attention_pooler(h, h_pos[..., 1:] if h_pos is not None else None,
                                    key_valid, qpos)  # fmt: skip
        b = loc.shape[0]
        loc = loc.reshape(b, grid[0] * patch_size // s, grid[1] * patch_size // s, -1)
        emb = self.attention_pooler.embedding(loc) if self.attention_pooler.student_dims else None
        return EncoderOutput(
            out_tokens, token_mask, pooled,
            self.project_and_aggregate(loc.mean(dim=(1, 2))), loc, emb,
        )  # fmt: skip
