"""Request dependencies: runtime, database session, clock, and who is calling.

Login is required by default: routers made with `protected_router` authenticate every
request. A caller is a full session (password and second factor done, password changed,
TOTP enrolled) from the session cookie, or a personal API token in ``Authorization: Bearer``.
The user and role are read from the database on every request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from appliance.acl import rules
from appliance.auth import sessions, tokens
from appliance.auth.tables import ApiToken, AuthSession, User
from appliance.core.config import AuthSettings
from appliance.core.db import utcnow
from appliance.core.errors import NotAuthenticated, NotFound, PermissionDenied
from appliance.core.runtime import Runtime
from appliance.documents.tables import DELETING, Document

CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def get_runtime(request: Request) -> Runtime:
    """The runtime built in the app's lifespan."""
    rt: Runtime = request.app.state.rt
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(rt: RuntimeDep) -> Iterator[Session]:
    """One database session per request, closed (rolled back if uncommitted) afterwards."""
    with rt.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_now(request: Request) -> dt.datetime:
    """Now, from the app's clock (tests replace ``app.state.clock``)."""
    clock: Callable[[], dt.datetime] = getattr(request.app.state, "clock", utcnow)
    return clock()


NowDep = Annotated[dt.datetime, Depends(get_now)]


def client_address(request: Request) -> str:
    """The caller's address: the direct peer's, or the one a proxy listed in
    ``server.trusted_proxies`` forwarded (middleware/proxy.py); never a header alone."""
    return request.client.host if request.client is not None else "unknown"


@dataclass(frozen=True)
class CookieNames:
    """Cookie names: ``__Host-`` prefixed when cookies are Secure."""

    session: str
    preauth: str
    csrf: str


