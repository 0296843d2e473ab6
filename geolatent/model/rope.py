"""Rotary position embeddings: v1.2's mixed 3-D RoPE and v1.3's 2-D axial RoPE.

Both rotate feature pairs ``(2j, 2j+1)`` of each head by an angle theta:
``(x[2j] cos - x[2j+1] sin, x[2j+1] cos + x[2j] sin)``; v is never rotated.

* mixed 3-D (learned): ``theta = (t*F[0,h,j] + row*F[1,h,j]) + col*F[2,h,j]`` in float32, in that
  order (angles reach hundreds of radians, so the summation order is visible at 1e-5).
* 2-D axial (fixed): the first half of the head turns by ``row * 10000^(-2j/d)``, the second by
  ``col * 10000^(-2j/d)`` (d = head_dim / 2).
"""

from __future__ import annotations

import torch

# Cumulative days before each month (non-leap), as the reference's time coordinate uses.
_MONTH_START = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def time_coordinate(timestamps: torch.Tensor, scale: float) -> torch.Tensor:
    """``[B, T]`` float32 RoPE time coordinate of ``[B, T, 3]`` (day, month 0-11, year) dates.

    ``days = (year - 2000) * 365.25 + C[month] + (day - 1)``, times ``scale`` (1/30: months),
    all in float32 as the reference computes it.
    """
    ts = timestamps.long()
    c = torch.tensor(_MONTH_START, dtype=torch.float32, device=ts.device)
    year = (ts[..., 2] - 2000).to(torch.float32)
    days = year * torch.tensor(365.25, dtype=torch.float32) + c[ts[..., 1]]
    days = days + (ts[..., 0] - 1).to(torch.float32)
    return days * torch.tensor(scale, dtype=torch.float32)


def token_positions(
    timestamps: torch.Tensor,
    grid_hw: tuple[int, int],
    num_steps: int,
    num_bandsets: int,
    spacing: float,
    time_scale: float,
) -> torch.Tensor:
    """``[B, h, w, T, S, 3]`` (t, row, col) of every token of one modality.

    ``spacing`` is the distance between token centres in RoPE units (``p * coordinate_scale``).
    A static modality (T = 1) takes the first date as its time.
    """
    b = timestamps.shape[0]
    h, w = grid_hw
    t = time_coordinate(timestamps[:, :num_steps], time_scale)  # [B, T]
    rows = torch.arange(h, dtype=torch.float32, device=t.device) * spacing
    cols = torch.arange(w, dtype=torch.float32, device=t.device) * spacing
    shape = (b, h, w, num_steps, num_bandsets)
    return torch.stack(
        [
            t[:, None, None, :, None].expand(shape),
            rows[None, :, None, None, None].expand(shape),
            cols[None, None, :, None, None].expand(shape),
        ],
        dim=-1,
    )


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of ``x`` ``[B, N, H, d]`` by angles given as ``cos``/``sin``
    ``[B, N, H or 1, d/2]``."""
    pairs = x.unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1).flatten(-2)


def mixed_angles(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """``[B, N, H, d/2]`` angles of ``positions`` ``[B, N, 3]``; learned ``freqs`` [3, H, d/2]."""
    p = positions.to(torch.float32)[..., None, None, :]  # [B, N, 1, 1, 3]
    f = freqs.to(torch.float32)
    return (p[..., 0] * f[0] + p[..., 1] * f[1]) + p[..., 2] * f[2]


def axial_angles(positions: torch.Tensor, head_dim: int) -> torch.Tensor:
    """``[B, N, 1, head_dim/2]`` angles of 2-D ``positions`` ``[B, N, 2]`` (row, col)."""
    half = head_dim // 2
    freq = 1.0 / (
        10000.0 ** (torch.arange(0, half, 2, dtype=torch.float32, device=positions.device) / half)
    )
    p = positions.to(torch.float32)
    rows = p[..., 0:1] * freq
    cols = p[..., 1:2] * freq
    return torch.cat([rows, cols], dim=-1)[:, :, None, :]
