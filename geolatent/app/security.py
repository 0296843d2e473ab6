"""Passwords (Argon2id via argon2-cffi), cookie sessions with CSRF, API tokens and roles.

Authentication: a browser logs in and gets two cookies: ``gl_session`` (HttpOnly,
SameSite=Strict, the session secret) and ``gl_csrf`` (readable by the page). Every unsafe
request (POST/PUT/PATCH/DELETE) authenticated by the session cookie must echo the CSRF token in
the ``X-CSRF-Token`` header (double submit, checked against the token stored with the session),
so a cross-site form or fetch cannot act for the user. Scripts send
``Authorization: Bearer <token>`` instead (never sent automatically by a browser: no CSRF).

Authorization: site admins (``User.is_admin``) manage users and create projects; inside a
project each member has one role, ranked viewer < annotator < reviewer < admin; every project
endpoint names the lowest role it needs (:func:`require_role`). A non-member gets 404, not 403,
so project names do not leak.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request
from sqlalchemy import case, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from geolatent.app.models import (
    ROLES,
    ApiToken,
    LoginSession,
    LoginThrottle,
    Membership,
    Project,
    User,
    utcnow,
)

SESSION_COOKIE = "gl_session"
CSRF_COOKIE = "gl_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    """SHA-256 of a random secret: the database never holds a usable session or token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_session(db: Session, user: User, hours: float) -> tuple[str, str]:
    """Create a login session; returns ``(session secret, csrf token)``."""
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    db.add(LoginSession(token_hash=token_digest(secret), csrf_token=csrf, user_id=user.id,
                        expires_at=utcnow() + timedelta(hours=hours)))
    db.commit()
    return secret, csrf


def new_api_token(db: Session, user: User, name: str) -> str:
    token = "glt_" + secrets.token_urlsafe(32)
    db.add(ApiToken(token_hash=token_digest(token), name=name, user_id=user.id))
    db.commit()
    return token


# -- login rate limit ----------------------------------------------------------------------------
def throttle_keys(username: str, address: str) -> tuple[str, str]:
    """The two counters a login attempt counts against: its username and its client address."""
    return f"user:{username[:64]}", f"addr:{address[:128]}"


def throttled_for(db: Session, keys: tuple[str, ...]) -> int:
    """Seconds until every key may try again (0 = not throttled)."""
    now = utcnow()
    until = [t for t in db.scalars(select(LoginThrottle.blocked_until).where(
        LoginThrottle.key.in_(keys))) if t is not None and t > now]
    return math.ceil(max((t - now).total_seconds() for t in until)) if until else 0


def record_failure(db: Session, keys: tuple[str, ...], limits: tuple[int, ...],
                   window_s: float) -> None:
    """Count a failed login against each key (an atomic UPDATE, so concurrent workers never
    lose a count); a key reaching its limit is blocked for ``window_s`` from this failure."""
    now = utcnow()
    window = timedelta(seconds=window_s)
    # rows of finished windows go, so usernames sprayed at random do not grow the table
    db.execute(delete(LoginThrottle).where(
        LoginThrottle.window_start < now - window,
        LoginThrottle.blocked_until.is_(None) | (LoginThrottle.blocked_until < now)))
    for key, limit in zip(keys, limits, strict=True):
        for _ in range(2):  # the first failure of a key inserts its row (once, under a race)
            res = db.execute(update(LoginThrottle).where(LoginThrottle.key == key).values(
                failures=case((LoginThrottle.window_start < now - window, 1),
                              else_=LoginThrottle.failures + 1),
                window_start=case((LoginThrottle.window_start < now - window, now),
                                  else_=LoginThrottle.window_start)))
            if res.rowcount:
                break
            try:
                db.add(LoginThrottle(key=key, failures=1, window_start=now))
                db.commit()
                break
            except IntegrityError:
                db.rollback()
        db.execute(update(LoginThrottle).where(
            LoginThrottle.key == key, LoginThrottle.failures >= limit,
        ).values(blocked_until=now + window))
        db.commit()


def reset_failures(db: Session, key: str) -> None:
    db.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
    db.commit()


def get_db(request: Request):  # noqa: ANN201 - a generator dependency
    with request.app.state.sessions() as db:
        yield db


@dataclass
class Principal:
    """Who is calling, and how (``session`` needs CSRF on unsafe methods, ``token`` does not)."""

    user: User
    via: str
    session: LoginSession | None = None


def current_principal(request: Request, db: Session = Depends(get_db)) -> Principal:
    """The authenticated caller, or 401. Enforces CSRF for cookie sessions."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        row = db.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(auth[7:])))
        if row is None:
            raise HTTPException(401, "invalid API token: create one with POST /api/auth/tokens")
        return Principal(db.get(User, row.user_id), "token")
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        raise HTTPException(401, "not logged in: POST /api/auth/login or send a Bearer token")
    sess = db.scalar(select(LoginSession).where(LoginSession.token_hash == token_digest(secret)))
    if sess is None or sess.expires_at < utcnow():
        raise HTTPException(401, "session expired: log in again")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not secrets.compare_digest(sent, sess.csrf_token):
            raise HTTPException(403, f"CSRF check failed: send the {CSRF_COOKIE} cookie value "
                                     f"in the {CSRF_HEADER} header")
    return Principal(db.get(User, sess.user_id), "session", sess)


def current_user(principal: Principal = Depends(current_principal)) -> User:
    return principal.user


def require_site_admin(user: User = Depends(current_user)) -> User:
    if not user.is_admin:
        raise HTTPException(403, "only a site admin can do this")
    return user


def role_rank(role: str) -> int:
    return ROLES.index(role)


def project_role(db: Session, user: User, project_id: int) -> str | None:
    """The caller's role in a project (site admins are project admins everywhere)."""
    if user.is_admin:
        return "admin"
    return db.scalar(select(Membership.role).where(Membership.project_id == project_id,
                                                   Membership.user_id == user.id))


@dataclass
class ProjectAccess:
    project: Project
    user: User
    role: str


def require_role(minimum: str):  # noqa: ANN201 - returns a FastAPI dependency
    """Dependency: the project from the ``project_id`` path parameter, if the caller's role in
    it is at least ``minimum``; 404 for non-members, 403 for a too-low role."""
    if minimum not in ROLES:
        raise ValueError(f"unknown role {minimum!r}; one of {ROLES}")

    def dependency(project_id: int, user: User = Depends(current_user),
                   db: Session = Depends(get_db)) -> ProjectAccess:
        project = db.get(Project, project_id)
        role = project_role(db, user, project_id) if project else None
        if project is None or role is None:
            raise HTTPException(404, f"no project {project_id} (or you are not a member)")
        if role_rank(role) < role_rank(minimum):
            raise HTTPException(403, f"this needs the {minimum} role in the project; "
                                     f"you are {role}")
        return ProjectAccess(project, user, role)

    return dependency
