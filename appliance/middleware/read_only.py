"""Read-only mode at the door: every change over HTTP is refused with 503 ``read_only``.

Allowed while read-only: signing in (password, second factor, enrolment, the forced password
change), signing out and ending sessions (both only protect accounts), verifying the audit
chain (a read), and the kill-switch endpoint itself so an admin can switch read-only off.
Everything else that changes state (POST, PUT, PATCH, DELETE) is refused, asking questions
included, because an answer stores chat history and an audit entry. The switch is read from
the database per request. The operator's CLI is not refused: the shell is the credential.
The refusal's message carries the admin's reason and, when given, when it should be back.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from appliance.admin import service as switches
from appliance.admin.tables import READ_ONLY
from appliance.deps import UNSAFE_METHODS

ALLOWED_PREFIXES = (
    "/api/auth/login",
    "/api/auth/totp",
    "/api/auth/enrol/",
    "/api/auth/password",
    "/api/auth/logout",
    "/api/auth/sessions",
    "/api/admin/system/switches",
    "/api/admin/audit/verify",  # reads only; POST because it carries a checkpoint
)


def allowed_while_read_only(method: str, path: str) -> bool:
    """Whether this request may go through in read-only mode."""
    if method not in UNSAFE_METHODS:
        return True
    return path.startswith(ALLOWED_PREFIXES)


class ReadOnlyGuard:
    """ASGI middleware refusing state changes while the read-only switch is on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through, or answer 503 before the route runs."""
        if scope["type"] != "http" or allowed_while_read_only(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        rt: Any = getattr(scope["app"].state, "rt", None)
        message = None if rt is None else await run_in_threadpool(_read_only, rt)
        if message is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "read_only", "message": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"60"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _read_only(rt: Any) -> str | None:
    """The refusal (with the admin's reason and estimate) while read-only, else None."""
    with rt.sessions() as session:
        if not switches.is_on(session, READ_ONLY):
            return None
        return switches.read_only_message(session)
