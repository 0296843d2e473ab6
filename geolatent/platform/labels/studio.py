"""OlmoEarth Studio exports: ``annotation_features.geojson`` + ``annotation_task_features.geojson``
(an annotation without its own times takes its task's; task polygons become the windows of
segmentation tasks)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from geolatent.platform.labels.parsing import (
    _geojson_features,
    _is_missing,
    _label_values,
    _parse_time,
    _shapes,
    _times,
    _to_wgs84,
)
from geolatent.platform.labels.types import (
    STUDIO_FEATURES,
    STUDIO_TASKS,
    LabelError,
    LabelKind,
    LabelProblem,
    LabelSet,
    StudioTask,
)


def read_studio_export(path: str | Path, *, kind: LabelKind = "class", field: str | None = None,
                       tasks_path: str | Path | None = None) -> LabelSet:
    """An OlmoEarth Studio export: a folder holding both files, or the annotations file.

    Args:
        path: ``annotation_features.geojson`` or the folder holding it.
        kind: ``class`` or ``value``.
        field: the ``oe_labels`` key to use (needed when annotations hold several).
        tasks_path: ``annotation_task_features.geojson`` (default: next to the annotations).
    """
    path = Path(path)
    feats_path = path / STUDIO_FEATURES if path.is_dir() else path
    tasks_path = Path(tasks_path) if tasks_path else feats_path.with_name(STUDIO_TASKS)
    feats, crs = _geojson_features(feats_path)
    tasks: dict[str, StudioTask] = {}
    problems: list[LabelProblem] = []
    if tasks_path.exists():
        task_feats, task_crs = _geojson_features(tasks_path)
        task_geoms = _to_wgs84(_shapes(task_feats), task_crs)
        for i, (f, g) in enumerate(zip(task_feats, task_geoms, strict=True)):
            p = f.get("properties") or {}
            tid = str(p.get("oe_annotations_task_id") or p.get("es_annotations_task_id") or i)
            try:
                start = _parse_time(p.get("oe_start_time", p.get("es_start_time")))
                end = _parse_time(p.get("oe_end_time", p.get("es_end_time")))
            except (ValueError, TypeError):
                problems.append(LabelProblem("bad_time", -1, f"task {tid}: unparseable times"))
                start = end = None
            if g is None or g.is_empty:
                problems.append(LabelProblem("empty_geometry", -1, f"task {tid} has no geometry"))
                continue
            tasks[tid] = StudioTask(tid, g, start, end)

    props, label_keys, names = [], set(), {}
    for f in feats:
        p = dict(f.get("properties") or {})
        labels = p.get("oe_labels")
        if labels is None and "es_label" in p:  # the pre-oe_ export schema
            labels = {"label": p["es_label"]}
        labels = labels if isinstance(labels, Mapping) else {}
        label_keys |= set(labels)
        src = p.get("src_labels") if isinstance(p.get("src_labels"), Mapping) else {}
        props.append({"labels": labels, "src": src, "props": p})
    if field is None:
        if len(label_keys) != 1:
            raise LabelError(
                f"{feats_path}: annotations hold oe_labels keys {sorted(label_keys)}; name the "
                "one to train on (labels.field)"
            )
        field = next(iter(label_keys))
    rows = np.arange(len(feats), dtype=np.int64)
    values = _label_values([p["labels"].get(field) for p in props], kind)
    for v, p in zip(values, props, strict=True):
        name = p["src"].get(field)
        if kind == "class" and v is not None and not _is_missing(name):
            names[v] = str(name)  # Studio stores integer codes; src_labels keep the names
    groups = np.array(
        [str(p["props"].get("oe_annotations_task_id") or p["props"].get("es_annotations_task_id")
             or "") or None for p in props], dtype=object)

    def time_of(key: str) -> list[object]:
        out = []
        for p, gid in zip(props, groups, strict=True):
            own = p["props"].get(f"oe_{key}_time", p["props"].get(f"es_{key}_time"))
            task = tasks.get(gid) if gid else None
            out.append(own if not _is_missing(own) else getattr(task, key, None) if task else None)
        return out

    start = _times(time_of("start"), rows, "start time", problems)
    end = _times(time_of("end"), rows, "end time", problems)
    unknown = sorted({g for g in groups if g and tasks and g not in tasks})
    if unknown:
        problems.append(LabelProblem("unknown_task", -1, f"annotations refer to tasks not in "
                                     f"{tasks_path.name}: {unknown[:5]}", "warning"))
    return LabelSet(
        geometries=_to_wgs84(_shapes(feats), crs),
        values=values,
        start=start,
        end=end,
        rows=rows,
        kind=kind,
        groups=groups,
        tasks=tasks,
        class_names=names,
        source=str(feats_path),
        problems=problems,
    )
