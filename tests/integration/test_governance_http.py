"""Governance over HTTP: the kill switch, approvals of consequential actions, audit search/export.

Real app, real SQLite and Qdrant Edge shard, the injectable clock for expiry; the fake
generator where a question must be answered.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from appliance.admin import service as switches
from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.auth.tables import User
from appliance.core.config import Settings
from appliance.core.runtime import Runtime, open_runtime
from appliance.documents.tables import QUEUED, Document
from appliance.main import create_app
from models.fakes import FakeGenerator
from tests.fixtures.app import inline_worker, submit
from tests.fixtures.auth import ORIGIN, Account, Browser, Clock, make_user

SWITCHES = "/api/admin/system/switches"


@pytest.fixture
def second_admin(runtime: Runtime) -> Account:
    """Another enrolled admin (the four-eyes partner of root)."""
    with runtime.sessions() as session:
        return make_user(session, runtime.crypto, username="second", role="admin")


@pytest.fixture
def second_browser(browser_factory: Any, second_admin: Account) -> Browser:
    """A browser signed in as the second admin."""
    b: Browser = browser_factory()
    b.sign_in(second_admin)
    return b


def _put(browser: Browser, **body: object) -> Any:
    return browser.request("PUT", SWITCHES, json=body)


def _actions(runtime: Runtime) -> list[str]:
    with runtime.sessions() as s:
        return list(s.execute(select(AuditEvent.action).order_by(AuditEvent.id)).scalars())


# -- kill switch -----------------------------------------------------------------------


def test_paused_answering_gets_a_maintenance_message(
    runtime: Runtime, admin_browser: Browser, user_browser: Browser
) -> None:
    runtime._generator = FakeGenerator("An answer.")
    assert user_browser.get(SWITCHES).status_code == 403  # admins only
    r = _put(admin_browser, answering_paused=True, reason="model upgrade")
    assert r.status_code == 200, r.text
    assert r.json()["answering_paused"]["on"] is True
    assert r.json()["answering_paused"]["changed_by"] == "root"
    assert r.json()["answering_paused"]["reason"] == "model upgrade"

    refused = user_browser.post("/api/chat", json={"question": "Anything?"})
    assert refused.status_code == 503
    assert refused.json()["error"] == "maintenance"
    assert "admin paused answering" in refused.json()["message"]
    assert "try again later" in refused.json()["message"]
    assert user_browser.get("/api/conversations").json() == []  # nothing stored

    _put(admin_browser, answering_paused=False)
    ok = user_browser.post("/api/chat", json={"question": "Anything?"})
    assert ok.status_code == 200
    with runtime.sessions() as s:
        flips = s.execute(select(AuditEvent).where(AuditEvent.action == "system.switch")).scalars()
        details = [json.loads(e.details) for e in flips]
    assert [(d["before"], d["after"]) for d in details] == [(False, True), (True, False)]


def test_paused_ingestion_queues_uploads_but_starts_none(
    runtime: Runtime, admin_browser: Browser, user_browser: Browser
) -> None:
    _put(admin_browser, ingestion_paused=True, reason="disk swap")
    r = user_browser.post(
        "/api/documents", files={"file": ("n.md", b"# N\n\nHello there.\n", "text/markdown")}
    )
    assert r.status_code == 202  # uploads still queue
    worker = inline_worker(runtime)
    try:
        assert worker.run_until_idle() == 0
        with runtime.sessions() as s:
            assert s.get_one(Document, r.json()["id"]).state == QUEUED
        _put(admin_browser, ingestion_paused=False)
        assert worker.run_until_idle() == 1
    finally:
        worker.close()
    with runtime.sessions() as s:
        assert s.get_one(Document, r.json()["id"]).state == "indexed"


def test_read_only_refuses_changes_but_not_sign_in_or_the_switch(
    runtime: Runtime,
    admin_browser: Browser,
    user_browser: Browser,
    browser_factory: Any,
    alice: Account,
) -> None:
    runtime._generator = FakeGenerator("An answer.")
    assert _put(admin_browser, read_only=True, reason="restore test").status_code == 200
    upload = user_browser.post(
        "/api/documents", files={"file": ("n.md", b"# N\n\nHello.\n", "text/markdown")}
    )
    assert upload.status_code == 503
    assert upload.json()["error"] == "read_only"
    assert "read-only" in upload.json()["message"]
    question = user_browser.post("/api/chat", json={"question": "Anything?"})
    assert (question.status_code, question.json()["error"]) == (503, "read_only")
    made = admin_browser.post("/api/admin/users", json={"username": "zed"})
    assert made.status_code == 503
    # Reading works; signing in works; the admin can switch it back.
    assert user_browser.get("/api/documents").status_code == 200
    fresh = browser_factory()
    fresh.sign_in(alice)
    assert fresh.post("/api/auth/logout").status_code == 204
    assert _put(admin_browser, read_only=False).status_code == 200
    assert admin_browser.post("/api/admin/users", json={"username": "zed"}).status_code == 201


def test_switches_survive_a_restart_and_reach_another_instance(
    settings: Settings, runtime: Runtime, admin_browser: Browser, root: Account, clock: Clock
) -> None:
    _put(admin_browser, answering_paused=True, reason="upgrade")
    # A second app on the same data dir (another process after a restart, or a replica).
    other_rt = open_runtime(settings)
    try:
        other = create_app(settings, runtime=other_rt, background=False)
        with TestClient(other, base_url=ORIGIN) as client:
            other.state.clock = clock
            b = Browser(client, clock)
            b.sign_in(root)
            state = b.get(SWITCHES).json()
            assert state["answering_paused"]["on"] is True
            assert state["answering_paused"]["reason"] == "upgrade"
            # ...and a flip there applies here at the next request (no cache).
            b.request(
                "PUT",
                SWITCHES,
                json={"answering_paused": False, "read_only": True, "reason": "restore"},
            )
        refused = admin_browser.post("/api/admin/users", json={"username": "zed"})
        assert refused.status_code == 503
    finally:
        other_rt.close()
    with runtime.sessions() as s:
        assert switches.is_on(s, "read_only")
        assert not switches.is_on(s, "answering_paused")


# -- approvals -------------------------------------------------------------------------


def test_making_an_admin_waits_for_a_second_admin(
    runtime: Runtime,
    admin_browser: Browser,
    second_browser: Browser,
    user_browser: Browser,
    alice: Account,
) -> None:
    held = admin_browser.patch(f"/api/admin/users/{alice.user.id}", json={"role": "admin"})
    assert held.status_code == 202, held.text
    req = held.json()
    assert (req["kind"], req["target"], req["status"]) == (
        "make_admin",
        f"user:{alice.user.id}",
        "pending",
    )
    assert req["params"] == {"user_id": alice.user.id}
    assert user_browser.get("/api/admin/users").status_code == 403  # not yet

    listed = second_browser.get("/api/admin/approvals", params={"status": "pending"}).json()
    assert [r["id"] for r in listed] == [req["id"]]
    assert listed[0]["requester"] == "root"
    own = admin_browser.post(f"/api/admin/approvals/{req['id']}/approve")
    assert own.status_code == 403
    assert "another admin" in own.json()["message"]

    ok = second_browser.post(f"/api/admin/approvals/{req['id']}/approve")
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "approved"
    assert ok.json()["decided_by"] == "second"
    assert user_browser.get("/api/admin/users").status_code == 200  # at once
    again = second_browser.post(f"/api/admin/approvals/{req['id']}/approve")
    assert again.status_code == 422  # runs once
    assert second_browser.get(f"/api/admin/approvals/{req['id']}").json()["status"] == "approved"
    actions = _actions(runtime)
    assert actions.count("user.role") == 1
    assert {"approval.request", "approval.approve"} <= set(actions)


def test_creating_an_admin_creates_a_user_and_a_request(
    admin_browser: Browser, second_browser: Browser
) -> None:
    r = admin_browser.post("/api/admin/users", json={"username": "ivy", "role": "admin"})
    assert r.status_code == 201
    assert r.json()["user"]["role"] == "user"
    approval_id = r.json()["approval_id"]
    assert second_browser.post(f"/api/admin/approvals/{approval_id}/approve").is_success
    assert admin_browser.get(f"/api/admin/users/{r.json()['user']['id']}").json()["role"] == (
        "admin"
    )


def test_approvals_expire_and_can_be_rejected(
    admin_browser: Browser,
    second_browser: Browser,
    alice: Account,
    root: Account,
    second_admin: Account,
    clock: Clock,
) -> None:
    held = admin_browser.patch(f"/api/admin/users/{alice.user.id}", json={"role": "admin"})
    clock.advance(hours=72, seconds=1)  # acl.approval_expiry_hours
    admin_browser.sign_in(root)  # the sessions timed out meanwhile
    second_browser.sign_in(second_admin)
    late = second_browser.post(f"/api/admin/approvals/{held.json()['id']}/approve")
    assert late.status_code == 422
    assert "expired" in late.json()["message"]
    again = admin_browser.patch(f"/api/admin/users/{alice.user.id}", json={"role": "admin"})
    assert again.json()["id"] != held.json()["id"]
    rejected = second_browser.post(f"/api/admin/approvals/{again.json()['id']}/reject")
    assert rejected.json()["status"] == "rejected"
    assert second_browser.post(f"/api/admin/approvals/{again.json()['id']}/approve").status_code
    assert admin_browser.get(f"/api/admin/users/{alice.user.id}").json()["role"] == "user"
    assert admin_browser.get("/api/admin/approvals/nope").status_code == 404


def test_make_admin_without_approval_when_configured(
    settings: Settings, admin_browser: Browser, alice: Account
) -> None:
    settings.approvals.required = ["audit_export"]
    r = admin_browser.patch(f"/api/admin/users/{alice.user.id}", json={"role": "admin"})
    assert r.status_code == 200
    assert r.json()["role"] == "admin"


# -- audit search and export -----------------------------------------------------------


def test_search_filters_and_pages(runtime: Runtime, admin_browser: Browser, alice: Account) -> None:
    with runtime.sessions() as s:
        for i in range(5):
            audit.record(s, actor=alice.user.principal, action="thing.do", target=f"t:{i}")
        audit.record(s, actor="operator:ops", action="thing.other", outcome="denied")
        s.commit()
    page = admin_browser.get("/api/admin/audit", params={"action": "thing.do", "limit": 2})
    body = page.json()
    assert [e["target"] for e in body["entries"]] == ["t:4", "t:3"]
    assert body["entries"][0]["actor_name"] == "alice"
    rest = admin_browser.get(
        "/api/admin/audit",
        params={"action": "thing.do", "limit": 10, "cursor": body["next_cursor"]},
    ).json()
    assert [e["target"] for e in rest["entries"]] == ["t:2", "t:1", "t:0"]
    assert rest["next_cursor"] is None
    by_name = admin_browser.get("/api/admin/audit", params={"actor": "alice"}).json()["entries"]
    assert {e["action"] for e in by_name} >= {"thing.do"}
    assert all(e["actor"] == alice.user.principal for e in by_name)
    prefix = admin_browser.get("/api/admin/audit", params={"action": "thing"}).json()["entries"]
    assert len(prefix) == 6
    denied = admin_browser.get("/api/admin/audit", params={"outcome": "denied"}).json()
    assert [e["action"] for e in denied["entries"]] == ["thing.other"]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    assert admin_browser.get("/api/admin/audit", params={"from": future}).json()["entries"] == []


def _jsonl(text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in text.splitlines()]
    return lines[0]["checkpoint"], lines[1:]


def test_export_needs_an_approval_and_is_used_once(
    runtime: Runtime, admin_browser: Browser, second_browser: Browser, tmp_path: Path
) -> None:
    refused = admin_browser.get("/api/admin/audit/export", params={"format": "jsonl"})
    assert refused.status_code == 403
    assert "export-requests" in refused.json()["message"]
    asked = admin_browser.post(
        "/api/admin/audit/export-requests", json={"format": "jsonl", "action": "auth"}
    )
    assert asked.status_code == 202
    approval_id = asked.json()["id"]
    # Not before approval, not by someone else, and the requester cannot approve it.
    early = admin_browser.get("/api/admin/audit/export", params={"approval": approval_id})
    assert early.status_code == 403
    assert admin_browser.post(f"/api/admin/approvals/{approval_id}/approve").status_code == 403
    assert second_browser.post(f"/api/admin/approvals/{approval_id}/approve").is_success
    stolen = second_browser.get("/api/admin/audit/export", params={"approval": approval_id})
    assert stolen.status_code == 403

    r = admin_browser.get("/api/admin/audit/export", params={"approval": approval_id})
    assert r.status_code == 200, r.text
    cp, entries = _jsonl(r.text)
    assert entries
    assert {e["action"].split(".")[0] for e in entries} == {"auth"}  # the stored filter
    assert json.loads(r.headers["x-audit-checkpoint"]) == cp
    checkpoint = audit.Checkpoint.from_json(json.dumps(cp))
    audit.check_checkpoint(checkpoint, crypto=runtime.crypto)
    with runtime.sessions() as s:
        assert audit.verify(s, checkpoint=checkpoint).ok
    assert (
        admin_browser.get("/api/admin/audit/export", params={"approval": approval_id}).status_code
        == 403
    )
    actions = _actions(runtime)
    assert actions.count("audit.export") == 1
    assert "approval.redeem" in actions


def test_csv_export_is_formula_safe(
    settings: Settings, runtime: Runtime, admin_browser: Browser
) -> None:
    settings.approvals.required = []
    with runtime.sessions() as s:
        audit.record(s, actor="operator:x", action="thing.do", target='=HYPERLINK("http://x")')
        audit.record(s, actor="operator:x", action="thing.do", target="+1", client="@home")
        s.commit()
    r = admin_browser.get("/api/admin/audit/export", params={"format": "csv", "action": "thing"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["target"] for row in rows] == ['\'=HYPERLINK("http://x")', "'+1"]
    assert rows[1]["client"] == "'@home"
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())


def test_erased_user_is_a_pseudonym_in_search_and_export(
    settings: Settings, runtime: Runtime, admin_browser: Browser
) -> None:
    settings.approvals.required = []
    with runtime.sessions() as s:
        dora = make_user(s, runtime.crypto, username="dora-the-explorer").user
        audit.record(s, actor=dora.principal, action="thing.do", target=dora.principal)
        s.commit()
        shown = admin_browser.get("/api/admin/audit", params={"action": "thing"}).json()
        assert shown["entries"][0]["actor_name"] == "dora-the-explorer"
        s.delete(s.get_one(User, dora.id))  # what erasure does to the users row
        s.commit()
    searched = admin_browser.get("/api/admin/audit").text
    exported = admin_browser.get("/api/admin/audit/export", params={"format": "jsonl"}).text
    exported_csv = admin_browser.get("/api/admin/audit/export", params={"format": "csv"}).text
    for text in (searched, exported, exported_csv):
        assert "dora" not in text
    entry = admin_browser.get("/api/admin/audit", params={"action": "thing"}).json()["entries"][0]
    assert entry["actor_name"].startswith("erased-user-")
    assert entry["target_name"] == entry["actor_name"]


def test_self_grants_on_confidential_documents_follow_the_setting(
    settings: Settings, runtime: Runtime, admin_browser: Browser, alice: Account, tmp_path: Path
) -> None:
    path = tmp_path / "board.md"
    path.write_text("# Board\n\nThe acquisition closes in May.\n")
    doc_id = submit(runtime, path, owner="alice")
    worker = inline_worker(runtime)
    try:
        worker.run_until_idle()
    finally:
        worker.close()
    with runtime.sessions() as s:
        s.get_one(Document, doc_id).classification = "confidential"
        s.commit()
    held = admin_browser.post(f"/api/documents/{doc_id}/grants", json={"principal": "user:root"})
    assert held.status_code == 202
    assert held.json()["approval"]["kind"] == "grant"
    assert admin_browser.get(f"/api/documents/{doc_id}").status_code == 404
    # An appliance configured without self_grant_confidential lets the admin do it alone,
    # still audited as a self-grant.
    settings.approvals.required = ["make_admin", "audit_export"]
    done = admin_browser.post(f"/api/documents/{doc_id}/grants", json={"principal": "user:root"})
    assert done.status_code == 200, done.text
    assert admin_browser.get(f"/api/documents/{doc_id}").status_code == 200
    with runtime.sessions() as s:
        (grant,) = s.execute(select(AuditEvent).where(AuditEvent.action == "acl.grant")).scalars()
        assert json.loads(grant.details)["self_grant"] is True


def test_checkpoint_and_verify_over_the_api(
    runtime: Runtime, admin_browser: Browser, user_browser: Browser
) -> None:
    assert user_browser.get("/api/admin/audit/checkpoint").status_code == 403
    cp = admin_browser.get("/api/admin/audit/checkpoint").json()
    assert set(cp) == {"entries", "head_id", "head_hash", "time", "mac"}
    ok = admin_browser.post("/api/admin/audit/verify", json={"checkpoint": cp}).json()
    assert ok["ok"] is True
    assert admin_browser.post("/api/admin/audit/verify", json={}).json()["ok"] is True
    forged = {**cp, "entries": cp["entries"] - 1}
    refused = admin_browser.post("/api/admin/audit/verify", json={"checkpoint": forged})
    assert refused.status_code == 422
    assert "signature" in refused.json()["message"]
    with runtime.sessions() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.id >= cp["head_id"]))
        s.commit()
    cut = admin_browser.post("/api/admin/audit/verify", json={"checkpoint": cp}).json()
    assert cut["ok"] is False
    assert "truncated" in cut["problem"]


def test_search_is_audited_and_reading_far_back_follows_the_export_rule(
    runtime: Runtime, admin_browser: Browser
) -> None:
    """Hole 8: GET /api/admin/audit paged through every entry with no approval or trace."""
    from appliance.audit.routes import RECENT_WITHOUT_APPROVAL

    with runtime.sessions() as s:
        audit.record(s, actor="operator:test", action="old.secretive", target="doc:x")
        for i in range(RECENT_WITHOUT_APPROVAL + 20):
            audit.record(s, actor="operator:test", action="thing.filler", details={"i": i})
        s.commit()
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor is not None:
            params["cursor"] = cursor
        page = admin_browser.get("/api/admin/audit", params=params).json()
        seen.extend(page["entries"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) <= RECENT_WITHOUT_APPROVAL
    assert all(e["action"] != "old.secretive" for e in seen)
    targeted = admin_browser.get("/api/admin/audit", params={"action": "old.secretive"})
    assert targeted.json()["entries"] == []  # no filter reaches past the window
    with runtime.sessions() as s:
        searches = s.execute(
            select(AuditEvent).where(AuditEvent.action == "audit.search")
        ).scalars()
        logged = [json.loads(e.details or "{}") for e in searches]
    assert len(logged) >= 4
    assert logged[-1]["filters"]["action"] == "old.secretive"
