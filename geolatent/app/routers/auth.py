"""Log in / out, who am I, and API tokens for scripts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from geolatent.app.models import LoginSession, User
from geolatent.app.schemas import Login, TokenCreate, UserOut
from geolatent.app.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Principal,
    current_principal,
    current_user,
    get_db,
    new_api_token,
    new_session,
    record_failure,
    reset_failures,
    throttle_keys,
    throttled_for,
    verify_password,
)

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/login", response_model=UserOut)
def login(body: Login, request: Request, response: Response, db: Session = Depends(get_db)):
    """Check the password; set the session (HttpOnly) and CSRF cookies.

    Failed logins are counted per username and per client address (in the database); past
    the limit the caller gets 429 with ``Retry-After`` (seconds) even with the right password,
    until the wait is over. A successful login resets the username's count."""
    settings = request.app.state.settings
    keys = throttle_keys(body.username, request.client.host if request.client else "unknown")
    wait = throttled_for(db, keys)
    if wait:
        raise HTTPException(429, f"too many failed logins for this username or from this "
                                 f"address: try again in {wait} s",
                            headers={"Retry-After": str(wait)})
    user = db.scalar(select(User).where(User.username == body.username))
    if user is None or not verify_password(user.password_hash, body.password):
        record_failure(db, keys, (settings.login_max_failures,
                                  settings.login_max_failures_per_address),
                       settings.login_window_s)
        raise HTTPException(401, "wrong username or password")
    reset_failures(db, keys[0])
    secret, csrf = new_session(db, user, settings.session_hours)
    age = int(settings.session_hours * 3600)
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="strict",
                        secure=settings.secure_cookies, max_age=age, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="strict",
                        secure=settings.secure_cookies, max_age=age, path="/")
    return user


@router.post("/logout", status_code=204)
def logout(response: Response, principal: Principal = Depends(current_principal),
           db: Session = Depends(get_db)):
    if principal.session is not None:
        db.execute(delete(LoginSession).where(LoginSession.id == principal.session.id))
        db.commit()
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


@router.get("/me", response_model=UserOut)
def me(user: User = Depends(current_user)):
    return user


@router.post("/tokens", status_code=201)
def create_token(body: TokenCreate, user: User = Depends(current_user),
                 db: Session = Depends(get_db)) -> dict:
    """A new API token for the caller (shown once): send it as ``Authorization: Bearer``."""
    return {"name": body.name, "token": new_api_token(db, user, body.name)}
