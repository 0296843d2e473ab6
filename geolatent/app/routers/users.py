"""User accounts (site admins only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from geolatent.app.models import User
from geolatent.app.schemas import UserCreate, UserOut
from geolatent.app.security import get_db, hash_password, require_site_admin

router = APIRouter(prefix="/api/users", tags=["users"])


@router.get("", response_model=list[UserOut])
def list_users(_: User = Depends(require_site_admin), db: Session = Depends(get_db)):
    return db.scalars(select(User).order_by(User.id)).all()


@router.post("", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, _: User = Depends(require_site_admin),
                db: Session = Depends(get_db)):
    if db.scalar(select(User).where(User.username == body.username)):
        raise HTTPException(409, f"user {body.username!r} exists already")
    user = User(username=body.username, password_hash=hash_password(body.password),
                is_admin=body.is_admin)
    db.add(user)
    db.commit()
    return user
