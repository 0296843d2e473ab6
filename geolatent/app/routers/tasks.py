"""Annotation tasks: areas to label with a time range, a status and an assignee; review."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from geolatent.app.models import Membership, Task, User
from geolatent.app.schemas import TaskIn, TaskOut, TaskReview, TaskUpdate
from geolatent.app.security import ProjectAccess, get_db, require_role, role_rank
from geolatent.app.uploads import geometry_checked

router = APIRouter(prefix="/api/projects/{project_id}/tasks", tags=["tasks"])
# statuses an annotator may set on a task; review outcomes need a reviewer
ANNOTATOR_STATUSES = {"pending", "in_progress", "completed", "to_be_reviewed"}


def task_out(db: Session, t: Task) -> TaskOut:
    assignee = db.get(User, t.assignee_id) if t.assignee_id else None
    return TaskOut(id=t.id, name=t.name, geometry=json.loads(t.geometry),
                   start_date=t.start_date, end_date=t.end_date, status=t.status,
                   assignee=assignee.username if assignee else None,
                   review_comment=t.review_comment, version=t.version)


def _member_id(db: Session, access: ProjectAccess, username: str | None) -> int | None:
    if username is None:
        return None
    user = db.scalar(select(User).where(User.username == username))
    member = user and db.scalar(select(Membership).where(
        Membership.project_id == access.project.id, Membership.user_id == user.id))
    if not member and not (user and user.is_admin):
        raise HTTPException(422, f"assignee {username!r} is not a member of this project")
    return user.id


@router.get("", response_model=list[TaskOut])
def list_tasks(access: ProjectAccess = Depends(require_role("viewer")),
               db: Session = Depends(get_db)):
    rows = db.scalars(select(Task).where(Task.project_id == access.project.id).order_by(Task.id))
    return [task_out(db, t) for t in rows]


@router.post("", response_model=TaskOut, status_code=201)
def create_task(body: TaskIn, access: ProjectAccess = Depends(require_role("admin")),
                db: Session = Depends(get_db)):
    if body.start_date and body.end_date and body.start_date > body.end_date:
        raise HTTPException(422, "start_date must not be after end_date")
    t = Task(project_id=access.project.id, name=body.name,
             geometry=json.dumps(geometry_checked(body.geometry)),
             start_date=body.start_date and body.start_date.isoformat(),
             end_date=body.end_date and body.end_date.isoformat(),
             assignee_id=_member_id(db, access, body.assignee))
    db.add(t)
    db.commit()
    return task_out(db, t)


def _versioned(db: Session, access: ProjectAccess, task_id: int, version: int, values: dict):
    t = db.get(Task, task_id)
    if t is None or t.project_id != access.project.id:
        raise HTTPException(404, f"no task {task_id} in this project")
    res = db.execute(update(Task).where(Task.id == task_id, Task.version == version)
                     .values(version=Task.version + 1, **values))
    if res.rowcount != 1:
        db.rollback()
        db.refresh(t)
        return JSONResponse(status_code=409, content={
            "detail": f"the task changed since version {version}: reload it",
            "current": task_out(db, t).model_dump()})
    db.commit()
    db.refresh(t)
    return task_out(db, t)


@router.patch("/{task_id}", response_model=TaskOut)
def update_task(task_id: int, body: TaskUpdate,
                access: ProjectAccess = Depends(require_role("annotator")),
                db: Session = Depends(get_db)):
    """Annotators move their tasks through pending / in progress / completed / to be
    reviewed; reviewers may set any status; admins also (re)assign."""
    values: dict = {}
    if body.status is not None:
        if body.status not in ANNOTATOR_STATUSES and role_rank(access.role) < role_rank(
                "reviewer"):
            raise HTTPException(403, f"setting status {body.status!r} needs the reviewer role")
        values["status"] = body.status
    if "assignee" in body.model_fields_set:
        if access.role != "admin":
            raise HTTPException(403, "assigning tasks needs the admin role in the project")
        values["assignee_id"] = _member_id(db, access, body.assignee)
    return _versioned(db, access, task_id, body.version, values)


@router.post("/{task_id}/review", response_model=TaskOut)
def review_task(task_id: int, body: TaskReview,
                access: ProjectAccess = Depends(require_role("reviewer")),
                db: Session = Depends(get_db)):
    """Accept (status ``reviewed``) or reject (back to ``in_progress``) with a comment."""
    if not body.accept and not body.comment.strip():
        raise HTTPException(422, "a rejection needs a comment saying what to fix")
    return _versioned(db, access, task_id, body.version, {
        "status": "reviewed" if body.accept else "in_progress",
        "review_comment": body.comment or None})
