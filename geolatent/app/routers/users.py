"""User accounts (site admins), project members (project admins) and "my tasks" (anyone)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from geolatent.app.models import Membership, Project, Task, User
from geolatent.app.routers.tasks import task_out
from geolatent.app.schemas import Role, TaskOut, UserCreate, UserOut
from geolatent.app.security import (
    ProjectAccess,
    current_user,
    get_db,
    hash_password,
    project_role,
    require_role,
    require_site_admin,
)

router = APIRouter(prefix="/api", tags=["users"])


class MemberOut(BaseModel):
    username: str
    role: Role


class MyTask(TaskOut):
    """A task assigned to the caller, with the project it belongs to."""

    project_id: int
    project_name: str


@router.get("/users", response_model=list[UserOut])
def list_users(_: User = Depends(require_site_admin), db: Session = Depends(get_db)):
    return db.scalars(select(User).order_by(User.id)).all()


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, _: User = Depends(require_site_admin),
                db: Session = Depends(get_db)):
    if db.scalar(select(User).where(User.username == body.username)):
        raise HTTPException(409, f"user {body.username!r} exists already")
    user = User(username=body.username, password_hash=hash_password(body.password),
                is_admin=body.is_admin)
    db.add(user)
    db.commit()
    return user


@router.get("/users/me/tasks", response_model=list[MyTask])
def my_tasks(user: User = Depends(current_user), db: Session = Depends(get_db)):
    """The caller's tasks in every project they (still) belong to, open ones first."""
    rows = db.execute(select(Task, Project).join(Project, Project.id == Task.project_id)
                      .where(Task.assignee_id == user.id).order_by(Project.id, Task.id)).all()
    out = [MyTask(**task_out(db, t).model_dump(), project_id=p.id, project_name=p.name)
           for t, p in rows if project_role(db, user, p.id)]
    done = {"reviewed", "cancelled"}
    return sorted(out, key=lambda t: t.status in done)  # stable: project order kept


@router.get("/projects/{project_id}/members", response_model=list[MemberOut])
def list_members(access: ProjectAccess = Depends(require_role("viewer")),
                 db: Session = Depends(get_db)):
    """The project's members and their roles (set them with PUT .../members)."""
    rows = db.execute(select(User.username, Membership.role)
                      .join(Membership, Membership.user_id == User.id)
                      .where(Membership.project_id == access.project.id)
                      .order_by(User.username)).all()
    return [MemberOut(username=u, role=r) for u, r in rows]


@router.delete("/projects/{project_id}/members/{username}", status_code=204)
def remove_member(username: str, access: ProjectAccess = Depends(require_role("admin")),
                  db: Session = Depends(get_db)):
    """Take a user out of the project; its last admin stays (409), so that someone can
    still manage it. Tasks assigned to the user keep their assignee for the record."""
    row = db.scalar(select(Membership).join(User, User.id == Membership.user_id).where(
        Membership.project_id == access.project.id, User.username == username))
    if row is None:
        raise HTTPException(404, f"{username!r} is not a member of this project")
    check_not_last_admin(db, row, username)
    db.delete(row)
    db.commit()


def check_not_last_admin(db: Session, row: Membership, username: str) -> None:
    """409 when ``row`` is the project's last admin (removing or demoting it would leave the
    project with nobody to manage it)."""
    if row.role != "admin":
        return
    admins = db.scalar(select(func.count()).select_from(Membership).where(
        Membership.project_id == row.project_id, Membership.role == "admin"))
    if admins <= 1:
        raise HTTPException(409, f"{username!r} is the project's last admin: make another "
                                 "member admin first")
