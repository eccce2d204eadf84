"""Feedback on answers over HTTP, and the answer's id and rendered HTML in the stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from appliance.auth import service as users
from appliance.chat.tables import Feedback
from appliance.core.runtime import Runtime
from appliance.deps import current_user
from appliance.main import create_app
from models.fakes import FakeGenerator
from tests.fixtures.app import add_user, inline_worker, submit


def parse_sse(body: str) -> list[tuple[str, dict[str, object]]]:
    """Split an SSE body into (event, data) pairs."""
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


@pytest.fixture
def app(runtime: Runtime, tmp_path: Path) -> FastAPI:
    rt = runtime
    rt.settings.chat.min_score = 0.05
    add_user(rt, "alice", group="staff")
    add_user(rt, "bob", group="staff")
    (tmp_path / "travel.md").write_text(
        "# Travel policy\n\nEmployees book flights through the travel portal.\n"
    )
    submit(rt, tmp_path / "travel.md", grants=("group:staff",))
    inline_worker(rt).run_until_idle()
    rt._generator = FakeGenerator(
        "Employees book flights through the **travel portal** [1]. <img src=x onerror=alert(1)>"
    )
    return create_app(rt.settings, runtime=rt, background=False)


def as_user(app: FastAPI, rt: Runtime, name: str) -> None:
    with rt.sessions() as s:
        user = users.get_user_by_name(s, name)
    app.dependency_overrides[current_user] = lambda: user


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver") as c:
        c.headers["Origin"] = "https://testserver"
        c.get("/healthz")
        c.headers["X-CSRF-Token"] = c.cookies["__Host-csrf"]
        yield c


def ask(client: TestClient) -> tuple[str, dict[str, object]]:
    events = parse_sse(client.post("/api/chat", json={"question": "How do I book flights?"}).text)
    done = events[-1]
    assert done[0] == "done"
    return str(events[0][1]["id"]), done[1]


def test_done_event_carries_the_answer_id_and_sanitised_html(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    as_user(app, runtime, "alice")
    conv, done = ask(client)
    assert isinstance(done["message_id"], int)
    html = str(done["html"])
    assert "<strong>travel portal</strong>" in html
    assert 'class="cite" data-marker="1"' in html
    assert "<img" not in html
    assert "<a " not in html
    shown = client.get(f"/api/conversations/{conv}").json()
    answer = shown["messages"][-1]
    assert answer["id"] == done["message_id"]
    assert answer["html"] == html
    assert answer["feedback"] is None


def test_owner_rates_an_answer_and_can_change_it(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    as_user(app, runtime, "alice")
    conv, done = ask(client)
    url = f"/api/chat/messages/{done['message_id']}/feedback"
    assert client.put(url, json={"rating": "helpful"}).status_code == 204
    assert client.put(url, json={"rating": "not_helpful"}).status_code == 204
    with runtime.sessions() as s:
        rows = s.execute(select(Feedback)).scalars().all()
        assert [(r.message_id, r.rating) for r in rows] == [(done["message_id"], "not_helpful")]
    assert client.get(f"/api/conversations/{conv}").json()["messages"][-1]["feedback"] == (
        "not_helpful"
    )
    assert client.put(url, json={"rating": None}).status_code == 204
    assert client.get(f"/api/conversations/{conv}").json()["messages"][-1]["feedback"] is None


def test_others_answers_and_questions_cannot_be_rated(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    as_user(app, runtime, "alice")
    conv, done = ask(client)
    question_id = client.get(f"/api/conversations/{conv}").json()["messages"][0]["id"]
    as_user(app, runtime, "bob")
    url = f"/api/chat/messages/{done['message_id']}/feedback"
    r = client.put(url, json={"rating": "helpful"})
    assert r.status_code == 404
    assert (
        client.put("/api/chat/messages/999999/feedback", json={"rating": "helpful"}).status_code
        == 404
    )
    as_user(app, runtime, "alice")
    r = client.put(f"/api/chat/messages/{question_id}/feedback", json={"rating": "helpful"})
    assert r.status_code == 404
    assert client.put(url, json={"rating": "great"}).status_code == 422
    with runtime.sessions() as s:
        assert s.execute(select(Feedback)).first() is None


def test_feedback_needs_a_signed_in_user(client: TestClient) -> None:
    r = client.put("/api/chat/messages/1/feedback", json={"rating": "helpful"})
    assert r.status_code == 401
