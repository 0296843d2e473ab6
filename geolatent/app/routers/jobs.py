"""Runs as background jobs: start (project admins), list, progress and log, cancel,
downloads, and the prediction map as tiles with its legend."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from geolatent.app.imagery import FETCHED
from geolatent.app.models import Job, Project
from geolatent.app.schemas import JobIn, JobOut
from geolatent.app.security import ProjectAccess, get_db, require_role
from geolatent.app.uploads import inside
from geolatent.app.worker import job_folder

router = APIRouter(prefix="/api/projects/{project_id}/jobs", tags=["jobs"])
DOWNLOADS = {"map.tif": "image/tiff", "map.geojson": "application/geo+json"}


def _job(db: Session, access: ProjectAccess, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None or job.project_id != access.project.id:
        raise HTTPException(404, f"no job {job_id} in this project")
    return job


@router.post("", response_model=JobOut, status_code=201)
def start_job(body: JobIn, access: ProjectAccess = Depends(require_role("admin")),
              db: Session = Depends(get_db)):
    """Queue a job for the worker: ``imagery`` (fetch the monthly composites of a ``preset`` or
    ``stac`` project's area and dates), ``finetune`` (params: task, epochs, encoder, ...; the
    task defaults to ``pixel_regression`` for a numeric label schema) or ``predict`` (params:
    model_job = a finished fine-tuning job's id; start, end)."""
    project = access.project
    if body.kind == "imagery":
        _check_imagery_job(db, project)
    if body.kind == "finetune":
        body.params = _finetune_params(project.label_schema or {}, body.params)
    if body.kind == "predict":
        mj = body.params.get("model_job")
        model_job = db.get(Job, int(mj)) if isinstance(mj, int | str) and str(mj).isdigit() \
            else None
        if model_job is None or model_job.project_id != access.project.id or \
                model_job.kind != "finetune" or model_job.status != "succeeded":
            raise HTTPException(422, "params.model_job: the id of a finished fine-tuning job "
                                     "of this project")
    job = Job(project_id=project.id, kind=body.kind, params=body.params,
              created_by=access.user.id, result={})
    db.add(job)
    db.commit()
    return job


def _check_imagery_job(db: Session, project: Project) -> None:
    kind = (project.imagery or {}).get("type")
    if kind not in FETCHED:
        raise HTTPException(422, f"kind 'imagery' fetches STAC imagery, but this project's "
                                 f"imagery.type is {kind!r}: set imagery to a 'preset' or 'stac'")
    if not project.aoi_geojson or not project.start_date or not project.end_date:
        raise HTTPException(422, "set the project's aoi, start_date and end_date before "
                                 "fetching its imagery")
    busy = db.scalar(select(Job.id).where(Job.project_id == project.id, Job.kind == "imagery",
                                          Job.status.in_(("queued", "running"))))
    if busy is not None:
        raise HTTPException(409, f"imagery job {busy} of this project is still running: wait "
                                 "for it or cancel it")


CLASS_TASKS = ("segmentation", "classification")
VALUE_TASKS = ("pixel_regression", "regression")


def _finetune_params(schema: dict, params: dict) -> dict:
    """The fine-tuning task must fit the label schema: classes -> segmentation /
    classification; a numeric target -> pixel_regression (default) / regression."""
    numeric = schema.get("kind") == "value"
    allowed = VALUE_TASKS if numeric else CLASS_TASKS
    task = params.get("task", allowed[0])
    if task not in allowed:
        raise HTTPException(422, f"params.task {task!r} does not fit the project's "
                                 f"{'numeric' if numeric else 'class'} label schema: one of "
                                 f"{list(allowed)}")
    return {**params, "task": task}


@router.get("", response_model=list[JobOut])
def list_jobs(access: ProjectAccess = Depends(require_role("viewer")),
              db: Session = Depends(get_db)):
    return db.scalars(select(Job).where(Job.project_id == access.project.id)
                      .order_by(Job.id.desc())).all()


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: int, access: ProjectAccess = Depends(require_role("viewer")),
            db: Session = Depends(get_db)):
    return _job(db, access, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: int, access: ProjectAccess = Depends(require_role("admin")),
               db: Session = Depends(get_db)):
    """A queued job is cancelled at once; a running one stops at its next progress step."""
    job = _job(db, access, job_id)
    db.execute(update(Job).where(Job.id == job.id, Job.status == "queued")
               .values(status="cancelled", error="cancelled by a user"))
    db.execute(update(Job).where(Job.id == job.id, Job.status == "running")
               .values(cancel_requested=True))
    db.commit()
    db.refresh(job)
    return job


def _result_file(request: Request, access: ProjectAccess, job: Job, name: str) -> Path:
    if name not in DOWNLOADS or job.status != "succeeded" or name not in job.result.get(
            "files", []):
        raise HTTPException(404, f"job {job.id} has no file {name!r}")
    folder = job_folder(request.app.state.settings.project_dir, access.project, job.id)
    return inside(folder, folder / name)


@router.get("/{job_id}/files/{name}")
def download(job_id: int, name: str, request: Request,
             access: ProjectAccess = Depends(require_role("viewer")),
             db: Session = Depends(get_db)):
    job = _job(db, access, job_id)
    path = _result_file(request, access, job, name)
    return FileResponse(path, media_type=DOWNLOADS[name],
                        filename=f"{access.project.slug}-job{job.id}-{name}")


@router.get("/{job_id}/tiles/{z}/{x}/{y}.png")
def result_tile(job_id: int, z: int, x: int, y: int, request: Request,
                access: ProjectAccess = Depends(require_role("viewer")),
                db: Session = Depends(get_db)):
    """The prediction map as 256 px tiles: class colours of the legend, or for a value map the
    viridis ramp from ``result.range[0]`` to ``result.range[1]``."""
    from rio_tiler.colormap import cmap
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    job = _job(db, access, job_id)
    path = _result_file(request, access, job, "map.tif")
    legend = job.result.get("legend") or []
    try:
        with Reader(str(path)) as src:
            img = src.tile(x, y, z, tilesize=256, indexes=1)
            if legend:
                colors = {e["index"]: (*_rgb(e["color"]), 255) for e in legend}
                return Response(img.render(img_format="PNG", colormap=colors),
                                media_type="image/png")
            lo, hi = job.result.get("range") or (0.0, 1.0)  # the legend's ramp ends
            img.rescale(in_range=((lo, hi if hi > lo else lo + 1),))
            return Response(img.render(img_format="PNG", colormap=cmap.get("viridis")),
                            media_type="image/png")
    except TileOutsideBounds:
        return Response(status_code=204)


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
