"""Model configuration and the v1 size table."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from geolatent.modalities import MODALITIES

# D, encoder depth, heads. The decoder has depth 4 and the encoder's width and heads.
SIZES: dict[str, tuple[int, int, int]] = {
    "nano": (128, 4, 8),
    "tiny": (192, 12, 3),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


class ModelConfig(BaseModel):
    """Everything needed to build a :class:`~geolatent.model.latent_mim.LatentMIM`."""

    model_config = ConfigDict(extra="forbid")

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
            raise ValueError(f"only max_patch_size 8 (the v1 kernel) is supported, got {v}")
        return v

    @field_validator("max_sequence_length")
    @classmethod
    def _seq(cls, v: int) -> int:
        if v != 12:
            raise ValueError(f"only max_sequence_length 12 (monthly, v1) is supported, got {v}")
        return v

    @classmethod
    def from_size(cls, size: str, **overrides) -> ModelConfig:
        """The v1 configuration of ``size`` (nano, tiny, base, large)."""
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; choose one of {list(SIZES)}")
        d, depth, heads = SIZES[size]
        fields = dict(
            size=size, embedding_size=d, depth=depth, num_heads=heads,
            decoder_embedding_size=d, decoder_num_heads=heads,
        )  # fmt: skip
        fields.update(overrides)
        return cls(**fields)