def cookie_names(settings: AuthSettings) -> CookieNames:
    """The cookie names for these settings."""
    prefix = "__Host-" if settings.cookie_secure else ""
    return CookieNames(prefix + "session", prefix + "preauth", prefix + "csrf")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the user, and the session or API token that proved it."""

    user: User
    session: AuthSession | None = None
    token: ApiToken | None = None


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise NotAuthenticated("The Authorization header must be 'Bearer <API token>'.")
    return credentials.strip()


def _usable(user: User | None) -> bool:
    return (
        user is not None and user.is_active and user.totp_enrolled and not user.must_change_password
    )


def authenticate(request: Request, session: SessionDep, rt: RuntimeDep, now: NowDep) -> Caller:
    """Who is calling, from an API token or the session cookie; 401 otherwise."""
    settings = rt.settings.auth
    secret = _bearer(request)
    if secret is not None:
        token = tokens.lookup(session, secret=secret, now=now)
        user = session.get(User, token.user_id) if token is not None else None
        if token is None or not _usable(user):
            raise NotAuthenticated("The API token is unknown, expired or revoked.")
        assert user is not None  # noqa: S101 - _usable checked it
        if not tokens.allows_method(token, request.method):
            raise PermissionDenied(
                "This API token's scopes do not allow this request. "
                "Create a token with the 'read' or 'write' scope it needs."
            )
        session.commit()
        return Caller(user=user, token=token)
    cookie = request.cookies.get(cookie_names(settings).session)
    row = (
        sessions.lookup(session, token=cookie, kind=sessions.FULL, now=now, settings=settings)
        if cookie
        else None
    )
    user = session.get(User, row.user_id) if row is not None else None
    if row is None or not _usable(user):
        session.commit()  # an expired session row was deleted
        raise NotAuthenticated("Sign in first: no valid session came with the request.")
    assert user is not None  # noqa: S101 - _usable checked it
    if request.method in UNSAFE_METHODS and not sessions.csrf_matches(
        row, request.headers.get(CSRF_HEADER)
    ):
        raise PermissionDenied(
            "The CSRF token does not belong to this session. Reload the page and try again."
        )
    session.commit()
    return Caller(user=user, session=row)


CallerDep = Annotated[Caller, Depends(authenticate)]


def current_user(caller: CallerDep) -> User:
    """The signed-in user (401 if none)."""
    return caller.user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(caller: CallerDep) -> User:
    """The signed-in user if an admin (403 otherwise; API tokens also need the admin scope)."""
    if not caller.user.is_admin:
        raise PermissionDenied("This needs the admin role.")
    if caller.token is not None and "admin" not in tokens.scopes_of(caller.token):
        raise PermissionDenied("This API token lacks the 'admin' scope.")
    return caller.user


AdminUser = Annotated[User, Depends(admin_user)]


def _field(loc: Any) -> str:
    parts = [str(p) for p in (loc or ()) if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "the request"


def quiet_validation_body(errors: Any) -> dict[str, Any]:
    """A 422 body that says which field is wrong and why, and never echoes what was sent.

    FastAPI's default answer repeats each bad value (`input`): a pasted 5,000-character
    question, a password, a document's text would come back in the error, into logs and
    screenshots. Here only the field, the reason and, for a length, the count remain.
    """
    detail: list[dict[str, Any]] = []
    messages: list[str] = []
    for err in errors:
        loc, kind = list(err.get("loc") or ()), str(err.get("type", ""))
        ctx = err.get("ctx") or {}
        value = err.get("input")
        name = _field(loc)
        if kind == "string_too_long" and isinstance(value, str):
            limit = ctx.get("max_length")
            msg = (
                f"The {name} has {len(value):,} characters; at most {limit:,} are allowed. "
                "Shorten it and send it again."
                if isinstance(limit, int)
                else f"The {name} is too long."
            )
        else:
            msg = f"{name}: {err.get('msg', 'invalid value')}"
        messages.append(msg)
        detail.append({"loc": loc, "msg": str(err.get("msg", "")), "type": kind})
    return {"error": "invalid_input", "message": " ".join(messages), "detail": detail}


def protected_router(**kw: Any) -> APIRouter:
    """An APIRouter whose every route requires a signed-in user (add more dependencies freely)."""
    dependencies = [Depends(current_user), *kw.pop("dependencies", [])]
    return APIRouter(dependencies=dependencies, **kw)


# -- resource guards: the document a route acts on, checked by the one read rule ----------


def _live_document(session: Session, doc_id: str) -> Document:
    doc = session.get(Document, doc_id)
    if doc is None or doc.state == DELETING:
        raise NotFound(rules.NOT_FOUND)
    return doc


def visible_document(doc_id: str, user: CurrentUser, session: SessionDep) -> Document:
    """The document at ``{doc_id}`` if the caller may see it (readable, or an upload they
    manage); otherwise 404, the same answer as for a document that does not exist."""
    doc = _live_document(session, doc_id)
    if not rules.can_see(session, user, doc):
        raise NotFound(rules.NOT_FOUND)
    return doc


def readable_document(doc_id: str, user: CurrentUser, session: SessionDep) -> Document:
    """The document at ``{doc_id}`` if the caller may read its content now; otherwise 404."""
    doc = _live_document(session, doc_id)
    if not rules.can_read(session, user, doc):
        raise NotFound(rules.NOT_FOUND)
    return doc


def managed_document(session: Session, user: User, doc_id: str) -> Document:
    """The document if the caller may manage it; 403 if they only read it, else 404."""
    doc = _live_document(session, doc_id)
    if not rules.can_manage(session, user, doc):
        if rules.can_see(session, user, doc):
            raise PermissionDenied(
                "You may read this document but not change it. Ask someone who manages it."
            )
        raise NotFound(rules.NOT_FOUND)
    return doc


def _managed_document(doc_id: str, user: CurrentUser, session: SessionDep) -> Document:
    return managed_document(session, user, doc_id)


VisibleDocument = Annotated[Document, Depends(visible_document)]
"""The ``{doc_id}`` of the path, visible to the caller (metadata only)."""
ReadableDocument = Annotated[Document, Depends(readable_document)]
"""The ``{doc_id}`` of the path, readable by the caller (content, passages, download)."""
ManagedDocument = Annotated[Document, Depends(_managed_document)]
"""The ``{doc_id}`` of the path, managed by the caller (grants, classification, deletion)."""
