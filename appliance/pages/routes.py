"""Page routes: each answers a Jinja2 shell for one screen; its ES module calls the JSON API.

Every page except sign-in needs a full session (password, second factor, enrolled TOTP,
password changed); without one the browser is sent to /signin?next=<page>. Admin pages
check, on the server, exactly what the admin API checks (`deps.admin_user`: the admin role,
and the 'admin' scope when the caller uses an API token); hiding the links is only for
tidiness.
Pages never embed document text or answers; the scripts fetch them and insert them as
text (or, for answers, as the server-sanitised HTML from chat/render.py).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance import __version__
from appliance.auth.tables import User
from appliance.core.errors import NotAuthenticated, PermissionDenied
from appliance.core.runtime import Runtime
from appliance.deps import (
    Caller,
    NowDep,
    RuntimeDep,
    SessionDep,
    admin_user,
    authenticate,
    cookie_names,
)
from appliance.documents.tables import Document
from appliance.jobs.registry import status as job_status
from models.manifest import SMALL_MODEL_NOTE, SMOLLM2_NAME, ModelRegistry, verify
from models.protocols import ModelError

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))

router = APIRouter(include_in_schema=False, tags=["pages"])

# Admin sections: (path, label). Each page's script calls the admin API of its section.
ADMIN_SECTIONS = [
    ("users", "Users"),
    ("groups", "Groups"),
    ("approvals", "Approvals"),
    ("audit", "Audit log"),
    ("retention", "Retention"),
    ("system", "System"),
]


# A path on this site: no scheme, no host, nothing a browser would strip or reinterpret
# (it drops tabs and newlines, and reads "\\" as "/", so "/\t/evil" would become "//evil").
_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9/_.~%?=&+-]*")


def _safe_next(value: str | None) -> str:
    """A local path to return to after sign-in; anything else becomes '/'."""
    if not value or not _LOCAL_PATH.fullmatch(value):
        return "/"
    return value


def _caller(request: Request, session: Session, rt: Runtime, now: dt.datetime) -> Caller | None:
    try:
        return authenticate(request, session, rt, now)
    except NotAuthenticated:
        return None


def _signed_in(request: Request, session: Session, rt: Runtime, now: dt.datetime) -> User | None:
    caller = _caller(request, session, rt, now)
    return caller.user if caller is not None else None


def _render(
    request: Request, rt: Runtime, name: str, user: User | None, **context: Any
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "csrf_cookie": cookie_names(rt.settings.auth).csrf,
            "version": __version__,
            "admin_sections": ADMIN_SECTIONS,
            **context,
        },
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _to_signin(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/signin?next={quote(target, safe='/')}", status_code=303)


@router.get("/signin")
def signin_page(
    request: Request, session: SessionDep, rt: RuntimeDep, now: NowDep, next: str | None = None
) -> Response:
    """Sign in: password, then the authenticator code (or enrolment), then a new password."""
    target = _safe_next(next)
    if _signed_in(request, session, rt, now) is not None:
        return RedirectResponse(target, status_code=303)
    return _render(request, rt, "signin.html", None, next=target, page="signin")


def _user_page(name: str, page: str) -> Any:
    def handler(request: Request, session: SessionDep, rt: RuntimeDep, now: NowDep) -> Response:
        user = _signed_in(request, session, rt, now)
        if user is None:
            return _to_signin(request)
        return _render(request, rt, name, user, page=page)

    return handler


router.add_api_route("/", _user_page("chat.html", "chat"), methods=["GET"])
router.add_api_route("/documents", _user_page("documents.html", "documents"), methods=["GET"])
router.add_api_route("/account", _user_page("account.html", "account"), methods=["GET"])


@router.get("/admin")
def admin_home() -> RedirectResponse:
    """The first admin section."""
    return RedirectResponse("/admin/users", status_code=303)


def _tree_bytes(root: Path) -> int:
    """Bytes in files under `root`; a file the engine removes meanwhile counts as 0."""
    total = 0
    for path in root.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            continue
    return total


def _system_status(request: Request, session: Session, rt: Runtime) -> dict[str, Any]:
    """What the system page shows that no API carries yet: index, queue, worker, models."""
    jobs = getattr(request.app.state, "jobs", None)
    by_state = dict(
        session.execute(select(Document.state, func.count()).group_by(Document.state)).all()
    )
    index_dir: Path = rt.settings.index_dir
    index_bytes = _tree_bytes(index_dir) if index_dir.is_dir() else None
    return {
        "worker": "running" if jobs is not None and jobs.alive() else "off",
        "index_backend": rt.settings.index.backend,
        "index_bytes": index_bytes,
        "documents": by_state,
        "queue": rt.scheduler.snapshot(),
        "chat_model": rt.settings.models.chat_model,
        "embedder": rt.settings.models.embedder,
    }


def _models(rt: Runtime) -> list[dict[str, Any]]:
    """Bundled and registered models, each checked against its sha256 (cached per file)."""
    active = {rt.settings.models.chat_model, rt.settings.models.embedder}
    rows = []
    for entry in ModelRegistry(rt.settings.models_dir / "registry.json").entries():
        problem = None
        try:
            verify(entry)
        except ModelError as exc:
            problem = str(exc)
        rows.append(
            {
                "name": entry.name,
                "kind": entry.kind,
                "source": entry.source,
                "sha256": entry.sha256,
                "verified": problem is None,
                "problem": problem,
                "active": entry.name in active,
            }
        )
    return rows


@router.get("/admin/{section}")
def admin_page(
    section: str, request: Request, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> Response:
    """An admin section; 403 for callers the admin API refuses (role, or token scope)."""
    caller = _caller(request, session, rt, now)
    if caller is None:
        return _to_signin(request)
    user = caller.user
    if section not in dict(ADMIN_SECTIONS):
        response = _render(
            request,
            rt,
            "error.html",
            user,
            page="admin",
            status=404,
            message="There is no such admin page.",
        )
        response.status_code = 404
        return response
    try:
        admin_user(caller)  # the one admin check, the same as the admin API's
    except PermissionDenied as exc:
        message = (
            exc.message
            if user.is_admin
            else "This page is for administrators. Ask one if you need something changed."
        )
        response = _render(
            request, rt, "error.html", user, page="admin", status=403, message=message
        )
        response.status_code = 403
        return response
    extra: dict[str, Any] = {}
    if section == "system":
        extra = {
            "status": _system_status(request, session, rt),
            "models": _models(rt),
            "small_model_note": (
                SMALL_MODEL_NOTE if rt.settings.models.chat_model == SMOLLM2_NAME else None
            ),
            "jobs": [j.public() for j in job_status(rt, now=now)],
        }
    return _render(
        request, rt, f"admin/{section}.html", user, page="admin", section=section, **extra
    )
