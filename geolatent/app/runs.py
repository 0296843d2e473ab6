"""What a job does: fine-tuning and prediction on a project, through the SAME library
functions as ``geolatent finetune`` / ``geolatent predict`` (:func:`geolatent.platform.finetune`
with a config file written into the job folder, :func:`geolatent.platform.predict_area`).

Job folder: ``<project folder>/jobs/<job id>/``. Fine-tuning writes ``labels.geojson`` (the
project's features), ``finetune.yaml`` and the model folder ``model/``; prediction writes
``map.tif`` (COG) and ``map.geojson`` (class polygons). After a server restart both resume:
prediction from its finished parts (``predict_area(resume=True)``), fine-tuning from its last
finished epoch (:func:`geolatent.platform.finetune` resumes from the checkpoint in
``model/.work``) on the labels and settings the job started with (``labels.geojson`` and
``finetune.yaml`` are written once, by the first attempt, so later edits of the project's
features never change a running job).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import yaml

from geolatent.data.run import write_atomic

S2 = "sentinel2_l2a"
FINETUNE_DEFAULTS = {"epochs": 4, "batch_size": 8, "patch_size": 8,
                     "lr": 2e-3, "head_hidden": 16, "window_px": 16}
Log = Callable[[str], None]
Progress = Callable[[float], None]


class JobError(ValueError):
    """A job that cannot run as asked; the message says what to change."""


def imagery_source(imagery_dir: Path) -> dict:
    """The data-layer ``files`` source for the project's monthly Sentinel-2 COGs."""
    if not list(imagery_dir.glob(f"{S2}_*.tif")):
        raise JobError(f"no Sentinel-2 imagery in {imagery_dir}: add monthly COGs named "
                       f"{S2}_YYYY-MM-DD.tif, or fetch them (an 'imagery' job)")
    # uploads are named by day, fetched composites by month; the data layer composites by
    # month (day-1 timestamps), so the month is all that matters
    # no ``bands=``: every image in the folder carries band descriptions (uploads are rewritten
    # with them, fetched composites are written with them), so any band order works
    return dict(name="s2", type="files", modality=S2, paths=[str(imagery_dir / f"{S2}_*.tif")],
                date_pattern=r"_(\d{4}-\d{2})(?:-\d{2})?\.tif", date_format="%Y-%m")


def run_finetune(folder: Path, *, features: list[dict], label_schema: dict, imagery_dir: Path,
                 encoder: str, start: str, end: str, params: dict, log: Log,
                 progress: Progress) -> dict:
    """Fine-tune on the project's labels; returns the result for the job row."""
    from geolatent.platform import finetune, load_finetune_config

    # a numeric-target project trains a regression unless the job asks otherwise
    default_task = "pixel_regression" if label_schema.get("kind") == "value" else "segmentation"
    p = {**FINETUNE_DEFAULTS, "task": default_task, **params}
    config = folder / "finetune.yaml"
    epochs = max(1, int(p["epochs"]))

    def on_log(line: str) -> None:
        log(line)
        done = re.match(r"\s*epoch (\d+)/", line, re.IGNORECASE)
        if done:
            progress(0.2 + 0.8 * min(int(done.group(1)), epochs) / epochs)

    if config.exists():  # a later attempt (a restart): the job's inputs as they were
        log("[worker] fine-tuning resumes on the labels and settings it started with")
    else:
        write_finetune_inputs(folder, features=features, label_schema=label_schema,
                              imagery_dir=imagery_dir, encoder=encoder, start=start, end=end,
                              p=p)
    result = finetune(load_finetune_config(config), log=on_log,
                      progress=lambda done, total: progress(0.2 * done / max(total, 1)))
    # the result's scores keep the confusion matrix (the model folder's copy drops it)
    metrics = _clean({"select_metric": result.metric, "best_epoch": result.best_epoch,
                      "val": result.val, "test": result.test})
    return {"model": str(Path(result.bundle_path).relative_to(folder.parent.parent)),
            "metrics": metrics, "files": []}


