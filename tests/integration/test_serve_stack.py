"""`appliance serve`'s HTTP stack for real (issue 16, holes 12b and 14).

The command's call to `uvicorn.run` is captured instead of run; then the very app and
options it passed serve real HTTP on a loopback port, in a thread, with the logging
configuration uvicorn applies from those options. What reaches the access log and which
client address the app records are then what they would be in production.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from appliance.audit.tables import AuditEvent
from appliance.auth.bootstrap import InitReport
from appliance.core.config import Settings
from tests.fixtures.app import instance_env

_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


@dataclass
class Served:
    """A running `appliance serve`: its URL, its app, and what its access log printed."""

    url: str
    app: Any
    access_log: io.StringIO

    def failures(self) -> list[dict[str, Any]]:
        """The auth.failure audit entries, oldest first (client and details)."""
        with self.app.state.rt.sessions() as s:
            rows = s.execute(
                select(AuditEvent)
                .where(AuditEvent.action == "auth.failure")
                .order_by(AuditEvent.id)
            ).scalars()
            return [{"client": r.client, **json.loads(r.details)} for r in rows]


@pytest.fixture
def serve(
    settings: Settings,
    initialized: InitReport,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Served]]:
    """Run `appliance serve` (with extra APPLIANCE_* variables) on a free loopback port."""
    import uvicorn
    from typer.testing import CliRunner

    from appliance.cli import app as cli

    root = tmp_path / "instance"
    assert Path(instance_env(root)["APPLIANCE_DATA_DIR"]) == settings.data_dir
    saved = {
        name: (lg.handlers[:], lg.level, lg.propagate, lg.filters[:])
        for name in _LOGGERS
        for lg in [logging.getLogger(name)]
    }
    running: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(**env: str) -> Served:
        calls: list[tuple[Any, dict[str, Any]]] = []
        monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
        variables = {
            **instance_env(root),
            "APPLIANCE_SERVER__WORKERS_EMBEDDED": "false",  # no ingestion worker or jobs
            **env,
        }
        result = CliRunner().invoke(cli, ["serve"], env=variables)
        assert result.exit_code == 0, result.output
        ((app, options),) = calls
        config = uvicorn.Config(app, **options)  # configures uvicorn's loggers, as run() does
        (handler,) = logging.getLogger("uvicorn.access").handlers
        assert isinstance(handler, logging.StreamHandler)
        access_log = io.StringIO()
        handler.setStream(access_log)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread, sock))
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "serve stopped while starting"
            assert time.monotonic() < deadline, "serve did not start within a minute"
            time.sleep(0.05)
        host, port = sock.getsockname()[:2]
        return Served(url=f"http://{host}:{port}", app=app, access_log=access_log)

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    for name, (handlers, level, propagate, filters) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
        lg.filters[:] = filters


def _failed_login(served: Served, headers: dict[str, str], origin: str | None = None) -> int:
    """A wrong password from the loopback peer, with the CSRF pair a page would send."""
    response = httpx.post(
        f"{served.url}/api/auth/login",
        json={"username": "nobody", "password": "not the password at all"},
        headers={
            "Origin": origin or served.url,
            "Cookie": "__Host-csrf=planted",
            "X-CSRF-Token": "planted",
            **headers,
        },
    )
    return response.status_code


# -- hole 14: no query string in the access log --------------------------------------------


def test_the_access_log_keeps_paths_but_not_query_strings(serve: Callable[..., Served]) -> None:
    served = serve()
    r = httpx.get(f"{served.url}/api/documents", params={"q": "merger with initech"})
    assert r.status_code == 401
    assert httpx.get(f"{served.url}/healthz?q=layoffs-2026&page=2").status_code == 200
    log = served.access_log.getvalue()
    assert '"GET /api/documents HTTP/1.1" 401' in log, log
    assert '"GET /healthz HTTP/1.1" 200' in log, log
    for secret in ("merger", "initech", "layoffs", "page=", "?"):
        assert secret not in log, log


# -- hole 12b: forwarded addresses only from configured proxies ----------------------------


def test_serve_ignores_forwarded_for_from_a_loopback_peer_by_default(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    assert _failed_login(served, {"X-Forwarded-For": "203.0.113.7"}) == 401
    assert [f["client"] for f in served.failures()] == ["127.0.0.1"]


def test_serve_behind_the_ansible_proxy_records_the_forwarded_client(
    serve: Callable[..., Served],
) -> None:
    # As the Ansible deployment renders it, and as its nginx sends: TLS ends at nginx,
    # which passes Host, the scheme and the address it saw (appended to the client's).
    served = serve(APPLIANCE_SERVER__TRUSTED_PROXIES='["127.0.0.1"]')
    nginx = {
        "Host": "appliance.corp.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "198.51.100.1, 192.0.2.44",
    }
    # The CSRF Origin check passes (https, as the browser saw it); the password is wrong.
    assert _failed_login(served, nginx, origin="https://appliance.corp.example") == 401
    assert [f["client"] for f in served.failures()] == ["192.0.2.44"]
