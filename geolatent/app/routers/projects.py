"""Projects: create (site admin), read (members), change and delete (project admins),
members, and the area of interest (drawn: JSON; uploaded: GeoJSON, GeoPackage, zipped
Shapefile or KML)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from geolatent.app.models import Membership, Project, User
from geolatent.app.routers.users import check_not_last_admin
from geolatent.app.sample import sample_dates, sample_label_schema, write_sample_imagery
from geolatent.app.schemas import MemberSet, ProjectCreate, ProjectOut, ProjectUpdate
from geolatent.app.security import (
    ProjectAccess,
    current_user,
    get_db,
    project_role,
    require_role,
    require_site_admin,
)
from geolatent.app.uploads import (
    AOI_SUFFIXES,
    geometry_checked,
    inside,
    read_aoi,
    remove_tree,
    save_upload,
)

router = APIRouter(prefix="/api/projects", tags=["projects"])


def project_folder(request: Request, project: Project) -> Path:
    """The project's own folder; named by a generated slug, never by the user's name."""
    root = request.app.state.settings.project_dir / "projects"
    return inside(root, root / project.slug)


def project_out(project: Project, role: str) -> ProjectOut:
    return ProjectOut(
        id=project.id, name=project.name, slug=project.slug, start_date=project.start_date,
        end_date=project.end_date, imagery=project.imagery or {}, model=project.model,
        label_schema=project.label_schema or {}, role=role,
        aoi=json.loads(project.aoi_geojson) if project.aoi_geojson else None)


@router.get("", response_model=list[ProjectOut])
def list_projects(user: User = Depends(current_user), db: Session = Depends(get_db)):
    projects = db.scalars(select(Project).order_by(Project.id)).all()
    out = []
    for p in projects:
        role = project_role(db, user, p.id)
        if role:
            out.append(project_out(p, role))
    return out


@router.post("", response_model=ProjectOut, status_code=201)
def create_project(body: ProjectCreate, request: Request,
                   user: User = Depends(require_site_admin), db: Session = Depends(get_db)):
    """Create a project; ``imagery.type == "sample"`` writes the built-in sample scene into it
    and fills in its area, dates and classes where the request leaves them out."""
    if db.scalar(select(Project).where(Project.name == body.name)):
        raise HTTPException(409, f"a project named {body.name!r} exists already")
    project = Project(name=body.name, slug="p-" + secrets.token_hex(6),
                      imagery=body.imagery.model_dump(), model=body.model,
                      label_schema=body.label_schema.model_dump(),
                      start_date=body.start_date and body.start_date.isoformat(),
                      end_date=body.end_date and body.end_date.isoformat())
    if body.aoi is not None:
        project.aoi_geojson = json.dumps(geometry_checked(body.aoi))
    folder = project_folder(request, project)
    folder.mkdir(parents=True)
    if body.imagery.type == "sample":
        footprint = write_sample_imagery(folder / "imagery")
        project.aoi_geojson = project.aoi_geojson or json.dumps(footprint)
        start, end = sample_dates()
        project.start_date, project.end_date = project.start_date or start, project.end_date or end
        if not body.label_schema.classes and body.label_schema.kind == "class":
            project.label_schema = sample_label_schema()
    db.add(project)
    try:
        db.flush()
        db.add(Membership(project_id=project.id, user_id=user.id, role="admin"))
        db.commit()
    except IntegrityError as exc:  # a concurrent create with the same name
        db.rollback()
        remove_tree(folder)
        raise HTTPException(409, f"a project named {body.name!r} exists already") from exc
    return project_out(project, "admin")


@router.get("/{project_id}", response_model=ProjectOut)
def get_project(access: ProjectAccess = Depends(require_role("viewer"))):
    return project_out(access.project, access.role)


@router.patch("/{project_id}", response_model=ProjectOut)
def update_project(body: ProjectUpdate, access: ProjectAccess = Depends(require_role("admin")),
                   db: Session = Depends(get_db)):
    p = access.project
    fields = body.model_fields_set
    if "start_date" in fields:
        p.start_date = body.start_date and body.start_date.isoformat()
    if "end_date" in fields:
        p.end_date = body.end_date and body.end_date.isoformat()
    if p.start_date and p.end_date and p.start_date > p.end_date:
        raise HTTPException(422, "start_date must not be after end_date")
    if body.imagery is not None:
        p.imagery = body.imagery.model_dump()
    if "model" in fields:
        p.model = body.model
    if body.label_schema is not None:
        p.label_schema = body.label_schema.model_dump()
    if body.aoi is not None:
        p.aoi_geojson = json.dumps(geometry_checked(body.aoi))
    db.commit()
    return project_out(p, access.role)


@router.delete("/{project_id}", status_code=204)
def delete_project(request: Request, access: ProjectAccess = Depends(require_role("admin")),
                   db: Session = Depends(get_db)):
    folder = project_folder(request, access.project)
    db.delete(access.project)
    db.commit()
    remove_tree(folder)


@router.put("/{project_id}/members", status_code=204)
def set_member(body: MemberSet, access: ProjectAccess = Depends(require_role("admin")),
               db: Session = Depends(get_db)):
    """Give a user a role in the project (or change it)."""
    user = db.scalar(select(User).where(User.username == body.username))
    if user is None:
        raise HTTPException(404, f"no user {body.username!r}")
    row = db.scalar(select(Membership).where(Membership.project_id == access.project.id,
                                             Membership.user_id == user.id))
    if row is None:
        db.add(Membership(project_id=access.project.id, user_id=user.id, role=body.role))
    else:
        if body.role != "admin":
            check_not_last_admin(db, row, body.username)  # a demotion keeps one admin
        row.role = body.role
    db.commit()


@router.post("/{project_id}/aoi", response_model=ProjectOut)
async def upload_aoi(request: Request, file: UploadFile = File(...),
                     access: ProjectAccess = Depends(require_role("admin")),
                     db: Session = Depends(get_db)):
    """Set the area of interest from a GeoJSON, GeoPackage, zipped Shapefile or KML file."""
    settings = request.app.state.settings
    folder = project_folder(request, access.project) / "uploads"
    path = await save_upload(file, folder, AOI_SUFFIXES, settings.max_upload_bytes)
    access.project.aoi_geojson = json.dumps(read_aoi(path, settings.max_upload_bytes))
    db.commit()
    return project_out(access.project, access.role)
