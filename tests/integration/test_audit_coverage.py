"""Every main flow leaves its audit entry, and the chain verifies afterwards.

One walk through the product as people use it (sign-in, enrolment, lockout, sign-out, users,
groups, grants, uploads, ingestion, deletion, a question, key rotation, the kill switch and
approvals), then a check that each step produced its action with ids, never names or text.
"""

from __future__ import annotations

import json
from typing import Any

import pyotp
from sqlalchemy import select

from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.core.runtime import Runtime
from appliance.keys import rotation
from models.fakes import FakeGenerator
from tests.fixtures.app import inline_worker
from tests.fixtures.auth import Account, Browser, Clock, make_user

NEW_PASSWORD = "seven quiet herons over the weir"
SECRET_TEXT = "The acquisition closes in May"


def _events(runtime: Runtime) -> list[AuditEvent]:
    with runtime.sessions() as s:
        return list(s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars())


def test_the_main_flows_are_audited(
    runtime: Runtime,
    browser_factory: Any,
    admin_browser: Browser,
    root: Account,
    clock: Clock,
) -> None:
    runtime.settings.chat.min_score = 0.0
    runtime._generator = FakeGenerator("The answer [1].")
    with runtime.sessions() as s:
        second = make_user(s, runtime.crypto, username="second", role="admin")
    second_browser = browser_factory()
    second_browser.sign_in(second)

    # Users: create (with a one-time password), enrol, first sign-in, role, disable.
    created = admin_browser.post("/api/admin/users", json={"username": "carol"}).json()
    carol_id, otp = created["user"]["id"], created["one_time_password"]
    carol = browser_factory()
    first = carol.login("carol", otp).json()
    assert first["stage"] == "enrol"
    secret = first["enrolment"]["secret"]
    clock.advance(seconds=30)
    enrolled = carol.post("/api/auth/enrol/confirm", json={"code": pyotp.TOTP(secret).at(clock())})
    assert enrolled.json()["stage"] == "password", enrolled.text
    done = carol.post("/api/auth/password", json={"old": otp, "new": NEW_PASSWORD})
    assert done.json()["stage"] == "done", done.text

    # Sign-in failure, then lockout, then a sign-out.
    stranger = browser_factory()
    for _ in range(runtime.settings.auth.lockout_threshold):
        clock.advance(seconds=61)
        assert stranger.login("carol", "not the password").status_code == 401
    assert carol.post("/api/auth/logout").status_code == 204
    clock.advance(minutes=runtime.settings.auth.lockout_minutes + 1)

    # Groups, grants, uploads, ingestion (indexed and failed), a question, deletion.
    group = admin_browser.post("/api/admin/groups", json={"name": "board"}).json()
    admin_browser.post(f"/api/admin/groups/{group['id']}/members", json={"user_id": carol_id})
    up = admin_browser.post(
        "/api/documents",
        files={"file": ("minutes.md", f"# Minutes\n\n{SECRET_TEXT}.\n".encode(), "text/markdown")},
    ).json()
    bad = admin_browser.post(
        "/api/documents", files={"file": ("broken.pdf", b"%PDF-1.4 broken", "application/pdf")}
    ).json()
    worker = inline_worker(runtime)
    try:
        worker.run_until_idle()
    finally:
        worker.close()
    granted = admin_browser.post(
        f"/api/documents/{up['id']}/grants", json={"principal": "user:carol", "level": "read"}
    )
    assert granted.is_success, granted.text
    revoked = admin_browser.delete(
        f"/api/documents/{up['id']}/grants", params={"principal": "user:carol"}
    )
    assert revoked.is_success, revoked.text
    admin_browser.post(
        f"/api/documents/{up['id']}/grants", json={"principal": "everyone", "level": "read"}
    )
    answer = admin_browser.post("/api/chat", json={"question": "When does it close?"})
    assert answer.status_code == 200
    assert admin_browser.delete(f"/api/documents/{bad['id']}").status_code == 204

    # Role change (held, approved), disable, key rotation, kill switch.
    held = admin_browser.patch(f"/api/admin/users/{carol_id}", json={"role": "admin"}).json()
    second_browser.post(f"/api/admin/approvals/{held['id']}/approve")
    admin_browser.post(f"/api/admin/users/{carol_id}/disable")
    with runtime.sessions() as s:
        rotation.rotate_audited(
            session=s, crypto=runtime.crypto, key_file=runtime.settings.key_file, actor="operator:t"
        )
    admin_browser.request(
        "PUT", "/api/admin/system/switches", json={"ingestion_paused": True, "reason": "disk swap"}
    )

    events = _events(runtime)
    actions = {e.action for e in events}
    expected = {
        "auth.login",
        "auth.failure",
        "auth.lockout",
        "auth.totp_enrol",
        "auth.password_change",
        "auth.logout",
        "user.create",
        "user.role",
        "user.disable",
        "group.create",
        "group.add_member",
        "acl.grant",
        "acl.revoke",
        "document.upload",
        "document.indexed",
        "document.ingest_failed",
        "document.delete",
        "chat.answer",
        "keys.rotate",
        "approval.request",
        "approval.approve",
        "system.switch",
    }
    assert expected <= actions, sorted(expected - actions)

    (answered,) = [e for e in events if e.action == "chat.answer"]
    details = json.loads(answered.details)
    assert details["chunks"]
    assert all(c.startswith(up["id"]) for c in details["chunks"])
    assert details["model"]
    assert details["timings"]["total_ms"] >= 0
    # Ids, never names, passwords, codes or document text.
    everything = " ".join(f"{e.actor} {e.target} {e.details}" for e in events)
    for leaked in ("carol", "minutes.md", SECRET_TEXT, otp, NEW_PASSWORD, secret, "board"):
        assert leaked not in everything, leaked
    with runtime.sessions() as s:
        assert audit.verify(s).ok
