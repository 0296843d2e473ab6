"""Imagery of a project: the time steps, map tiles per preset and pixel values on click."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from geolatent.app.imagery import PRESETS, list_scenes, point_values, render_tile, scene_path
from geolatent.app.routers.projects import project_folder
from geolatent.app.security import ProjectAccess, require_role
from geolatent.app.uploads import inside

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
    scenes = list_scenes(imagery_folder(request, access))
    presets = {k: p.label for k, p in PRESETS.items() if p.modality in scenes}
    return {"scenes": scenes, "presets": presets}


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
    except FileNotFoundError as exc:
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
