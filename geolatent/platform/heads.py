"""Task heads on top of the encoder, and the encoder + head model.

Every head reads the encoder's one output type, :class:`~geolatent.model.encoder.EncoderOutput`
(plus the normalized input batch, for the pixel decoder's skip path): ``head(out, batch)``. The
output's aggregates are NaN where nothing was encoded (its documented rule); a head that needs
finite inputs fills them with 0 itself (:func:`finite_pooled`, :func:`finite_feature_map`).

* :class:`PooledHead` (window classification / regression): LayerNorm then ``Linear`` (or a
  small MLP) on the pooled vector ``[B, D]`` -> ``[B, out]``.
* :class:`PixelDecoderHead` (segmentation / per-pixel regression): a light U-Net-style decoder.
  Patch tokens ``[B, h, w, D]`` (``h = H/p``) are projected and refined at token resolution,
  upsampled bilinearly to full resolution and fused with a full-resolution skip path computed
  from the normalized input pixels (:func:`~geolatent.platform.encoder_inputs.pixel_summary`),
  which restores the boundaries a ``p``-pixel token cannot draw -> ``[B, out, H, W]``.

Heads are described by a :class:`HeadSpec` (saved in the model folder) and built by
:func:`build_head`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from geolatent.model.encoder import Encoder, EncoderOutput
from geolatent.platform.encoder_inputs import EncoderBatch, pixel_summary

HeadKind = Literal["pooled", "pixel"]


@dataclass
class HeadSpec:
    """Everything needed to rebuild a head.

    Attributes:
        kind: ``pooled`` or ``pixel``.
        dim: encoder width D.
        out: outputs (classes, or 1 for regression).
        hidden: hidden width (pooled: 0 = linear head; pixel: decoder channels).
        pixel_modalities: modalities of the pixel decoder's skip path (channel layout).
        dropout: dropout before the last layer.
    """

    kind: HeadKind
    dim: int
    out: int
    hidden: int = 0
    pixel_modalities: list[str] = field(default_factory=list)
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> HeadSpec:
        return cls(**d)


def finite_pooled(out: EncoderOutput) -> torch.Tensor:
    """``[B, D]`` the pooled vector with 0 for a sample without any encoded token (NaN in
    ``out.pooled``)."""
    return torch.nan_to_num(out.pooled)


def finite_feature_map(out: EncoderOutput) -> torch.Tensor:
    """``[B, h, w, D]`` the feature map with 0 at locations where nothing was encoded (NaN in
    ``out.feature_map``; :attr:`EncoderOutput.token_valid` keeps where)."""
    return torch.nan_to_num(out.feature_map)


class PooledHead(nn.Module):
    """``[B, D]`` -> ``[B, out]``: LayerNorm, dropout, Linear (MLP when ``hidden > 0``)."""

    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.norm = nn.LayerNorm(spec.dim)
        self.drop = nn.Dropout(spec.dropout)
        if spec.hidden > 0:
            self.mlp = nn.Sequential(nn.Linear(spec.dim, spec.hidden), nn.GELU(),
                                     nn.Linear(spec.hidden, spec.out))
        else:
            self.mlp = nn.Sequential(nn.Linear(spec.dim, spec.out))

    def forward(self, out: EncoderOutput, batch: EncoderBatch) -> torch.Tensor:
        return self.mlp(self.drop(self.norm(finite_pooled(out))))


def _conv_block(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.GELU(),
    )


class PixelDecoderHead(nn.Module):
    """``[B, h, w, D]`` tokens (+ input pixels) -> ``[B, out, H, W]`` (see module docstring)."""

    def __init__(self, spec: HeadSpec, pixel_channels: int):
        super().__init__()
        hid = spec.hidden or 64
        skip = max(8, hid // 2)
        self.modalities = list(spec.pixel_modalities)
        self.token_norm = nn.LayerNorm(spec.dim)
        self.token_proj = nn.Sequential(nn.Conv2d(spec.dim, hid, 1), nn.GELU(),
                                        _conv_block(hid, hid))
        self.skip = _conv_block(pixel_channels, skip) if pixel_channels else None
        self.fuse = _conv_block(hid + (skip if pixel_channels else 0), hid)
        self.drop = nn.Dropout2d(spec.dropout)
        self.classifier = nn.Conv2d(hid, spec.out, 1)

    def forward(self, out: EncoderOutput, batch: EncoderBatch) -> torch.Tensor:
        b, h_full, w_full = batch.shape
        x = self.token_norm(finite_feature_map(out)).permute(0, 3, 1, 2)  # [B, D, h, w]
        x = self.token_proj(x)
        x = F.interpolate(x, size=(h_full, w_full), mode="bilinear", align_corners=False)
        if self.skip is not None:
            pix = pixel_summary(batch, self.modalities).to(x.dtype)
            x = torch.cat([x, self.skip(pix)], dim=1)
        return self.classifier(self.drop(self.fuse(x)))


def pixel_channels(modalities: Sequence[str]) -> int:
    """Channels of :func:`~geolatent.platform.encoder_inputs.pixel_summary` for ``modalities``."""
    from geolatent.modalities import get_modality

    return sum(get_modality(m).num_bands + 1 for m in modalities)


def build_head(spec: HeadSpec) -> nn.Module:
    """The head described by ``spec`` (freshly initialized)."""
    if spec.kind == "pooled":
        return PooledHead(spec)
    if spec.kind == "pixel":
        return PixelDecoderHead(spec, pixel_channels(spec.pixel_modalities))
    raise ValueError(f"unknown head kind {spec.kind!r}; use pooled or pixel")


class TaskModel(nn.Module):
    """Encoder + head. ``forward(batch)`` returns the head's output:
    pooled ``[B, out]``, pixel ``[B, out, H, W]``."""

    def __init__(self, encoder: Encoder, head: nn.Module, spec: HeadSpec):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.spec = spec
        self.encoder_trainable = True

    def encode(self, batch: EncoderBatch) -> EncoderOutput:
        """Run the encoder (without autograd while it is frozen). The aggregates the heads read
        (``feature_map``, ``pooled``) are computed here, under the same autograd rule."""
        grad = torch.is_grad_enabled() and self.encoder_trainable
        with torch.set_grad_enabled(grad):
            out = self.encoder(batch.inputs, batch.timestamps, batch.patch_size, batch.token_mask)
            out.feature_map  # noqa: B018 - a cached property: computed once, here
        return out

    def forward(self, batch: EncoderBatch) -> torch.Tensor:
        return self.head(self.encode(batch), batch)

    def set_encoder_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze the encoder; a frozen encoder also runs in eval mode."""
        self.encoder_trainable = trainable
        self.encoder.requires_grad_(trainable)
        self.encoder.train(trainable and self.training)

    def train(self, mode: bool = True) -> TaskModel:
        super().train(mode)
        self.encoder.train(mode and self.encoder_trainable)
        return self
