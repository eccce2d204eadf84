"""The web service: health, security headers, OpenAPI; and a real `appliance serve` process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from appliance.core.config import Settings
from appliance.core.runtime import Runtime
from appliance.main import create_app
from tests.fixtures.app import instance_env


def test_health_headers_and_no_external_assets(settings: Settings, runtime: Runtime) -> None:
    app = create_app(settings, runtime=runtime, background=False)
    with TestClient(app) as client:
        r = client.get("/healthz")
        assert r.status_code == 200
        assert r.json()["status"] == "ok"
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        page = client.get("/")
        assert page.status_code == 200
        assert "http://" not in page.text
        assert "https://" not in page.text
        assert client.get("/static/app.css").status_code == 200
        schema = client.get("/openapi.json").json()
        assert "/healthz" in schema["paths"]
        assert client.get("/docs").status_code == 404  # Swagger UI would pull a CDN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_process_answers_and_runs_the_worker(tmp_path: Path) -> None:
    root = tmp_path / "instance"
    cfg = tmp_path / "appliance.toml"
    port = _free_port()
    short = Path(tempfile.mkdtemp(prefix="op-", dir="/tmp"))  # sun_path is 108 bytes
    cfg.write_text(f'[server]\nport = {port}\noperator_socket = "{short}/run/op.sock"\n')
    env = {**os.environ, **instance_env(root), "APPLIANCE_CONFIG": str(cfg)}
    init = subprocess.run(
        [sys.executable, "-m", "appliance", "init"], env=env, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    assert "One-time password" in init.stdout
    assert "small model for trying the appliance" in init.stdout
    doc = tmp_path / "parking.md"
    doc.write_text("# Parking\n\nVisitors park on level minus two, in spaces 40 to 60.\n")
    ingested = _cli(env, "ingest", str(doc), "--grant", "everyone")
    assert ingested.returncode == 0, ingested.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                if body["worker"] == "running":
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert body is not None, "serve never answered"
        assert body["worker"] == "running"
        _ask_while_serving(env)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after a graceful shutdown.
    assert proc.returncode in (0, -15), out
    assert "Application shutdown complete" in out
    assert "Traceback" not in out


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _ask_while_serving(env: dict[str, str]) -> None:
    """`appliance search` and `ask` work while serve holds the index (the operator socket)."""
    searched = _cli(env, "search", "Where do visitors park?", "--as", "admin", "--json")
    assert searched.returncode == 0, searched.stderr
    assert '"parking.md"' in searched.stdout
    asked = _cli(env, "ask", "Where do visitors park?", "--as", "admin", "--json")
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert set(answer) >= {"answer", "evidence", "claims", "abstained", "timings"}
    assert answer["evidence"][0]["filename"] == "parking.md"
    assert answer["timings"]["evidence_ms"] is not None
