"""An admin adding themselves to a group that reads confidential documents is held (invariant 4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from appliance.audit.tables import AuditEvent
from appliance.core.runtime import Runtime
from tests.fixtures.app import inline_worker, submit
from tests.fixtures.auth import make_user


def test_self_join_to_a_sensitive_group_needs_another_admin(
    runtime: Runtime, browser_factory: Any, tmp_path: Path
) -> None:
    with runtime.sessions() as s:
        root = make_user(s, runtime.crypto, username="root", role="admin")
        other = make_user(s, runtime.crypto, username="other", role="admin")
    admin = browser_factory()
    admin.sign_in(root)
    board = admin.post("/api/admin/groups", json={"name": "board"}).json()
    plain = admin.post("/api/admin/groups", json={"name": "plain"}).json()
    (tmp_path / "memo.md").write_text("# Board memo\n\nMerger talks with Example Corp.\n")
    doc_id = submit(runtime, tmp_path / "memo.md", grants=("group:board",))
    inline_worker(runtime).run_until_idle()
    with runtime.sessions() as s:
        from appliance.documents.tables import Document

        s.get_one(Document, doc_id).classification = "confidential"
        s.commit()

    r = admin.post(f"/api/admin/groups/{board['id']}/members", json={"user_id": root.user.id})
    assert r.status_code == 202, r.text  # held for a second admin, not done
    assert r.json()["kind"] == "add_member"
    board_now = admin.get(f"/api/admin/groups/{board['id']}").json()
    assert board_now["members"] == []
    # A group without sensitive grants is fine, and another admin may add them, or approve.
    ok = admin.post(f"/api/admin/groups/{plain['id']}/members", json={"user_id": root.user.id})
    assert ok.status_code == 200
    second = browser_factory()
    second.sign_in(other)
    approved = second.post(f"/api/admin/approvals/{r.json()['id']}/approve")
    assert approved.status_code == 200, approved.text
    members = admin.get(f"/api/admin/groups/{board['id']}").json()["members"]
    assert [m["username"] for m in members] == ["root"]
    with runtime.sessions() as s:
        held = [
            json.loads(e.details)
            for e in s.execute(
                select(AuditEvent).where(AuditEvent.action == "approval.request")
            ).scalars()
        ]
    assert [(d["held"], d["why"]) for d in held] == [("group.add_member", "self_join")]
