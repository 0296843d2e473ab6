"""Flexible patch embedding per (modality, bandset), any patch size 1..8.

v1: one 8x8 stride-8 convolution per bandset. v1.1+ (linear): a per-pixel MLP
(``pixel_proj``: Linear -> ReLU per hidden width) then each 8x8 block flattened in (row, column,
feature) order through ``proj`` = Linear(64 * F, D).

For a patch size ``p != 8`` the input planes are resized to ``(H/p*8, W/p*8)`` with bicubic,
antialiased interpolation (PyTorch semantics), then the 8x8 stride-8 convolution runs; the
kernel is never resized. This is v1's FlexiPatchEmbed and reproduces its outputs exactly.

Missing pixels: v1 resizes planes that contain the -99999 fill, which smears the fill into the
neighbouring valid tokens when a plane is only partly missing. geolatent fills missing pixels
with the mean of the valid pixels of the same plane (sample, timestep, channel) before resizing,
so valid tokens stay sane; tokens whose whole patch is missing are masked by the caller. Whole
planes that are missing never reach a valid token, so outputs on complete inputs and on
whole-plane gaps are identical to v1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geolatent.modalities import MISSING_VALUE, Modality

BASE_PATCH_SIZE = 8


class BandsetProjection(nn.Module):
    """``Conv2d(C_s, D, 8, 8)`` for one bandset; key layout ``<modality>__<s>.proj``."""

    def __init__(self, in_channels: int, dim: int, kernel: int = BASE_PATCH_SIZE):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=kernel, stride=kernel)


def fill_missing_pixels(x: torch.Tensor) -> torch.Tensor:
    """Replace missing entries (-99999 or NaN) by the mean of the valid entries of their plane.

    Args:
        x: ``[N, C, H, W]`` planes.

    Returns:
        ``[N, C, H, W]`` without missing entries (planes with no valid pixel become 0).
    """
    missing = (x == MISSING_VALUE) | torch.isnan(x)
    if not bool(missing.any()):
        return x
    valid = (~missing).to(x.dtype)
    clean = torch.where(missing, torch.zeros((), dtype=x.dtype, device=x.device), x)
    count = valid.sum(dim=(-2, -1), keepdim=True)
    mean = clean.sum(dim=(-2, -1), keepdim=True) / count.clamp_min(1)
    return torch.where(missing, mean.expand_as(x), x)


def resize_planes(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` planes so a ``p``-pixel patch becomes 8x8 (bicubic, antialias)."""
    if patch_size == BASE_PATCH_SIZE:
        return x
    h, w = x.shape[-2:]
    size = (h // patch_size * BASE_PATCH_SIZE, w // patch_size * BASE_PATCH_SIZE)
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)


class LinearBandsetProjection(nn.Module):
    """v1.1+ linear patch embedding of one bandset: keys ``pixel_proj.{0,2,..}``, ``proj``."""

    def __init__(self, in_channels: int, dim: int, hidden_sizes: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for hsz in hidden_sizes:
            layers += [nn.Linear(width, hsz), nn.ReLU()]
            width = hsz
        self.pixel_proj = nn.Sequential(*layers)
        self.proj = nn.Linear(BASE_PATCH_SIZE * BASE_PATCH_SIZE * width, dim)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        """``[N, C, 8h, 8w]`` -> ``[N, D, h, w]``."""
        n, _, hh, ww = planes.shape
        k = BASE_PATCH_SIZE
        feats = self.pixel_proj(planes.permute(0, 2, 3, 1))  # [N, 8h, 8w, F]
        f = feats.shape[-1]
        blocks = feats.reshape(n, hh // k, k, ww // k, k, f).permute(0, 1, 3, 2, 4, 5)
        tok = self.proj(blocks.reshape(n, hh // k, ww // k, k * k * f))  # [N, h, w, D]
        return tok.permute(0, 3, 1, 2)


class ModalityPatchEmbed(nn.Module):
    """Patch embedding of one modality: ``[B, H, W, T, C]`` -> ``[B, H/p, W/p, T, S, D]``."""

    def __init__(self, modality: Modality, dim: int, hidden_sizes: list[int] | None = None):
        super().__init__()
        self.modality = modality
        self.dim = dim
        self.linear = hidden_sizes is not None
        # Registered as direct children so keys read `<modality>__<s>.proj.weight`, as released.
        self._names = [f"{modality.name}__{i}" for i in range(modality.num_bandsets)]
        for name, bs in zip(self._names, modality.bandsets, strict=True):
            proj = (
                LinearBandsetProjection(len(bs), dim, hidden_sizes)
                if hidden_sizes is not None
                else BandsetProjection(len(bs), dim)
            )
            self.add_module(name, proj)
        self._slices = modality.bandset_slices()

    def forward(
        self,
        x: torch.Tensor,
        patch_size: int,
        bandset_active: list[bool] | None = None,
        fill_missing: bool = True,
    ) -> torch.Tensor:
        """Embed normalized values.

        Args:
            x: ``[B, H, W, T, C]`` normalized input (missing = -99999), H and W divisible by p.
            patch_size: p in 1..8.
            bandset_active: optional per-bandset flags; inactive bandsets are not computed and
                come back as zeros (used when no token of that bandset is encoded).
            fill_missing: fill missing pixels before resizing (see module docstring).

        Returns:
            ``[B, H/p, W/p, T, S, D]``.
        """
        b, h, w, t, c = x.shape
        p = patch_size
        planes = x.permute(0, 3, 4, 1, 2).reshape(b * t, c, h, w)
        if fill_missing:
            planes = fill_missing_pixels(planes)
        planes = resize_planes(planes, p)
        outs = []
        for i, (name, sl) in enumerate(zip(self._names, self._slices, strict=True)):
            if bandset_active is not None and not bandset_active[i]:
                outs.append(x.new_zeros(b * t, self.dim, h // p, w // p))
                continue
            module = getattr(self, name)
            outs.append(module(planes[:, sl]) if self.linear else module.proj(planes[:, sl]))
        y = torch.stack(outs, dim=1)  # [B*T, S, D, h, w]
        y = y.reshape(b, t, len(outs), self.dim, h // p, w // p)
        return y.permute(0, 4, 5, 1, 2, 3)  # [B, h, w, T, S, D]


class PatchEmbeddings(nn.Module):
    """All modalities' patch embeddings; keys ``per_modality_embeddings.<m>.<m>__<s>.proj.*``."""

    def __init__(self, modalities: list[Modality], dim: int, hidden_sizes: list[int] | None = None):
        super().__init__()
        self.per_modality_embeddings = nn.ModuleDict(
            {m.name: ModalityPatchEmbed(m, dim, hidden_sizes) for m in modalities}
        )

    def forward(self, modality: str, x: torch.Tensor, patch_size: int, **kw) -> torch.Tensor:
        return self.per_modality_embeddings[modality](x, patch_size, **kw)
