"""Imagery of a project: the time steps, map tiles per preset and pixel values on click."""

from __future__ import annotations

import json
from datetime import date as Date
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response

from geolatent.app import imagery as img
from geolatent.app.routers.projects import project_folder
from geolatent.app.security import ProjectAccess, require_role
from geolatent.app.uploads import save_upload

router = APIRouter(prefix="/api/projects/{project_id}/imagery", tags=["imagery"])


def imagery_folder(request: Request, access: ProjectAccess) -> Path:
    return img.imagery_dir(project_folder(request, access.project), access.project.imagery or {})


def _index(folder: Path) -> dict:
    scenes = img.list_scenes(folder)
    return {"scenes": scenes, "presets": img.available_presets(folder, scenes)}


@router.get("")
def imagery_index(request: Request, access: ProjectAccess = Depends(require_role("viewer"))):
    """Dates per modality, the presets that apply and, for imagery fetched from STAC, the last
    fetch's report (``fetch``: files, months without data, per-tile problems)."""
    folder = imagery_folder(request, access)
    out = _index(folder)
    report = folder / "report.json"
    if (access.project.imagery or {}).get("type") in img.FETCHED and report.is_file():
        out["fetch"] = json.loads(report.read_text())
    return out


@router.post("", status_code=201)
async def upload_image(request: Request, file: UploadFile = File(...),
                       modality: str = Form(...), date: str = Form(...),
                       bands: str | None = Form(default=None),
                       access: ProjectAccess = Depends(require_role("admin"))):
    """Add one image (a georeferenced GeoTIFF) of ``modality`` on ``date`` (YYYY-MM-DD) to the
    project's imagery, stored as a COG. ``bands``: comma-separated band names when the file's
    bands have no descriptions. An image of that modality and date is never replaced (409)."""
    kind = (access.project.imagery or {}).get("type")
    if kind in img.FETCHED:
        raise HTTPException(409, f"this project's imagery comes from STAC ({kind}): fetch it "
                                 'with POST /api/projects/{id}/jobs {"kind": "imagery"}')
    if modality not in img.IMAGERY_MODALITIES:
        raise HTTPException(422, f"modality: one of {list(img.IMAGERY_MODALITIES)}")
    try:
        day = Date.fromisoformat(date).isoformat()
    except ValueError as exc:
        raise HTTPException(422, "date: an ISO date like 2024-06-15") from exc
    folder = imagery_folder(request, access)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{modality}_{day}.tif"
    if dest.exists():
        raise HTTPException(409, f"the project already has a {modality} image for {day}")
    uploaded = await save_upload(file, project_folder(request, access.project) / "uploads",
                                 (".tif", ".tiff"), request.app.state.settings.max_upload_bytes)
    names = [b.strip() for b in bands.split(",")] if bands else None
    try:
        img.add_image(uploaded, dest, names, modality)
    except FileExistsError as exc:
        raise HTTPException(409, f"the project already has a {modality} image for {day}") \
            from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    finally:
        uploaded.unlink(missing_ok=True)
    return _index(folder)


@router.get("/tiles/{preset}/{date}/{z}/{x}/{y}.png")
def tile(preset: str, date: str, z: int, x: int, y: int, request: Request,
         access: ProjectAccess = Depends(require_role("viewer"))):
    """A 256 px PNG tile; 204 when the tile does not touch the image."""
    from rio_tiler.errors import TileOutsideBounds

    if preset not in img.PRESETS:
        raise HTTPException(404, f"unknown preset {preset!r}: one of {sorted(img.PRESETS)}")
    p = img.PRESETS[preset]
    try:
        path = img.scene_path(imagery_folder(request, access), p.modality, date)
        png = img.render_tile(path, p, z, x, y)
    except (FileNotFoundError, KeyError) as exc:
        raise HTTPException(404, str(exc)) from exc
    except TileOutsideBounds:
        return Response(status_code=204)
    return Response(png, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/point")
def point(lon: float, lat: float, date: str, request: Request, modality: str = "sentinel2_l2a",
          access: ProjectAccess = Depends(require_role("viewer"))):
    """Every band's value at ``lon``, ``lat`` on ``date``."""
    from rio_tiler.errors import PointOutsideBounds

    try:
        path = img.scene_path(imagery_folder(request, access), modality, date)
        return {"modality": modality, "date": date, "values": img.point_values(path, lon, lat)}
    except FileNotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    except PointOutsideBounds as exc:
        raise HTTPException(404, "the point is outside the image") from exc
