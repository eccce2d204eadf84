"""POST /api/chat over HTTP: the SSE protocol, login required, owner-only conversations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from appliance.auth.tables import User
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
    add_user(rt, "bob")
    (tmp_path / "travel.md").write_text(
        "# Travel policy\n\nEmployees book flights through the travel portal.\n"
    )
    submit(rt, tmp_path / "travel.md", grants=("group:staff",))
    inline_worker(rt).run_until_idle()
    rt._generator = FakeGenerator("Employees book flights through the travel portal [1] [5].")
    return create_app(rt.settings, runtime=rt, background=False)


def as_user(app: FastAPI, rt: Runtime, name: str) -> None:
    """Authenticate every request as `name` (the sign-in itself is tested elsewhere)."""
    from appliance.auth import service as users

    with rt.sessions() as s:
        user: User = users.get_user_by_name(s, name)
    app.dependency_overrides[current_user] = lambda: user


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver") as c:
        c.headers["Origin"] = "https://testserver"
        c.get("/healthz")  # receives the pre-session CSRF cookie
        c.headers["X-CSRF-Token"] = c.cookies["__Host-csrf"]
        yield c


def test_chat_requires_a_signed_in_user(client: TestClient) -> None:
    r = client.post("/api/chat", json={"question": "flights?"})
    assert r.status_code == 401
    assert "Sign in" in r.json()["message"]
    assert client.get("/api/conversations").status_code == 401


def test_chat_streams_events_with_cited_sources(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    as_user(app, runtime, "alice")
    r = client.post("/api/chat", json={"question": "How do I book flights?"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    kinds = [k for k, _ in events]
    assert kinds[0] == "conversation"
    assert "token" in kinds
    assert kinds[-2:] == ["sources", "done"]
    text = "".join(str(d["text"]) for k, d in events if k == "token")
    assert "[1]" in text
    assert "[5]" not in text
    sources = events[-2][1]["sources"]
    assert isinstance(sources, list)
    assert sources[0]["filename"] == "travel.md"  # type: ignore[index]
    conv = events[0][1]["id"]
    listed = client.get("/api/conversations").json()
    assert [c["id"] for c in listed] == [conv]
    shown = client.get(f"/api/conversations/{conv}").json()
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"]
    assert client.patch(f"/api/conversations/{conv}", json={"title": "Trips"}).status_code == 204
    assert client.get("/api/conversations").json()[0]["title"] == "Trips"


def test_other_users_conversations_are_not_found(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    as_user(app, runtime, "alice")
    conv = parse_sse(client.post("/api/chat", json={"question": "flights?"}).text)[0][1]["id"]
    as_user(app, runtime, "bob")
    assert client.get(f"/api/conversations/{conv}").status_code == 404
    assert client.delete(f"/api/conversations/{conv}").status_code == 404
    r = client.post("/api/chat", json={"question": "more?", "conversation_id": conv})
    assert r.status_code == 404
    as_user(app, runtime, "alice")
    assert client.delete(f"/api/conversations/{conv}").status_code == 204


def test_bad_requests_get_clear_errors(app: FastAPI, client: TestClient, runtime: Runtime) -> None:
    as_user(app, runtime, "alice")
    assert client.post("/api/chat", json={"question": ""}).status_code == 422
    assert client.post("/api/chat", json={"question": "x" * 5000}).status_code == 422
    assert client.post("/api/chat", json={"q": "x"}).status_code == 422


def test_health_answers_while_the_model_is_busy(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    import threading
    import time

    runtime._generator = FakeGenerator("slow " * 40 + "[1]", delay=0.05)
    as_user(app, runtime, "alice")
    done = threading.Event()

    def ask() -> None:
        client.post("/api/chat", json={"question": "How do I book flights?"})
        done.set()

    t = threading.Thread(target=ask)
    t.start()
    time.sleep(0.3)
    started = time.perf_counter()
    assert client.get("/healthz").status_code == 200
    assert time.perf_counter() - started < 1.0
    assert not done.is_set()  # the answer was still being generated
    t.join(30)


def test_too_many_questions_at_once_is_429(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    from appliance.auth import service as users

    as_user(app, runtime, "alice")
    with runtime.sessions() as s:
        uid = users.get_user_by_name(s, "alice").id
    held = [runtime.scheduler.enter(uid) for _ in range(runtime.settings.chat.max_queued_per_user)]
    r = client.post("/api/chat", json={"question": "flights?"})
    assert r.status_code == 429
    assert "Wait for an answer" in r.json()["message"]
    for t in held:
        runtime.scheduler.leave(t)


def test_chat_with_a_real_signed_in_session_and_csrf(
    app: FastAPI, runtime: Runtime, browser_factory: object
) -> None:
    """The whole chain without overrides: password + TOTP sign-in, session cookie, CSRF."""
    from sqlalchemy import select

    from appliance.auth.tables import Group, GroupMember
    from tests.fixtures.auth import make_user

    with runtime.sessions() as s:
        carol = make_user(s, runtime.crypto, username="carol")
        staff = s.execute(select(Group).where(Group.name == "staff")).scalar_one()
        s.add(GroupMember(group_id=staff.id, user_id=carol.user.id))
        s.commit()
    browser = browser_factory()  # type: ignore[operator]
    browser.sign_in(carol)
    r = browser.post("/api/chat", json={"question": "How do I book flights?"})
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    assert events[-2][1]["sources"][0]["filename"] == "travel.md"  # type: ignore[index]
    forged = browser.client.post(
        "/api/chat",
        json={"question": "How do I book flights?"},
        headers={"Origin": "https://testserver"},  # no X-CSRF-Token
    )
    assert forged.status_code == 403
    foreign = browser.post(
        "/api/chat", json={"question": "flights?"}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403


def test_deleting_a_user_erases_their_conversations_and_shreds_the_key(
    app: FastAPI, client: TestClient, runtime: Runtime, browser_factory: object
) -> None:
    from appliance.auth import service as users
    from appliance.chat.tables import Conversation
    from appliance.core.places import CHAT_KEY
    from tests.fixtures.auth import make_user

    as_user(app, runtime, "bob")
    assert client.post("/api/chat", json={"question": "flights?"}).status_code == 200
    with runtime.sessions() as s:
        bob_id = users.get_user_by_name(s, "bob").id
        root = make_user(s, runtime.crypto, username="root", role="admin")
    assert runtime.crypto.has_data_key(CHAT_KEY, bob_id)
    app.dependency_overrides.clear()
    admin = browser_factory()  # type: ignore[operator]
    admin.sign_in(root)
    assert admin.delete(f"/api/admin/users/{bob_id}").status_code == 204
    assert not runtime.crypto.has_data_key(CHAT_KEY, bob_id)
    with runtime.sessions() as s:
        from sqlalchemy import select

        assert (
            s.execute(select(Conversation).where(Conversation.owner_id == bob_id)).first() is None
        )
