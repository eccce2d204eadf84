"""Personal API tokens for scripts: random, stored as sha256, scoped, expiring, revocable."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from appliance.auth.sessions import TOUCH_EVERY, hash_token
from appliance.auth.tables import ApiToken
from appliance.core.errors import InvalidInput, NotFound

PREFIX = "apl_"
# read: GET/HEAD; write: state-changing requests; admin: admin routes (with the admin role).
SCOPES = ("read", "write", "admin")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def create(
    session: Session,
    *,
    user_id: str,
    name: str,
    scopes: list[str],
    days: int,
    max_days: int,
    now: dt.datetime,
) -> tuple[str, ApiToken]:
    """Create a token; the secret is returned once and stored only hashed."""
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise InvalidInput("A token name has 1-64 printable characters.")
    wanted = sorted(set(scopes), key=SCOPES.index) if set(scopes) <= set(SCOPES) else None
    if not wanted:
        raise InvalidInput(f"Choose one or more scopes from: {', '.join(SCOPES)}.")
    if not 1 <= days <= max_days:
        raise InvalidInput(f"A token lives 1 to {max_days} days.")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user_id,
        name=name,
        token_hash=hash_token(secret),
        scopes=" ".join(wanted),
        created_at=now,
        expires_at=now + dt.timedelta(days=days),
    )
    session.add(row)
    session.flush()
    return secret, row


def lookup(session: Session, *, secret: str, now: dt.datetime) -> ApiToken | None:
    """The live (unrevoked, unexpired) token for a secret."""
    if not secret.startswith(PREFIX):
        return None
    row = session.execute(
        select(ApiToken).where(ApiToken.token_hash == hash_token(secret))
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None or now >= row.expires_at:
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
        session.flush()
    return row


def scopes_of(row: ApiToken) -> frozenset[str]:
    """A token's scopes."""
    return frozenset(row.scopes.split())


def allows_method(row: ApiToken, method: str) -> bool:
    """Whether the token's scopes cover a request with this HTTP method."""
    return ("read" if method.upper() in SAFE_METHODS else "write") in scopes_of(row)


def list_for(session: Session, *, user_id: str) -> list[ApiToken]:
    """A user's tokens (revoked and expired ones too), newest first."""
    return list(
        session.execute(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at.desc())
        ).scalars()
    )


def revoke(session: Session, *, user_id: str, token_id: str, now: dt.datetime) -> ApiToken:
    """Revoke one of a user's tokens (idempotent)."""
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user_id:
        raise NotFound("No such API token. List yours with GET /api/auth/tokens.")
    if row.revoked_at is None:
        row.revoked_at = now
        session.flush()
    return row


def revoke_all(session: Session, *, user_id: str, now: dt.datetime) -> int:
    """Revoke every live token of a user; return how many."""
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0))
