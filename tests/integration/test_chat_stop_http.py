"""Stopping an answer (the browser closes the stream): the partial answer is still stored
and audited, and the asker's queue slot is free at once. Served by a real uvicorn, so the
disconnect is a real one."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from appliance.audit.tables import AuditEvent
from appliance.auth import service as users
from appliance.chat.tables import Message
from appliance.core.runtime import Runtime
from appliance.deps import current_user
from appliance.main import create_app
from models.fakes import FakeGenerator
from tests.fixtures.app import add_user, inline_worker, submit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    rt = runtime
    rt.settings.chat.min_score = 0.05
    add_user(rt, "alice", group="staff")
    (tmp_path / "travel.md").write_text("# Travel\n\nEmployees book flights on the portal.\n")
    submit(rt, tmp_path / "travel.md", grants=("group:staff",))
    inline_worker(rt).run_until_idle()
    rt._generator = FakeGenerator("word " * 200, delay=0.02)
    app: FastAPI = create_app(rt.settings, runtime=rt, background=False)
    with rt.sessions() as s:
        alice = users.get_user_by_name(s, "alice")
    app.dependency_overrides[current_user] = lambda: alice
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_a_stopped_answer_is_stored_and_audited(served: str, runtime: Runtime) -> None:
    headers = {"Origin": served, "Cookie": "__Host-csrf=t", "X-CSRF-Token": "t"}
    with (
        httpx.Client(base_url=served, headers=headers, timeout=10) as client,
        client.stream("POST", "/api/chat", json={"question": "How do I book flights?"}) as r,
    ):
        assert r.status_code == 200
        tokens = 0
        for line in r.iter_lines():
            if line == "event: token":
                tokens += 1
            if tokens >= 3:
                break  # the browser's Stop: the connection closes mid-answer
    deadline = time.monotonic() + 10
    stored: list[Message] = []
    while time.monotonic() < deadline and not stored:
        with runtime.sessions() as s:
            stored = list(s.execute(select(Message).where(Message.role == "assistant")).scalars())
        time.sleep(0.1)
    assert len(stored) == 1, "the stopped answer was not stored"
    with runtime.sessions() as s:
        entry = s.execute(select(AuditEvent).where(AuditEvent.action == "chat.answer")).scalar_one()
        assert entry.outcome == "stopped"
    assert runtime.scheduler.snapshot() == {"running": 0, "waiting": 0}
    with httpx.Client(base_url=served, headers=headers, timeout=30) as client:
        r = client.post("/api/chat", json={"question": "Flights?"})
        assert r.status_code == 200
        assert "event: done" in r.text
    assert json.loads(r.text.strip().split("\n")[-1].removeprefix("data: "))["stopped"] is False