def write_finetune_inputs(folder: Path, *, features: list[dict], label_schema: dict,
                          imagery_dir: Path, encoder: str, start: str, end: str,
                          p: dict) -> None:
    """``labels.geojson`` and ``finetune.yaml`` of a fine-tuning job, each written atomically,
    the config last: its presence says the job's inputs are complete."""
    labelled = [f for f in features if f.get("label") is not None]
    if len(labelled) < 2:
        raise JobError("fine-tuning needs at least two labelled features: draw and label more")
    folder.mkdir(parents=True, exist_ok=True)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": f["geometry"], "properties": {"label": f["label"]}}
        for f in labelled]}
    write_atomic(folder / "labels.geojson", lambda t: t.write_text(json.dumps(fc)))
    classes = [c["value"] for c in label_schema.get("classes", [])]
    colors = {c["value"]: [int(c["color"][i:i + 2], 16) for i in (1, 3, 5)]
              for c in label_schema.get("classes", [])}
    cfg = {
        "task": p["task"], "encoder": encoder,
        "labels": {"path": "labels.geojson", "field": "label",
                   **({"classes": classes, "colors": colors} if classes else {})},
        "sources": [imagery_source(imagery_dir)],
        "windows": {"size_px": int(p["window_px"]), "start": start, "end": end},
        "split": {"cell_size_m": float(p.get("cell_size_m", 160)), "train": 0.7, "val": 0.3,
                  "test": 0.0},
        "train": {"epochs": int(p["epochs"]), "batch_size": int(p["batch_size"]),
                  "patch_size": int(p["patch_size"]), "lr": float(p["lr"]),
                  "head_hidden": int(p["head_hidden"]), "device": "cpu"},
        "executor": {"kind": "serial"},
        "output": "model",
    }
    text = yaml.safe_dump(cfg, sort_keys=False)
    write_atomic(folder / "finetune.yaml", lambda t: t.write_text(text))


def _clean(value):  # noqa: ANN001, ANN202
    """JSON-safe: NaN / inf become None (PostgreSQL's JSON refuses them), numpy -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_predict(folder: Path, *, model_dir: Path, aoi: dict, start: str, end: str,
                label_schema: dict, log: Log, progress: Progress,
                dask_scheduler: str | None = None) -> dict:
    """Predict over the project's area with a fine-tuned model; returns the job result
    (files, legend). ``dask_scheduler``: materialize the area's tiles on that existing Dask
    cluster (the run driver's ``dask`` executor) instead of in the worker."""
    from geolatent.platform import load_bundle, predict_area
    from geolatent.platform.bundle import BUNDLE_FILE

    if not (model_dir / BUNDLE_FILE).exists():
        raise JobError(f"no fine-tuned model in {model_dir}: run a fine-tuning job first and "
                       "pass its id as params.model_job")
    folder.mkdir(parents=True, exist_ok=True)
    fm = load_bundle(model_dir)
    vector = folder / "map.geojson" if fm.classes is not None else None  # class maps only
    res = predict_area(model_dir, aoi, start, end, folder / "map.tif",
                       vector_path=vector, resume=True, device="cpu",
                       **({"executor": "dask", "scheduler": dask_scheduler}
                          if dask_scheduler else {}),
                       progress=lambda done, total: progress(done / max(total, 1)))
    if dask_scheduler:
        log(f"tiles materialized on the Dask cluster at {dask_scheduler}")
    log(f"predicted {res.width}x{res.height} px ({res.area_km2:.2f} km2) in {res.seconds:.1f} s;"
        f" {res.tiles_resumed} of {res.tiles_total} tiles resumed from an earlier run")
    colors = {c["value"]: c["color"] for c in label_schema.get("classes", [])}
    names = {c["value"]: c["name"] for c in label_schema.get("classes", [])}
    legend = []
    if fm.classes is not None:
        for i, (value, name) in enumerate(zip(fm.classes.values, fm.classes.names, strict=True)):
            legend.append({"index": i, "value": str(value),
                           "name": names.get(str(value), str(name)),
                           "color": colors.get(str(value), _fallback_color(i))})
    files = ["map.tif"] + (["map.geojson"] if vector else [])
    return {"files": files, "legend": legend, "kind": res.kind,
            **({} if fm.classes is not None else _value_range(folder / "map.tif"))}


def _value_range(path: Path) -> dict:
    """``{"range": [min, max]}`` of a value map: the ends of its colour ramp."""
    import numpy as np
    import rasterio

    with rasterio.open(path) as src:
        data = src.read(1, masked=True).astype("float64").filled(np.nan)
    finite = data[np.isfinite(data)]
    return {"range": [float(finite.min()), float(finite.max())]} if finite.size else {}


def _fallback_color(i: int) -> str:
    import matplotlib

    r, g, b, _ = matplotlib.colormaps["tab20"](i % 20)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
