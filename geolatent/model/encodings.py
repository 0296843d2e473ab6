"""Composite encodings added to every token: bandset, time index, month and space.

The embedding width D is split in four quarters of D/4:
``[channel | temporal position | month | spatial]``. Static modalities receive only the channel
and spatial quarters. Which quarters a version uses (v1.2+ keep only channel and month; time
and space then enter through RoPE) is set by ``slot_index`` and ``spatial``; unused quarters
are zero. Frequencies follow v1 exactly, including its quirk: the 1D sin-cos uses
``w_i = 10000 ** (-i / (2 d))`` (exponent ``i/(2d)``, not the textbook ``2i/d``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from geolatent.modalities import MAX_TIMESTEPS, Modality


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """v1 1D sin-cos encoding.

    Args:
        positions: float tensor of any shape ``[...]``.
        dim: even output width ``d``.

    Returns:
        ``[..., d]`` = ``[sin(pos*w_i)]_{i<d/2} ++ [cos(pos*w_i)]_{i<d/2}``,
        ``w_i = 10000^(-i/(2d))``.
    """
    if dim % 2:
        raise ValueError(f"sin-cos width must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / dim / 2.0)
    out = positions.to(torch.float64)[..., None] * omega.to(positions.device)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=-1).to(torch.float32)


def month_table(dim: int) -> torch.Tensor:
    """Frozen month table ``[12, dim]``: dim/2 copies of sin(2 pi m/12), then dim/2 of cos."""
    angle = torch.arange(12, dtype=torch.float64) * (2 * math.pi / 12)
    half = dim // 2
    table = torch.cat(
        [torch.sin(angle)[:, None].expand(12, half), torch.cos(angle)[:, None].expand(12, half)],
        dim=1,
    )
    return table.to(torch.float32)


class CompositeEncodings(nn.Module):
    """Adds channel / time / month / space encodings to per-modality token grids.

    State-dict keys follow the releases: ``pos_embed`` [12, D/4] (v1 only) and
    ``month_embed.weight`` [12, D/4] (both frozen), ``per_modality_channel_embeddings.<modality>``
    [S, D/4] (learned).

    Args:
        slot_index: ``"table"`` (v1: a stored 12-row table), ``"computed"`` (v1.1+: any T) or
            None (no slot-index quarter).
        spatial: add the spatial sin-cos quarter (v1, v1.1).
        static_slot_index: whether static modalities get the slot-index quarter (never, so far).
    """

    def __init__(
        self,
        dim: int,
        modalities: list[Modality],
        max_timesteps: int = MAX_TIMESTEPS,
        slot_index: str | None = "table",
        spatial: bool = True,
    ):
        super().__init__()
        if dim % 4:
            raise ValueError(f"embedding width must be divisible by 4, got {dim}")
        self.dim = dim
        q = dim // 4
        self.slot_index = slot_index
        self.spatial = spatial
        if slot_index == "table":
            self.pos_embed = nn.Parameter(
                sincos_1d(torch.arange(max_timesteps, dtype=torch.float32), q), requires_grad=False
            )
        self.month_embed = nn.Embedding(12, q)
        self.month_embed.weight = nn.Parameter(month_table(q), requires_grad=False)
        self.per_modality_channel_embeddings = nn.ParameterDict(
            {m.name: nn.Parameter(torch.zeros(m.num_bandsets, q)) for m in modalities}
        )
        self._modalities = {m.name: m for m in modalities}

    def encoding(
        self,
        modality: str,
        grid_hw: tuple[int, int],
        timestamps: torch.Tensor,
        patch_size: int,
        input_res_m: float = 10.0,
    ) -> torch.Tensor:
        """The encoding to add to one modality's tokens.

        Args:
            modality: registry name.
            grid_hw: token grid ``(h, w)``.
            timestamps: int ``[B, T, 3]`` (day, month 0-11, year); only the month is used.
            patch_size: p, so positions count 10 m pixels (``gsd_ratio = input_res * p / 10``).

        Returns:
            ``[B, h, w, T, S, D]`` for multitemporal modalities, ``[1, h, w, 1, S, D]`` for static
            ones (broadcastable against the tokens).
        """
        mod = self._modalities[modality]
        q = self.dim // 4
        h, w = grid_hw
        chan = self.per_modality_channel_embeddings[modality]  # [S, q]
        dev, dt = chan.device, chan.dtype
        s = mod.num_bandsets
        gsd_ratio = input_res_m * patch_size / 10.0
        if self.spatial:
            # Spatial quarter: column (x) first, then row (y); each axis gets q/2.
            cols = sincos_1d(torch.arange(w, device=dev) * gsd_ratio, q // 2).to(dt)  # [w, q/2]
            rows = sincos_1d(torch.arange(h, device=dev) * gsd_ratio, q // 2).to(dt)  # [h, q/2]
            spatial = torch.cat(
                [cols[None, :, :].expand(h, w, -1), rows[:, None, :].expand(h, w, -1)], -1
            )
        else:
            spatial = chan.new_zeros(h, w, q)
        if mod.multitemporal:
            b, t = timestamps.shape[:2]
            if self.slot_index == "table":
                if t > self.pos_embed.shape[0]:
                    raise ValueError(
                        f"this model's time table has {self.pos_embed.shape[0]} rows; got T={t}"
                    )
                time = self.pos_embed[:t].to(dt)  # [T, q]
            elif self.slot_index == "computed":
                time = sincos_1d(torch.arange(t, dtype=torch.float32, device=dev), q).to(dt)
            else:
                time = chan.new_zeros(t, q)
            month = self.month_embed(timestamps[..., 1].long().to(dev)).to(dt)  # [B, T, q]
            enc = torch.cat(
                [
                    chan[None, None, None, None].expand(b, h, w, t, s, q),
                    time[None, None, None, :, None].expand(b, h, w, t, s, q),
                    month[:, None, None, :, None].expand(b, h, w, t, s, q),
                    spatial[None, :, :, None, None].expand(b, h, w, t, s, q),
                ],
                dim=-1,
            )
        else:
            zeros = chan.new_zeros(1, h, w, 1, s, q)
            enc = torch.cat(
                [
                    chan[None, None, None, None].expand(1, h, w, 1, s, q),
                    zeros,
                    zeros,
                    spatial[None, :, :, None, None].expand(1, h, w, 1, s, q),
                ],
                dim=-1,
            )
        return enc
