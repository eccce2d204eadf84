"""CSRF protection: an Origin check and a double-submit token on every state-changing request.

A request that changes something (POST, PUT, PATCH, DELETE) and is not authenticated by an
API token must come from the appliance's own origin (``Origin``, else ``Referer``) and carry
the ``X-CSRF-Token`` header equal to the CSRF cookie. That includes the sign-in request
itself (login CSRF). Requests with ``Authorization: Bearer`` are exempt: a browser never
adds that header by itself, so there is no ambient credential to abuse. For session
requests the token must also be the one issued with that session (checked in deps.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from appliance.core.config import Settings
from appliance.core.db import utcnow
from appliance.deps import CSRF_HEADER, UNSAFE_METHODS, cookie_names


def expected_origin(request: Request, settings: Settings) -> str:
    """The origin browsers use for this appliance."""
    if settings.auth.public_origin:
        return settings.auth.public_origin.rstrip("/").lower()
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}".lower()


def _origin_of(request: Request) -> str | None:
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.rstrip("/").lower()
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}".lower()
    return None


def csrf_problem(request: Request, settings: Settings) -> str | None:
    """Why a state-changing request fails the CSRF checks, or None if it passes."""
    if request.method not in UNSAFE_METHODS:
        return None
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return None
    origin = _origin_of(request)
    if origin is None:
        return "The request names no Origin. Send it from the appliance's web page."
    if origin != expected_origin(request, settings):
        return "The request comes from another site (Origin mismatch) and was refused."
    cookie = request.cookies.get(cookie_names(settings.auth).csrf)
    header = request.headers.get(CSRF_HEADER)
    if not cookie or not header or not secrets.compare_digest(cookie, header):
        return (
            "The CSRF token is missing or does not match its cookie. Reload the page and try again."
        )
    return None


def set_csrf_cookie(response: Response, token: str, settings: Settings) -> None:
    """Set the CSRF cookie (readable by the page's script, so not HttpOnly)."""
    response.set_cookie(
        cookie_names(settings.auth).csrf,
        token,
        path="/",
        secure=settings.auth.cookie_secure,
        httponly=False,
        samesite="strict",
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Add the CSRF middleware and the injectable clock to an app."""
    app.state.clock = utcnow

    @app.middleware("http")
    async def csrf(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        problem = csrf_problem(request, settings)
        if problem is not None:
            return JSONResponse({"error": "csrf_failed", "message": problem}, status_code=403)
        response = await call_next(request)
        name = cookie_names(settings.auth).csrf
        sets_cookie = any(
            value.startswith(f"{name}=") for value in response.headers.getlist("set-cookie")
        )
        if name not in request.cookies and not sets_cookie:
            # A token before sign-in, so the sign-in request itself can be protected.
            set_csrf_cookie(response, secrets.token_urlsafe(32), settings)
        return response
