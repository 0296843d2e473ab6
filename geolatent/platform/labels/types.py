"""The label data: :class:`LabelSet` (parallel arrays, lon/lat geometries), the problems
found in it, Studio task polygons, and the error raised for labels that cannot be used."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

LabelKind = Literal["class", "value"]
LabelFormat = Literal["auto", "geojson", "gpkg", "shapefile", "csv", "studio"]

STUDIO_FEATURES = "annotation_features.geojson"
STUDIO_TASKS = "annotation_task_features.geojson"

_FIELD_GUESSES = (
    "label", "class", "category", "class_name", "classname", "lulc", "value", "target",
)
_DATE_LIKE_NAMES = ("start_time", "start", "start_date", "date", "time", "datetime",
                    "observation_time", "acquired", "end_time", "end", "end_date", "year")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ].*)?$")
_LAT_GUESSES = ("lat", "latitude", "y")
_LON_GUESSES = ("lon", "lng", "long", "longitude", "x")
NaT = np.datetime64("NaT", "s")


class LabelError(ValueError):
    """Labels that cannot be used at all; the message says what to change."""


@dataclass(frozen=True)
class LabelProblem:
    """One label that was dropped (``error``) or looks suspicious (``warning``).

    Attributes:
        kind: ``invalid_geometry``, ``empty_geometry``, ``missing_label``, ``bad_value``,
            ``bad_time``, ``bad_coordinates``, ``empty_class``, ``outside_imagery``,
            ``no_valid_input``, ``split_overlap``, ``unknown_class``.
        row: feature number in the source file (0-based), or -1 when it is not one feature.
        message: what is wrong, in words a user can act on.
        severity: ``error`` (the label / window is not used) or ``warning``.
    """

    kind: str
    row: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"feature {self.row}: " if self.row >= 0 else ""
        return f"[{self.severity}] {self.kind}: {where}{self.message}"


@dataclass(frozen=True)
class StudioTask:
    """An OlmoEarth Studio annotation task: an area (lon/lat) and its time range."""

    id: str
    geometry: BaseGeometry
    start: datetime | None
    end: datetime | None


@dataclass
class LabelSet:
    """Labels as parallel arrays of length N (geometries in lon/lat degrees, EPSG:4326).

    Attributes:
        geometries: object ``[N]`` shapely geometries (None where the file had none).
        values: object ``[N]``: class values (``str`` / ``int``) or floats for ``kind="value"``;
            None where missing.
        start, end: ``datetime64[s]`` ``[N]`` label time range (NaT when not given).
        rows: int64 ``[N]`` feature number in the source file.
        kind: ``class`` or ``value``.
        splits: object ``[N]`` explicit split names (``train`` / ``val`` / ``test``) or None.
        groups: object ``[N]`` Studio task id of each label, or None.
        tasks: Studio tasks by id.
        class_names: label value -> display name found in the file (Studio ``src_labels``).
        source: where the labels came from.
        problems: problems found while reading (unparseable times, ...).
    """

    geometries: np.ndarray
    values: np.ndarray
    start: np.ndarray
    end: np.ndarray
    rows: np.ndarray
    kind: LabelKind
    splits: np.ndarray | None = None
    groups: np.ndarray | None = None
    tasks: dict[str, StudioTask] = field(default_factory=dict)
    class_names: dict[str | int, str] = field(default_factory=dict)
    source: str = ""
    problems: list[LabelProblem] = field(default_factory=list)
    time_column: str | None = None

    def __len__(self) -> int:
        return len(self.geometries)

    def subset(self, keep: np.ndarray) -> LabelSet:
        """The labels where ``keep`` (bool ``[N]`` or indices) selects them."""
        return replace(
            self,
            geometries=self.geometries[keep],
            values=self.values[keep],
            start=self.start[keep],
            end=self.end[keep],
            rows=self.rows[keep],
            splits=None if self.splits is None else self.splits[keep],
            groups=None if self.groups is None else self.groups[keep],
            problems=list(self.problems),
        )

    @property
    def is_point(self) -> np.ndarray:
        """bool ``[N]``: the geometry is a point (or multipoint)."""
        types = shapely.get_type_id(self.geometries)
        return (types == 0) | (types == 4)
