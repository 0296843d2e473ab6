"""Label features: list, create, versioned update and delete, import and export.

An update or delete names the ``version`` it is based on; it is applied with
``UPDATE ... WHERE id = :id AND version = :v`` (atomic on SQLite and PostgreSQL) and a stale
version gets 409 Conflict with the current feature in the body, so the client can show it.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import shapely
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from shapely.geometry import mapping, shape
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from geolatent.app.models import Feature, Project, Task, utcnow
from geolatent.app.routers.projects import project_folder
from geolatent.app.schemas import FeatureIn, FeatureOut, FeatureUpdate
from geolatent.app.security import ProjectAccess, get_db, require_role
from geolatent.app.uploads import LABEL_SUFFIXES, extract_zip, geometry_checked, save_upload

router = APIRouter(prefix="/api/projects/{project_id}/features", tags=["features"])
FEATURE_KINDS = ("Point", "Polygon", "MultiPolygon")


def feature_out(f: Feature) -> FeatureOut:
    return FeatureOut(id=f.id, geometry=json.loads(f.geometry), label=f.label, task_id=f.task_id,
                      start_date=f.start_date, end_date=f.end_date, version=f.version,
                      updated_by=f.updated_by)


def check_label(project: Project, label: str | float | None) -> str | None:
    """The label as stored (text) if the project's schema allows it (None = not labelled
    yet); else 422 naming the classes or the target range."""
    if label is None:
        return None
    if isinstance(label, float):
        label = repr(label)
    if len(label) > 128:
        raise HTTPException(422, "label: at most 128 characters")
    schema = project.label_schema or {}
    if schema.get("kind", "class") == "value":
        try:
            x = float(label)
        except ValueError as exc:
            raise HTTPException(422, f"label {label!r} is not a number") from exc
        if not math.isfinite(x):
            raise HTTPException(422, f"label {label!r} is not a finite number")
        lo, hi = schema.get("min"), schema.get("max")
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise HTTPException(422, f"label {x:g} is outside the target range "
                                     f"[{_bound(lo, '-inf')}, {_bound(hi, 'inf')}] of the "
                                     "project's label schema (min, max)")
        return repr(x)
    values = [c["value"] for c in schema.get("classes", [])]
    if values and label not in values:
        raise HTTPException(422, f"label {label!r} is not a class of this project: {values}")
    return label


def _bound(v: float | None, unbounded: str) -> str:
    return unbounded if v is None else f"{v:g}"


def _geom_fields(geojson: dict) -> dict:
    geom = geometry_checked(geojson, FEATURE_KINDS)
    minx, miny, maxx, maxy = shape(geom).bounds
    return dict(geometry=json.dumps(geom), minx=minx, miny=miny, maxx=maxx, maxy=maxy)


def _task_in_project(db: Session, project: Project, task_id: int | None) -> int | None:
    if task_id is not None:
        task = db.get(Task, task_id)
        if task is None or task.project_id != project.id:
            raise HTTPException(422, f"task_id {task_id} is not a task of this project")
    return task_id


@router.get("", response_model=list[FeatureOut])
def list_features(bbox: str | None = None,
                  access: ProjectAccess = Depends(require_role("viewer")),
                  db: Session = Depends(get_db)):
    """All live features, or those whose bounds meet ``bbox=minx,miny,maxx,maxy`` (lon/lat)."""
    q = select(Feature).where(Feature.project_id == access.project.id, Feature.deleted.is_(False))
    if bbox:
        try:
            minx, miny, maxx, maxy = (float(v) for v in bbox.split(","))
        except ValueError as exc:
            raise HTTPException(422, "bbox: four numbers minx,miny,maxx,maxy") from exc
        q = q.where(Feature.maxx >= minx, Feature.minx <= maxx, Feature.maxy >= miny,
                    Feature.miny <= maxy)
    return [feature_out(f) for f in db.scalars(q.order_by(Feature.updated_at, Feature.id))]


@router.post("", response_model=FeatureOut, status_code=201)
def create_feature(body: FeatureIn, access: ProjectAccess = Depends(require_role("annotator")),
                   db: Session = Depends(get_db)):
    """Create a feature. Re-sending a create with the same client ``id`` returns 409 with the
    stored feature, never a duplicate."""
    fid = (body.id or str(uuid.uuid4())).lower()
    existing = db.get(Feature, fid)
    if existing is not None:
        return JSONResponse(status_code=409, content={
            "detail": "a feature with this id exists", "current": _dump(existing, access)})
    feature = Feature(
        id=fid, project_id=access.project.id, label=check_label(access.project, body.label),
        task_id=_task_in_project(db, access.project, body.task_id),
        start_date=body.start_date and body.start_date.isoformat(),
        end_date=body.end_date and body.end_date.isoformat(),
        created_by=access.user.id, updated_by=access.user.id, **_geom_fields(body.geometry))
    db.add(feature)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        existing = db.get(Feature, fid)
        return JSONResponse(status_code=409, content={
            "detail": "a feature with this id exists", "current": _dump(existing, access)})
    return feature_out(feature)


def _dump(f: Feature | None, access: ProjectAccess) -> dict | None:
    if f is None or f.project_id != access.project.id:
        return None
    return feature_out(f).model_dump()


def _get(db: Session, access: ProjectAccess, feature_id: str) -> Feature:
    f = db.get(Feature, feature_id.lower())
    if f is None or f.project_id != access.project.id or f.deleted:
        raise HTTPException(404, f"no feature {feature_id} in this project")
    return f


def _conflict(db: Session, access: ProjectAccess, feature_id: str, version: int) -> JSONResponse:
    db.rollback()
    current = db.get(Feature, feature_id.lower())
    db.refresh(current)
    return JSONResponse(status_code=409, content={
        "detail": f"the feature changed since version {version} (now version {current.version}"
                  f"{', deleted' if current.deleted else ''}): reload it and edit again",
        "current": None if current.deleted else _dump(current, access)})


@router.put("/{feature_id}", response_model=FeatureOut)
def update_feature(feature_id: str, body: FeatureUpdate,
                   access: ProjectAccess = Depends(require_role("annotator")),
                   db: Session = Depends(get_db)):
    """Apply an edit based on ``version``; 409 with the current feature if it is stale."""
    f = _get(db, access, feature_id)
    values: dict = {"version": Feature.version + 1, "updated_by": access.user.id,
                    "updated_at": utcnow()}
    fields = body.model_fields_set
    if body.geometry is not None:
        values.update(_geom_fields(body.geometry))
    if "label" in fields:
        values["label"] = check_label(access.project, body.label)
    for key in ("start_date", "end_date"):
        if key in fields:
            v = getattr(body, key)
            values[key] = v and v.isoformat()
    result = db.execute(update(Feature).where(
        Feature.id == f.id, Feature.version == body.version, Feature.deleted.is_(False),
    ).values(**values))
    if result.rowcount != 1:
        return _conflict(db, access, f.id, body.version)
    db.commit()
    db.refresh(f)
    return feature_out(f)


@router.delete("/{feature_id}", status_code=204)
def delete_feature(feature_id: str, version: int,
                   access: ProjectAccess = Depends(require_role("annotator")),
                   db: Session = Depends(get_db)):
    """Delete (kept as a tombstone, so a stale editor gets 409, not a resurrection)."""
    f = _get(db, access, feature_id)
    result = db.execute(update(Feature).where(
        Feature.id == f.id, Feature.version == version, Feature.deleted.is_(False),
    ).values(deleted=True, version=Feature.version + 1, updated_by=access.user.id,
             updated_at=utcnow()))
    if result.rowcount != 1:
        return _conflict(db, access, f.id, version)
    db.commit()
    return Response(status_code=204)


@router.post("/import")
async def import_labels(request: Request, file: UploadFile = File(...),
                        field: str | None = Form(default=None),
                        access: ProjectAccess = Depends(require_role("admin")),
                        db: Session = Depends(get_db)) -> dict:
    """Import labels with :func:`geolatent.platform.read_labels` (GeoJSON, GeoPackage, CSV,
    a zipped Shapefile or a zipped OlmoEarth Studio export) and add them as features."""
    from geolatent.platform import LabelError, check_labels, read_labels

    settings = request.app.state.settings
    folder = project_folder(request, access.project) / "uploads"
    path = await save_upload(file, folder, LABEL_SUFFIXES, settings.max_upload_bytes)
    source = path
    if path.suffix.lower() == ".zip":
        unpacked = extract_zip(path, path.with_suffix(""), settings.max_upload_bytes)
        studio = sorted(unpacked.rglob("annotation_features.geojson"))
        shps = sorted(unpacked.rglob("*.shp"))
        if studio:
            source = studio[0].parent
        elif shps:
            source = shps[0]
        else:
            raise HTTPException(400, f"{path.name} holds neither a Studio export "
                                     "(annotation_features.geojson) nor a Shapefile")
    schema = access.project.label_schema or {}
    kind = schema.get("kind", "class")
    try:
        labels = read_labels(source, kind=kind, field=field or None)
        labels, problems = check_labels(labels)
    except LabelError as exc:
        raise HTTPException(422, f"{exc} (set the form field 'field' to the label column)") \
            from exc
    if kind == "value":  # the same range check as a drawn feature; 422 names the range
        values = [check_label(access.project, None if v is None else str(v))
                  for v in labels.values]
    else:
        values = [None if v is None else str(v) for v in labels.values]
    known = [c["value"] for c in schema.get("classes", [])]
    if kind == "class" and known:
        names = {str(k): v for k, v in labels.class_names.items()}
        # Studio exports store integer codes with their names: accept either
        values = [v if v in known or v is None else names.get(v, v) for v in values]
        unknown = sorted({v for v in values if v is not None and v not in known})
        if unknown:
            raise HTTPException(422, f"labels hold classes that are not in the project's "
                                     f"label schema: {unknown[:20]}; add them first")
    added = 0
    for geom, value, start, end in zip(labels.geometries, values, labels.start, labels.end,
                                       strict=True):
        db.add(Feature(id=str(uuid.uuid4()), project_id=access.project.id, label=value,
                       start_date=_day(start), end_date=_day(end), created_by=access.user.id,
                       updated_by=access.user.id, **_geom_fields(mapping(geom))))
        added += 1
    db.commit()
    return {"added": added, "problems": [str(p) for p in problems]}


def _day(t: np.datetime64) -> str | None:
    return None if np.isnat(t) else str(t.astype("datetime64[D]"))


def _features(db: Session, project: Project) -> list[Feature]:
    return list(db.scalars(select(Feature).where(Feature.project_id == project.id,
                                                 Feature.deleted.is_(False))
                           .order_by(Feature.id)))


@router.get("/export/{fmt}")
def export_labels(fmt: str, access: ProjectAccess = Depends(require_role("viewer")),
                  db: Session = Depends(get_db)):
    """Export as ``geojson``, ``gpkg`` or ``studio`` (a zip of the two Studio GeoJSON files,
    which :func:`geolatent.platform.read_labels` reads back)."""
    feats = _features(db, access.project)
    slug = access.project.slug
    value = _label_value(access.project)
    if fmt == "geojson":
        fc = {"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": f.id, "geometry": json.loads(f.geometry),
             "properties": {"label": value(f.label), "start_time": f.start_date,
                            "end_time": f.end_date, "task_id": f.task_id,
                            "version": f.version}} for f in feats]}
        return Response(json.dumps(fc), media_type="application/geo+json", headers={
            "Content-Disposition": f'attachment; filename="{slug}-labels.geojson"'})
    if fmt == "gpkg":
        return Response(_gpkg_bytes(feats, _numeric(access.project)),
                        media_type="application/geopackage+sqlite3",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{slug}-labels.gpkg"'})
    if fmt == "studio":
        return Response(_studio_zip(db, access.project, feats), media_type="application/zip",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{slug}-studio.zip"'})
    raise HTTPException(404, f"unknown export format {fmt!r}: geojson, gpkg or studio")


def _numeric(project: Project) -> bool:
    return (project.label_schema or {}).get("kind") == "value"


def _label_value(project: Project):  # noqa: ANN202 - returns a converter
    """Labels as exported: numbers for a numeric target (stored as text), else the class."""
    if _numeric(project):
        return lambda v: None if v is None else float(v)
    return lambda v: v


def _gpkg_bytes(feats: list[Feature], numeric: bool) -> bytes:
    import pyogrio.raw

    if not feats:
        raise HTTPException(404, "no features to export")
    geoms = shapely.to_wkb(np.array([shape(json.loads(f.geometry)) for f in feats],
                                    dtype=object))
    cols = {
        "fid_uuid": np.array([f.id for f in feats], dtype=object),
        "label": (np.array([np.nan if f.label is None else float(f.label) for f in feats])
                  if numeric else np.array([f.label or "" for f in feats], dtype=object)),
        "start_time": np.array([f.start_date or "" for f in feats], dtype=object),
        "end_time": np.array([f.end_date or "" for f in feats], dtype=object),
        "version": np.array([f.version for f in feats], dtype=np.int64),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "labels.gpkg"
        pyogrio.raw.write(out, geoms, list(cols.values()), list(cols.keys()), driver="GPKG",
                          crs="EPSG:4326", geometry_type="Unknown", layer="labels")
        return out.read_bytes()


def _studio_zip(db: Session, project: Project, feats: list[Feature]) -> bytes:
    value = _label_value(project)
    tasks = db.scalars(select(Task).where(Task.project_id == project.id)).all()
    stamp = datetime.now(UTC).isoformat()

    def when(d: str | None) -> str | None:
        return f"{d}T00:00:00+00:00" if d else None

    annotations = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": json.loads(f.geometry), "properties": {
            "oe_labels": {"label": value(f.label)}, "oe_annotations_task_id":
                str(f.task_id) if f.task_id else None,
            "oe_start_time": when(f.start_date), "oe_end_time": when(f.end_date),
            "oe_id": f.id, "oe_updated_at": stamp}} for f in feats]}
    task_fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": json.loads(t.geometry), "properties": {
            "oe_annotations_task_id": str(t.id), "oe_start_time": when(t.start_date),
            "oe_end_time": when(t.end_date), "oe_status": t.status, "name": t.name}}
        for t in tasks]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotation_features.geojson", json.dumps(annotations))
        zf.writestr("annotation_task_features.geojson", json.dumps(task_fc))
    return buf.getvalue()
