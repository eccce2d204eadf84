"""create_app(settings): the web service, with the ingestion worker and jobs in its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from appliance import __version__, wiring
from appliance.admin.routes import router as admin_system_router
from appliance.approvals.routes import router as approvals_router
from appliance.audit.routes import router as audit_router
from appliance.auth.admin_routes import admin_router as auth_admin_router
from appliance.auth.routes import router as auth_router
from appliance.chat.routes import router as chat_router
from appliance.core.config import Settings
from appliance.core.errors import LIBRARY_ERRORS, ApplianceError, translate
from appliance.core.runtime import Runtime, open_runtime
from appliance.deps import quiet_validation_body
from appliance.documents.routes import router as documents_router
from appliance.jobs.runner import JobRunner
from appliance.middleware import access_log, proxy
from appliance.middleware.csrf import install as install_csrf
from appliance.middleware.read_only import ReadOnlyGuard
from appliance.operator_socket import OperatorSocket
from appliance.pages.routes import error_page
from appliance.pages.routes import router as pages_router
from appliance.privacy.routes import admin_router as privacy_admin_router
from appliance.privacy.routes import router as privacy_router
from appliance.retention.routes import admin_router as retention_admin_router
from appliance.retention.routes import router as retention_router

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

HTTP_MESSAGES = {
    404: "There is no page at this address. It may have moved, or the address has a typo.",
    405: "There is no page at this address.",
}
SERVER_ERROR = (
    "The appliance failed on this request; the error is logged on the server. Try again; "
    "if it keeps failing, tell an administrator."
)


def wants_page(request: Request) -> bool:
    """Whether to answer an error as a page: a browser asking for HTML, not /api or /static.

    API clients keep JSON whatever they accept."""
    path = request.url.path
    if path.startswith(("/api/", "/static/")) or path in ("/api", "/healthz", "/openapi.json"):
        return False
    return "text/html" in request.headers.get("accept", "")


SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, background: bool | None = None
) -> FastAPI:
    """Build the app; heavy objects are created once in the lifespan and kept on app.state."""
    wiring.install()
    access_log.install()  # before uvicorn configures its loggers: no query string is logged
    run_background = settings.server.workers_embedded if background is None else background

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or open_runtime(settings)
        app.state.rt = rt
        app.state.jobs = None
        if run_background:
            app.state.jobs = JobRunner(rt)
            app.state.jobs.start()
        operator = None
        path = settings.operator_socket_path
        if run_background and path is not None:  # the process that holds the index
            operator = OperatorSocket(rt, path)
            if not operator.start():
                operator = None
        try:
            yield
        finally:
            if operator is not None:
                operator.stop()
            if app.state.jobs is not None:
                app.state.jobs.stop()
            if runtime is None:
                rt.close()

    app = FastAPI(
        title="Appliance",
        version=__version__,
        description="On-premises RAG assistant: local models, local index, per-document ACLs.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI would load scripts from a CDN; /openapi.json is served
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=str(WEB_DIR / "static")), name="static")
    # Installed before the header middleware so that its refusals get the headers too.
    install_csrf(app, settings)
    app.add_middleware(ReadOnlyGuard)  # the kill switch's read-only mode

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.scheme == "https":
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=63072000; includeSubDomains"
            )
        return response

    # Outermost, so that every layer (CSRF's origin, HSTS, the routes) sees the client and
    # scheme as forwarded by a trusted proxy, and only by one.
    proxy.install(app, settings)

    @app.exception_handler(ApplianceError)
    async def appliance_error(request: Request, exc: ApplianceError) -> Response:
        if wants_page(request):
            return await run_in_threadpool(error_page, request, exc.status_code, exc.message)
        return JSONResponse(
            {"error": exc.code, "message": exc.message}, status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        """A 422 that names the field and the reason but never echoes what was sent."""
        return JSONResponse(quiet_validation_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown addresses (and other HTTP errors) as a page for browsers, JSON for APIs."""
        if wants_page(request):
            message = HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
            return await run_in_threadpool(error_page, request, exc.status_code, message)
        return await http_exception_handler(request, exc)

    @app.exception_handler(500)
    async def server_error(request: Request, exc: Exception) -> Response:
        """A bug: the server logs it (the exception goes on up); the person sees what to do."""
        if wants_page(request):
            return await run_in_threadpool(error_page, request, 500, SERVER_ERROR)
        return JSONResponse({"error": "internal_error", "message": SERVER_ERROR}, status_code=500)

    async def library_error(_request: Request, exc: Exception) -> JSONResponse:
        """A model, index or parser error that escaped its adapter: translated, never a 500."""
        err = translate(exc)
        return JSONResponse(
            {"error": err.code, "message": err.message}, status_code=err.status_code
        )

    for root in LIBRARY_ERRORS:  # one handler per library root (core.errors's table)
        app.add_exception_handler(root, library_error)

    @app.get("/healthz", tags=["health"])
    def healthz(request: Request) -> dict[str, object]:
        """Liveness and readiness: answers while models are busy; reveals no content."""
        jobs: JobRunner | None = request.app.state.jobs
        return {
            "status": "ok",
            "version": __version__,
            "worker": "running" if jobs is not None and jobs.alive() else "off",
        }

    app.include_router(auth_router)
    app.include_router(auth_admin_router)
    app.include_router(chat_router)
    app.include_router(documents_router)
    app.include_router(audit_router)
    app.include_router(approvals_router)
    app.include_router(admin_system_router)
    app.include_router(retention_router)
    app.include_router(retention_admin_router)
    app.include_router(privacy_router)
    app.include_router(privacy_admin_router)

    app.include_router(pages_router)  # the browser pages, "/" (chat) included

    return app
