"""Model configuration (every release version); sizes come from :mod:`geolatent.model.versions`."""

from __future__ import annotations

from pydantic import field_validator, model_validator

from geolatent.config import StrictModel, check_known
from geolatent.modalities import MODALITIES
from geolatent.model.versions import PIXEL_MLP_HIDDEN, SIZE_TABLE, Version, version_spec

# D, encoder depth, heads, by size name (derived from the one size table).
SIZES: dict[str, tuple[int, int, int]] = {
    n: (s.embedding_size, s.depth, s.num_heads) for n, s in SIZE_TABLE.items()
}


class PoolerConfig(StrictModel):
    """The v1.3 attention pooler and its distilled student."""

    pooler_dim: int
    pooler_depth: int = 2
    per_depth_read_proj: bool = False
    attn_dim: int | None = None
    num_heads: int | None = None
    student_dims: list[int] = []
    student_output_norm: bool = True


class ModelConfig(StrictModel):
    """Everything needed to build a :class:`~geolatent.model.latent_mim.LatentMIM`."""

    version: Version = "v1"
    size: str | None = None
    embedding_size: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    decoder_embedding_size: int
    decoder_depth: int = 4
    decoder_num_heads: int
    output_embedding_size: int | None = None
    modalities: list[str] = list(MODALITIES)
    max_patch_size: int = 8
    max_sequence_length: int = 12
    drop_path: float = 0.1
    decoder_drop_path: float = 0.0
    # v1.1+: per modality band groups (one token per group); absent modalities keep the registry's.
    band_groups: dict[str, list[list[str]]] = {}
    # v1.1+: widths of the per-pixel MLP of the linear patch embedding.
    patch_embed_hidden_sizes: list[int] = []
    # v1.2+: RoPE coordinate scales (t in days * scale; rows / columns in 10 m pixels * scale).
    rope_temporal_coordinate_scale: float = 1.0 / 30.0
    rope_coordinate_scale: float = 1.0
    # v1.3
    pooler: PoolerConfig | None = None
    projection_only_target: bool = False

    @field_validator("modalities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; known: {list(MODALITIES)}")
        return v

    @field_validator("max_patch_size")
    @classmethod
    def _patch(cls, v: int) -> int:
        if v != 8:
            raise ValueError(f"only max_patch_size 8 (the released kernel) is supported, got {v}")
        return v

    @model_validator(mode="after")
    def _version_fields(self) -> ModelConfig:
        spec = version_spec(self.version)
        if spec.max_timesteps is not None and self.max_sequence_length != spec.max_timesteps:
            raise ValueError(
                f"only max_sequence_length {spec.max_timesteps} is supported by {self.version} "
                f"(its time table has 12 monthly rows), got {self.max_sequence_length}"
            )
        if not spec.linear_patch_embed and self.patch_embed_hidden_sizes:
            raise ValueError(f"{self.version} has no per-pixel MLP (patch_embed_hidden_sizes)")
        if spec.attention_pooler != (self.pooler is not None):
            raise ValueError(
                f"{self.version} {'needs' if spec.attention_pooler else 'has no'} an attention "
                "pooler (pooler)"
            )
        for m, groups in self.band_groups.items():
            if m not in MODALITIES:
                raise ValueError(f"band_groups: unknown modality {m!r}")
            flat = [b for g in groups for b in g]
            if tuple(flat) != MODALITIES[m].bands:
                raise ValueError(
                    f"band_groups[{m!r}] = {groups} must list every band of {m} once, in the "
                    f"registry order {list(MODALITIES[m].bands)}"
                )
        if self.embedding_size % self.num_heads:
            raise ValueError(
                f"embedding_size {self.embedding_size} is not divisible by num_heads "
                f"{self.num_heads}"
            )
        return self

    @classmethod
    def from_size(cls, size: str, version: str = "v1", **overrides) -> ModelConfig:
        """The configuration of ``size`` (nano, tiny, small, base, large) for ``version``."""
        check_known(size, SIZES, "model size")
        spec = version_spec(version)
        d, depth, heads = SIZES[size]
        fields: dict = dict(
            version=version, size=size, embedding_size=d, depth=depth, num_heads=heads,
            decoder_embedding_size=d, decoder_num_heads=heads,
        )  # fmt: skip
        if spec.one_bandset:
            fields["band_groups"] = {
                m: [list(MODALITIES[m].bands)] for m in ("sentinel2_l2a", "landsat")
            }
        if spec.linear_patch_embed:
            fields["patch_embed_hidden_sizes"] = list(PIXEL_MLP_HIDDEN[size])
        if spec.attention_pooler:
            fields["pooler"] = PoolerConfig(
                pooler_dim=d, attn_dim=d, pooler_depth=4, per_depth_read_proj=True,
                student_dims=[128, 64],
            )  # fmt: skip
            fields["projection_only_target"] = True
        fields.update(overrides)
        return cls(**fields)


def model_modalities(config: ModelConfig) -> list:
    """The registry entries of ``config.modalities`` with the model's band groups as bandsets."""
    import dataclasses

    out = []
    for name in config.modalities:
        mod = MODALITIES[name]
        groups = config.band_groups.get(name)
        if groups is not None:
            res = max(mod.resolutions_m)
            mod = dataclasses.replace(
                mod, bandsets=tuple(tuple(g) for g in groups), resolutions_m=(res,) * len(groups)
            )
        out.append(mod)
    return out
