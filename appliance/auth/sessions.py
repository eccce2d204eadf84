"""Server-side sessions: random 256-bit tokens in cookies, only their sha256 in the database."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.auth.tables import AuthSession
from appliance.core.config import AuthSettings

TOKEN_BYTES = 32
FULL = "full"
PRE = "pre"
# Writing last_seen_at on every request would turn each read into a write.
TOUCH_EVERY = dt.timedelta(seconds=15)


def hash_token(token: str) -> str:
    """The sha256 (hex) under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token of 256 bits, URL-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class Issued:
    """A new session: the token and CSRF token go to the client once; the row stays here."""

    token: str
    csrf: str
    row: AuthSession


def issue(
    session: Session,
    *,
    user_id: str,
    kind: str,
    stage: str | None,
    now: dt.datetime,
    settings: AuthSettings,
    client: str | None,
    user_agent: str | None,
) -> Issued:
    """Create a session; a pre session lives minutes, a full one until its timeouts."""
    token, csrf = new_token(), new_token()
    lifetime = (
        dt.timedelta(hours=settings.session_absolute_hours)
        if kind == FULL
        else dt.timedelta(minutes=settings.preauth_minutes)
    )
    row = AuthSession(
        token_hash=hash_token(token),
        csrf_hash=hash_token(csrf),
        user_id=user_id,
        kind=kind,
        stage=stage,
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetime,
        client=client[:64] if client else None,
        user_agent=user_agent[:200] if user_agent else None,
    )
    session.add(row)
    session.flush()
    return Issued(token, csrf, row)


def is_live(row: AuthSession, *, now: dt.datetime, settings: AuthSettings) -> bool:
    """Whether a session is within its absolute and (for full sessions) idle timeouts."""
    if now >= row.expires_at:
        return False
    idle = dt.timedelta(minutes=settings.session_idle_minutes)
    return not (row.kind == FULL and now - row.last_seen_at >= idle)


def lookup(
    session: Session, *, token: str, kind: str, now: dt.datetime, settings: AuthSettings
) -> AuthSession | None:
    """The live session of this kind for a token; an expired one is deleted."""
    row = session.execute(
        select(AuthSession).where(
            AuthSession.token_hash == hash_token(token), AuthSession.kind == kind
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    if not is_live(row, now=now, settings=settings):
        session.delete(row)
        session.flush()
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        session.flush()
    return row


def csrf_matches(row: AuthSession, csrf: str | None) -> bool:
    """Whether a CSRF token is the one issued with this session."""
    return csrf is not None and secrets.compare_digest(row.csrf_hash, hash_token(csrf))


def end(session: Session, *, session_id: str, user_id: str | None = None) -> bool:
    """End one session (of that user, if given); True if one was ended."""
    query = delete(AuthSession).where(AuthSession.id == session_id)
    if user_id is not None:
        query = query.where(AuthSession.user_id == user_id)
    return bool(getattr(session.execute(query), "rowcount", 0))


def end_all(session: Session, *, user_id: str, except_id: str | None = None) -> int:
    """End every session of a user (but one, if given); return how many ended."""
    query = delete(AuthSession).where(AuthSession.user_id == user_id)
    if except_id is not None:
        query = query.where(AuthSession.id != except_id)
    return int(getattr(session.execute(query), "rowcount", 0))


def list_for(
    session: Session, *, user_id: str, now: dt.datetime, settings: AuthSettings
) -> list[AuthSession]:
    """A user's live full sessions, newest first."""
    rows = session.execute(
        select(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.kind == FULL)
        .order_by(AuthSession.created_at.desc())
    ).scalars()
    return [r for r in rows if is_live(r, now=now, settings=settings)]


def purge_expired(session: Session, *, now: dt.datetime, settings: AuthSettings) -> int:
    """Delete sessions past their absolute or idle timeout (for the retention job)."""
    idle_cutoff = now - dt.timedelta(minutes=settings.session_idle_minutes)
    result = session.execute(
        delete(AuthSession).where(
            (AuthSession.expires_at <= now)
            | ((AuthSession.kind == FULL) & (AuthSession.last_seen_at <= idle_cutoff))
        )
    )
    return int(getattr(result, "rowcount", 0))
