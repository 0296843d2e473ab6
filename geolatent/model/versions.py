"""What each OlmoEarth release version changes, and the one table of model sizes.

=========  =====================================================================================
version    changes (each builds on the one above)
=========  =====================================================================================
v1         Conv2d(C_s, D, 8, 8) patch projection per bandset (S2: 3 bandsets, Landsat: 2);
           additive encodings ``[channel | slot index | month | spatial sincos]`` (D/4 each);
           a stored ``pos_embed`` table limits T to 12; missing band inside a present bandset:
           copy of the present band nearest in wavelength (the v1 normalizer).
v1.1       one bandset per modality (``tokenization_config``); linear patch embedding with a
           per-pixel MLP (``patch_embed_hidden_sizes``); the slot-index quarter is computed, so
           any T works; missing band inside a present bandset: 0 after normalization (the models
           were trained with band dropout).
v1.2       3-D mixed RoPE in every attention (time from the real dates, rows, columns; learned
           ``rope_mixed_freqs``); only the channel and month quarters of the additive encodings
           remain; timestamps (real dates) are required; any T; non-square grids.
v1.3       v1.2 plus an attention pooler (learned location queries reading the encoder tokens
           with 2-D axial RoPE) producing ``location_tokens``, and a distilled student embedding
           (``location_embedding``, Matryoshka prefixes); the decoder reads the location tokens;
           the target encoder is projection-only; the checkpoint carries training-only heads
           that inference ignores.
=========  =====================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Version = Literal["v1", "v1.1", "v1.2", "v1.3"]
VERSIONS: tuple[str, ...] = ("v1", "v1.1", "v1.2", "v1.3")


@dataclass(frozen=True)
class VersionSpec:
    """Architecture switches of one release version."""

    name: str
    linear_patch_embed: bool  # v1.1+: per-pixel MLP + Linear(64*F, D) instead of a Conv2d
    one_bandset: bool  # v1.1+: S2 and Landsat tokenized as one band group
    slot_index_table: bool  # v1 only: the slot-index encoding is a stored [12, D/4] table
    slot_index_encoding: bool  # encoder adds the slot-index quarter (v1, v1.1)
    spatial_encoding: bool  # encoder adds the spatial sincos quarter (v1, v1.1)
    rope_3d: bool  # v1.2+: mixed 3-D RoPE in the encoder
    attention_pooler: bool  # v1.3
    missing_band_fill: Literal["nearest_wavelength", "zero"]
    dates_required: bool  # the model uses real dates (not only the month)
    max_timesteps: int | None  # None: any T


VERSION_SPECS: dict[str, VersionSpec] = {
    "v1": VersionSpec("v1", False, False, True, True, True, False, False,
                      "nearest_wavelength", False, 12),
    "v1.1": VersionSpec("v1.1", True, True, False, True, True, False, False, "zero", False, None),
    "v1.2": VersionSpec("v1.2", True, True, False, False, False, True, False, "zero", True, None),
    "v1.3": VersionSpec("v1.3", True, True, False, False, False, True, True, "zero", True, None),
}  # fmt: skip


def version_spec(version: str) -> VersionSpec:
    """The :class:`VersionSpec` of ``version`` with a clear error for unknown names."""
    try:
        return VERSION_SPECS[version]
    except KeyError:
        raise ValueError(f"unknown model version {version!r}; known: {list(VERSIONS)}") from None


@dataclass(frozen=True)
class Size:
    """One released model size: encoder width, depth and heads (decoder: depth 4, same width)."""

    name: str
    embedding_size: int
    depth: int
    num_heads: int


SIZE_TABLE: dict[str, Size] = {
    s.name: s
    for s in (
        Size("nano", 128, 4, 8),
        Size("tiny", 192, 12, 3),
        Size("small", 384, 12, 6),
        Size("base", 768, 12, 12),
        Size("large", 1024, 24, 16),
    )
}
"""Every size of every release (v1: nano, tiny, base, large; v1.1: nano, tiny, base; v1.2:
nano, tiny, small, base; v1.3: base)."""

# Per-pixel MLP width of the linear patch embedding (v1.1+) by size, for models built from a size
# name. These reproduce the reference package's parameter counts of every released v1.1 / v1.2 /
# v1.3 size (tests/model/test_versions.py); no v1.1+ Large exists (its entry is geolatent's).
# Loading a release never uses this table: its config.json states the widths.
PIXEL_MLP_HIDDEN: dict[str, list[int]] = {
    "nano": [12], "tiny": [64], "small": [64], "base": [64], "large": [64],
}  # fmt: skip


def size_name(embedding_size: int, depth: int, num_heads: int) -> str | None:
    """The size name of an encoder shape, or None for a custom shape."""
    for s in SIZE_TABLE.values():
        if (s.embedding_size, s.depth, s.num_heads) == (embedding_size, depth, num_heads):
            return s.name
    return None
