"""Reading labels: GeoJSON, GeoPackage, Shapefile, CSV and OlmoEarth Studio exports.

A label is a geometry (point or polygon, any CRS in the file; held here in lon/lat, EPSG:4326)
with a class (string or integer) or a numeric value, and optionally a time range. Everything is
read into one :class:`LabelSet` of parallel arrays; :func:`check_labels` then reports every label
that cannot be used (invalid or empty geometry, missing value, bad time range, coordinates that
are not lon/lat) with its feature number, and drops it.

Studio exports (``annotation_features.geojson`` + ``annotation_task_features.geojson``): each
annotation holds ``oe_labels: {field: value}``, ``oe_annotations_task_id`` and optionally
``oe_start_time`` / ``oe_end_time``; each task polygon holds ``oe_start_time`` / ``oe_end_time``.
An annotation without its own times takes its task's; task polygons become the windows of
segmentation tasks (see :mod:`geolatent.platform.windows`).

Modules: :mod:`.types` (the label set and problems), :mod:`.parsing` (helpers the readers
share), :mod:`.readers` (files and format detection), :mod:`.studio` (Studio exports),
:mod:`.checks` (validation).
"""


from geolatent.platform.labels.checks import check_labels, empty_class_problems
from geolatent.platform.labels.readers import (
    detect_format,
    read_csv_labels,
    read_geojson_labels,
    read_labels,
    read_ogr_labels,
)
from geolatent.platform.labels.studio import read_studio_export
from geolatent.platform.labels.types import (
    STUDIO_FEATURES,
    STUDIO_TASKS,
    LabelError,
    LabelFormat,
    LabelKind,
    LabelProblem,
    LabelSet,
    StudioTask,
)

__all__ = [
    "STUDIO_FEATURES", "STUDIO_TASKS", "LabelError", "LabelFormat", "LabelKind", "LabelProblem",
    "LabelSet", "StudioTask", "check_labels", "detect_format", "empty_class_problems",
    "read_csv_labels", "read_geojson_labels", "read_labels", "read_ogr_labels",
    "read_studio_export",
]  # fmt: skip
