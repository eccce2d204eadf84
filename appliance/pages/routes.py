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
from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance import __version__
from appliance.admin import service as switches
from appliance.admin.service import format_time
from appliance.admin.tables import ANSWERING_PAUSED, READ_ONLY
from appliance.approvals import service as approvals
from appliance.auth.tables import User
from appliance.core.errors import ApplianceError, NotAuthenticated, PermissionDenied
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


def when_filter(value: dt.datetime | str | None, empty: str = "") -> Markup:
    """A time in the site's one format, '3 Dec 2026, 14:05 UTC', inside <time datetime>.

    The page's script (common.js) rewrites it in the reader's own time zone."""
    if value is None or value == "":
        return Markup(escape(empty))  # noqa: S704 - escaped text
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    iso = moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return Markup(  # noqa: S704 - both parts escaped
        f'<time datetime="{escape(iso)}">{escape(format_time(moment))}</time>'
    )


_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def every_filter(seconds: int | None) -> str:
    """An interval in words: 'every hour', 'every 6 hours', 'every 90 seconds'."""
    if not seconds or seconds <= 0:
        return "never"
    for size, unit in _UNITS:
        if seconds % size == 0:
            n = seconds // size
            return f"every {unit}" if n == 1 else f"every {n} {unit}s"
    return f"every {seconds} seconds"  # pragma: no cover - the 1-second unit always divides


def ticks_filter(text: str | None) -> Markup:
    """Text with `backticked` commands shown as <code> (the rest escaped)."""
    parts = str(text or "").split("`")
    return Markup(  # noqa: S704 - every part escaped
        "".join(
            f"<code>{escape(part)}</code>" if i % 2 else str(escape(part))
            for i, part in enumerate(parts)
        )
    )


templates.env.filters["when"] = when_filter
templates.env.filters["ticks"] = ticks_filter
templates.env.filters["every"] = every_filter

# What a job's counts mean, in words (a count of 0 is left out).
JOB_RESULT_WORDS = {
    "requeued": "interrupted documents queued again",
    "failed": "documents marked failed",
    "deletions_finished": "deletions finished",
    "orphan_points_removed": "orphaned index entries removed",
    "orphan_blobs_removed": "orphaned files removed",
    "orphan_chunk_rows_removed": "orphaned passages removed",
    "expired_sessions_removed": "expired sessions removed",
    "documents_deleted": "documents deleted as due",
    "documents_held": "documents kept under legal hold",
    "sources_scrubbed": "answer sources of deleted documents cleared",
    "messages_deleted": "chat messages deleted",
    "conversations_deleted": "conversations deleted",
    "sessions_deleted": "ended sessions deleted",
    "audit_entries_pruned": "audit entries pruned",
}


def job_result_words(result: dict[str, Any] | None) -> list[str]:
    """A job's last result as short sentences; ['Nothing to do.'] when all counts are 0."""
    if not result:
        return []
    out = []
    for key, value in result.items():
        if key == "audit_prune":
            if value != "ok":
                out.append(f"Audit pruning: {value}.")
            continue
        if isinstance(value, int) and value:
            out.append(f"{value} {JOB_RESULT_WORDS.get(key, key.replace('_', ' '))}")
    return out or ["Nothing to do."]


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


PAUSE_WORDS = {
    ANSWERING_PAUSED: "Answering questions is paused.",
    READ_ONLY: "The appliance is read-only: uploads, edits and questions are refused.",
}


def _paused(rt: Runtime) -> list[dict[str, Any]]:
    """The switches users notice that are on, for the banner on every page."""
    with rt.sessions() as session:
        return [
            {"what": PAUSE_WORDS[s.name], "reason": s.reason, "back_by": s.back_by}
            for s in switches.paused(session)
        ]


def _render(
    request: Request,
    rt: Runtime,
    name: str,
    user: User | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "csrf_cookie": cookie_names(rt.settings.auth).csrf,
            "version": __version__,
            "admin_sections": ADMIN_SECTIONS,
            "paused": _paused(rt) if user is not None else [],
            **context,
        },
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


ERROR_TITLES = {
    403: "Not for this account",
    404: "Page not found",
    405: "Not found",
    500: "Something went wrong",
    503: "Paused for maintenance",
}


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """An error as a page with the way back (the header's links when signed in)."""
    rt: Runtime | None = getattr(request.app.state, "rt", None)
    if rt is None:  # pragma: no cover - only before the lifespan has run
        return HTMLResponse(f"<h1>{escape(message)}</h1>", status_code=status)
    page = "admin" if request.url.path.startswith("/admin") else "error"
    with rt.sessions() as session:
        try:
            user = _signed_in(request, session, rt, rt_now(request))
        except ApplianceError:  # e.g. a token whose scopes refuse it: show the page plain
            user = None
        return _render(
            request,
            rt,
            "error.html",
            user,
            status_code=status,
            page=page,
            status=status,
            title=ERROR_TITLES.get(status, "Something went wrong"),
            message=message,
            path=request.url.path,
        )


def rt_now(request: Request) -> dt.datetime:
    """Now from the app's clock, outside a route (the error handlers)."""
    clock = getattr(request.app.state, "clock", None)
    return clock() if clock is not None else dt.datetime.now(dt.UTC)


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
        return _render(
            request,
            rt,
            "error.html",
            user,
            status_code=404,
            page="admin",
            status=404,
            title=ERROR_TITLES[404],
            message="There is no such admin page.",
            path=request.url.path,
        )
    try:
        admin_user(caller)  # the one admin check, the same as the admin API's
    except PermissionDenied as exc:
        message = (
            exc.message
            if user.is_admin
            else "This page is for administrators. Ask one if you need something changed."
        )
        return _render(
            request,
            rt,
            "error.html",
            user,
            status_code=403,
            page="admin",
            status=403,
            title=ERROR_TITLES[403],
            message=message,
            path=request.url.path,
        )
    extra: dict[str, Any] = {}
    if section == "system":
        extra = {
            "status": _system_status(request, session, rt),
            "models": _models(rt),
            "small_model_note": (
                SMALL_MODEL_NOTE if rt.settings.models.chat_model == SMOLLM2_NAME else None
            ),
            "jobs": [
                {**j.public(), "result_words": job_result_words(j.last_result)}
                for j in job_status(rt, now=now)
            ],
        }
    if section in ("approvals", "users"):
        extra["second_admin_note"] = approvals.second_admin_note(session, user, general=True)
    return _render(
        request, rt, f"admin/{section}.html", user, page="admin", section=section, **extra
    )
