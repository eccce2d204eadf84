"""Face: the operator socket, so `appliance ask` and `search` work while `serve` runs.

The embedded vector index is one process's at a time, so while the service runs the CLI
asks the service instead of opening the data itself. `serve` listens on a Unix socket
(`[server] operator_socket`) in a 0700 directory, the socket itself 0600: only the service
account and root can connect, which is the same credential as reading the data directory
(shell access, DESIGN "The command line"). There is no other authentication on it, and it
answers only search and ask for a named user, with exactly that user's access.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from appliance.chat import operator, pipeline
from appliance.core.errors import LIBRARY_ERRORS, ApplianceError, InvalidInput, translate
from appliance.core.runtime import Runtime

log = logging.getLogger(__name__)
MAX_PATH = 100  # sun_path holds 108 bytes on Linux


class SearchIn(BaseModel):
    """`appliance search` over the socket."""

    as_user: str = Field(min_length=1, max_length=150)
    question: str = Field(min_length=1, max_length=4000)
    k: int = Field(6, ge=1, le=100)
    operator: str = Field(min_length=1, max_length=160)


class AskIn(BaseModel):
    """`appliance ask` over the socket."""

    as_user: str = Field(min_length=1, max_length=150)
    question: str = Field(min_length=1, max_length=4000)
    conversation: str | None = Field(None, max_length=64)


def build_app(rt: Runtime) -> FastAPI:
    """The socket's own small app, bound to the service's runtime (one index, one model)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(ApplianceError)
    async def _error(_request: Request, exc: ApplianceError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": exc.message}, exc.status_code)

    async def _library(_request: Request, exc: Exception) -> JSONResponse:
        err = translate(exc)
        return JSONResponse({"error": err.code, "message": err.message}, err.status_code)

    for root in LIBRARY_ERRORS:
        app.add_exception_handler(root, _library)

    @app.post("/search")
    def search(body: SearchIn) -> list[dict[str, object]]:
        if not body.operator.startswith("operator:"):
            raise InvalidInput("The operator is written operator:<os user>.")
        found = operator.search_as(
            rt=rt, as_user=body.as_user, question=body.question, k=body.k, operator=body.operator
        )
        return [s.public() for s in found]

    @app.post("/ask")
    def ask(body: AskIn) -> StreamingResponse:
        events = operator.ask_as(
            rt=rt, as_user=body.as_user, question=body.question, conversation=body.conversation
        )
        first = next(events)  # errors before the first event are ordinary HTTP errors

        def stream() -> Iterator[str]:
            yield first.sse()
            try:
                for event in events:
                    yield event.sse()
            except Exception as exc:  # the stream has started: report in-band
                err = (
                    translate(exc)
                    if isinstance(exc, (ApplianceError, *LIBRARY_ERRORS))
                    else InvalidInput("The answer failed. Try again in a moment.")
                )
                yield pipeline.Event("error", {"error": err.code, "message": err.message}).sse()

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


class OperatorSocket:
    """The socket server, run in a thread of `serve` beside the web server."""

    def __init__(self, rt: Runtime, path: Path) -> None:
        self.rt = rt
        self.path = path
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Bind (0600 in a 0700 directory) and serve; False when the path cannot be used."""
        if len(os.fsencode(self.path)) > MAX_PATH:
            log.warning(
                "operator socket %s: the path is too long for a Unix socket; set "
                "[server] operator_socket to a shorter one. `appliance ask` and `search` "
                "cannot reach the running service meanwhile.",
                self.path,
            )
            return False
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a service that did not stop cleanly
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        # log_config=None: the main server owns logging; a second Config must not reset it.
        config = uvicorn.Config(build_app(self.rt), log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="operator-socket", daemon=True
        )
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop serving and remove the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# -- the CLI's side ---------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("operator", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


def _error_for(status: int, body: bytes) -> ApplianceError:
    try:
        data = json.loads(body)
        code, message = str(data.get("error", "error")), str(data.get("message", body[:200]))
    except ValueError:
        code, message = "error", f"The service answered {status}."
    kinds = {c.code: c for c in _subclasses(ApplianceError)}
    return kinds.get(code, InvalidInput)(message)


def _subclasses(cls: type[ApplianceError]) -> Iterator[type[ApplianceError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


class OperatorClient:
    """Talks to a running service's operator socket."""

    def __init__(self, path: Path, timeout: float = 600) -> None:
        self.path = path
        self.timeout = timeout

    @contextlib.contextmanager
    def _post(self, url: str, body: dict[str, Any]) -> Iterator[http.client.HTTPResponse]:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request("POST", url, json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise _error_for(response.status, response.read())
            yield response
        finally:
            conn.close()

    def search(self, *, as_user: str, question: str, k: int, operator: str) -> list[Any]:
        """The ranked passages, as `Source.public()` dicts."""
        body = {"as_user": as_user, "question": question, "k": k, "operator": operator}
        with self._post("/search", body) as response:
            return list(json.loads(response.read()))

    def ask(
        self, *, as_user: str, question: str, conversation: str | None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The answer's events, as (kind, data), in order."""
        body = {"as_user": as_user, "question": question, "conversation": conversation}
        with self._post("/ask", body) as response:
            kind, data = "", ""
            for raw in response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and kind:
                    payload = json.loads(data or "{}")
                    if kind == "error":
                        raise _error_for(503, json.dumps(payload).encode())
                    yield kind, payload
                    kind, data = "", ""


def reach(path: Path | None) -> OperatorClient | None:
    """A client for the running service, or None when no service listens there."""
    if path is None or not path.exists():
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
    except OSError:
        return None
    finally:
        probe.close()
    return OperatorClient(path)
