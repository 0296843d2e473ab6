"""Token bookkeeping: mask values, flattening modalities into one sequence, and packing.

Per modality, tokens are ``[B, h, w, T, S, D]``; flattened, the order within a modality is
``(h, w, t, s)`` row-major and modalities follow each other in registry order. Because all
position information is in additive encodings, modality order does not change results.

*Packing* gathers the selected tokens of each sample to the front of a shorter sequence
(padded to the longest sample) so attention only touches the tokens it needs; *unpacking*
scatters them back, leaving exact zeros elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch


class MaskValue(IntEnum):
    """Per-token role, as in v1."""

    ONLINE_ENCODER = 0
    TARGET_ENCODER_ONLY = 1
    DECODER = 2
    MISSING = 3


@dataclass(frozen=True)
class SequenceLayout:
    """Where each modality's tokens sit in the flattened sequence."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]  # per modality (h, w, T, S)
    offsets: tuple[int, ...]
    length: int

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, N, ...]`` -> per modality ``[B, h, w, T, S, ...]``."""
        out = {}
        for name, shape, off in zip(self.names, self.shapes, self.offsets, strict=True):
            n = shape[0] * shape[1] * shape[2] * shape[3]
            out[name] = x[:, off : off + n].reshape(x.shape[0], *shape, *x.shape[2:])
        return out


def flatten(
    per_modality: dict[str, torch.Tensor], trailing_dims: int
) -> tuple[torch.Tensor, SequenceLayout]:
    """Concatenate ``[B, h, w, T, S, *trail]`` tensors into ``[B, N, *trail]``."""
    names, shapes, offsets, parts, off = [], [], [], [], 0
    for name, t in per_modality.items():
        b = t.shape[0]
        grid = tuple(t.shape[1:5])
        trail = t.shape[5:] if trailing_dims else ()
        flat = t.reshape(b, -1, *trail)
        names.append(name)
        shapes.append(grid)
        offsets.append(off)
        off += flat.shape[1]
        parts.append(flat)
    layout = SequenceLayout(tuple(names), tuple(shapes), tuple(offsets), off)
    return torch.cat(parts, dim=1), layout


@dataclass
class Packing:
    """Indices that gather the selected tokens of each sample to the front."""

    index: torch.Tensor  # [B, L] positions in the full sequence
    valid: torch.Tensor  # [B, L] True for real (selected) tokens, False for padding
    attend: torch.Tensor  # [B, L] key mask for attention; never all False in a row
    length: int  # N, the full sequence length

    @classmethod
    def from_selection(cls, selected: torch.Tensor) -> Packing:
        """Build from ``selected`` [B, N] bool."""
        b, n = selected.shape
        counts = selected.sum(dim=1)
        width = int(counts.max()) if b else 0
        # Stable sort keeps the original token order among the selected ones.
        order = torch.argsort((~selected).to(torch.int8), dim=1, stable=True)[:, :width]
        valid = torch.arange(width, device=selected.device)[None, :] < counts[:, None]
        attend = valid.clone()
        if width:
            # A sample with nothing selected still needs one key to avoid a NaN softmax; its
            # outputs are discarded on unpacking.
            attend[:, 0] |= counts == 0
        return cls(order, valid, attend, n)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, L, D]``."""
        return x.gather(1, self.index[..., None].expand(-1, -1, x.shape[-1]))

    def scatter(self, packed: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L, D]`` -> ``[B, N, D]``, zeros (or ``out``'s values) at unselected positions."""
        b, _, d = packed.shape
        if out is None:
            out = packed.new_zeros(b, self.length + 1, d)
        else:
            out = torch.cat([out, out.new_zeros(b, 1, d)], dim=1)
        # Padding slots write into a dummy column N that is dropped.
        idx = torch.where(self.valid, self.index, torch.full_like(self.index, self.length))
        out = out.scatter(1, idx[..., None].expand(-1, -1, d), packed)
        return out[:, : self.length]
