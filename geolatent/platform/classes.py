"""The class table: label values -> contiguous class indices, display names and colours.

Class *values* are what the label files hold (strings such as ``"forest"`` or integer codes
such as ``2``); class *indices* ``0..K-1`` are what heads predict and what prediction maps
store. The table is saved in every fine-tuned model folder and written into class maps
(colour table and names), so a map can always be read back to names.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NODATA_CLASS = 255
"""Class-map value of pixels without a prediction (outside the area or without input)."""

IGNORE_INDEX = -1
"""Target value of pixels / windows without a label (ignored by losses and metrics)."""


def canonical_value(value: object) -> str | int:
    """Label values as table keys: integral numbers (``2``, ``2.0``, ``"2"``) become ``int``,
    anything else its stripped string; so CSV text and GeoJSON numbers agree."""
    if isinstance(value, (bool, np.bool_)):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else text


def default_colors(count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct RGB colours (hues spaced by the golden angle, two lightness levels)."""
    out = []
    for i in range(count):
        hue = (i * 0.618033988749895) % 1.0
        light = 0.45 if i % 2 == 0 else 0.6
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.65)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


@dataclass(frozen=True)
class ClassTable:
    """Ordered classes.

    Attributes:
        values: the label value of each class index (``str`` or ``int``), index order.
        names: display name of each class.
        colors: RGB ``(r, g, b)`` 0-255 of each class.
    """

    values: tuple[str | int, ...]
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a class table needs at least one class")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"duplicate class values in {list(self.values)}")
        if not len(self.values) == len(self.names) == len(self.colors):
            raise ValueError("values, names and colors must have one entry per class")
        if len(self.values) >= NODATA_CLASS:
            raise ValueError(f"at most {NODATA_CLASS - 1} classes fit a uint8 class map")

    @property
    def num_classes(self) -> int:
        return len(self.values)

    @classmethod
    def from_values(
        cls,
        values: Iterable[object],
        *,
        order: Sequence[object] | None = None,
        names: Mapping[object, str] | None = None,
        colors: Mapping[object, Sequence[int]] | None = None,
    ) -> ClassTable:
        """Build a table from the label values present (or a declared ``order``).

        Args:
            values: label values (repeats allowed); ignored when ``order`` is given.
            order: the classes in index order (may include classes without labels).
            names: label value -> display name (default: the value as text).
            colors: label value -> RGB (default: :func:`default_colors`).
        """
        if order is not None:
            keys = [canonical_value(v) for v in order]
        else:
            uniq = {canonical_value(v) for v in values}
            # Integers numerically first, then strings alphabetically: a stable, readable order.
            keys = sorted(uniq, key=lambda v: (isinstance(v, str), v))
        name_map = {canonical_value(k): str(v) for k, v in (names or {}).items()}
        color_map = {canonical_value(k): tuple(int(c) for c in v[:3]) for k, v in
                     (colors or {}).items()}
        palette = default_colors(len(keys))
        return cls(
            tuple(keys),
            tuple(name_map.get(k, str(k)) for k in keys),
            tuple(color_map.get(k, palette[i]) for i, k in enumerate(keys)),  # type: ignore[misc]
        )

    def indices(self, values: Sequence[object] | np.ndarray) -> np.ndarray:
        """int64 ``[N]`` class index of each label value; :data:`IGNORE_INDEX` for unknown ones."""
        lookup = {v: i for i, v in enumerate(self.values)}
        return np.fromiter(
            (lookup.get(canonical_value(v), IGNORE_INDEX) for v in values),
            dtype=np.int64,
            count=len(values),
        )

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table ``{index: (r, g, b, 255)}``; the nodata entry is transparent."""
        cmap = {i: (*c, 255) for i, c in enumerate(self.colors)}
        cmap[NODATA_CLASS] = (0, 0, 0, 0)
        return cmap

    def to_dict(self) -> dict:
        return {
            "classes": [
                {"index": i, "value": v, "name": n, "color": list(c)}
                for i, (v, n, c) in enumerate(
                    zip(self.values, self.names, self.colors, strict=True)
                )
            ]
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ClassTable:
        rows = sorted(d["classes"], key=lambda r: r["index"])
        return cls(
            tuple(r["value"] for r in rows),
            tuple(r["name"] for r in rows),
            tuple(tuple(r["color"]) for r in rows),  # type: ignore[misc]
        )
