"""Imagery of a project: the time steps, map tiles per preset and pixel values on click."""

from __future__ import annotations

from datetime import date as Date
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response

from geolatent.app.imagery import (
    IMAGERY_MODALITIES,
    PRESETS,
    add_image,
    available_presets,
    list_scenes,
    point_values,
    render_tile,
    scene_path,
)
from geolatent.app.routers.projects import project_folder
from geolatent.app.security import ProjectAccess, require_role
from geolatent.app.uploads import inside, save_upload

router = APIRouter(prefix="/api/projects/{project_id}/imagery", tags=["imagery"])


def imagery_folder(request: Request, access: ProjectAccess) -> Path:
    folder = project_folder(request, access.project)
    src = access.project.imagery or {}
    if src.get("type") == "local" and src.get("path"):
        return inside(folder, folder / src["path"])
    if src.get("type") == "preset":
        # STAC API presets write their monthly composites here (see the handoff)
        return folder / "imagery"
    return folder / "imagery"


@router.get("")
def imagery_index(request: Request, access: ProjectAccess = Depends(require_role("viewer"))):
    """Dates per modality and the presets that apply."""
    folder = imagery_folder(request, access)
    scenes = list_scenes(folder)
    return {"scenes": scenes, "presets": available_presets(folder, scenes)}


@router.post("", status_code=201)
async def upload_image(request: Request, file: UploadFile = File(...),
                       modality: str = Form(...), date: str = Form(...),
                       bands: str | None = Form(default=None),
                       access: ProjectAccess = Depends(require_role("admin"))):
    """Add one image (a georeferenced GeoTIFF) of ``modality`` on ``date`` (YYYY-MM-DD) to the
    project's imagery, stored as a COG. ``bands``: comma-separated band names when the file's
    bands have no descriptions. An image of that modality and date is never replaced (409)."""
    if modality not in IMAGERY_MODALITIES:
        raise HTTPException(422, f"modality: one of {list(IMAGERY_MODALITIES)}")
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
        add_image(uploaded, dest, names, modality)
    except FileExistsError as exc:
        raise HTTPException(409, f"the project already has a {modality} image for {day}") \
            from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    finally:
        uploaded.unlink(missing_ok=True)
    scenes = list_scenes(folder)
    return {"scenes": scenes, "presets": available_presets(folder, scenes)}


@router.get("/tiles/{preset}/{date}/{z}/{x}/{y}.png")
def tile(preset: str, date: str, z: int, x: int, y: int, request: Request,
         access: ProjectAccess = Depends(require_role("viewer"))):
    """A 256 px PNG tile; 204 when the tile does not touch the image."""
    from rio_tiler.errors import TileOutsideBounds

    if preset not in PRESETS:
        raise HTTPException(404, f"unknown preset {preset!r}: one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    try:
        path = scene_path(imagery_folder(request, access), p.modality, date)
        png = render_tile(path, p, z, x, y)
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
        path = scene_path(imagery_folder(request, access), modality, date)
        return {"modality": modality, "date": date, "values": point_values(path, lon, lat)}
    except FileNotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    except PointOutsideBounds as exc:
        raise HTTPException(404, "the point is outside the image") from exc
