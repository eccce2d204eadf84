"""An admin cannot add themselves to a group that reads confidential documents (invariant 4)."""

from __future__ import annotations

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
    assert r.status_code == 403
    assert "another admin" in r.json()["message"]
    # A group without sensitive grants is fine, and another admin may add them.
    ok = admin.post(f"/api/admin/groups/{plain['id']}/members", json={"user_id": root.user.id})
    assert ok.status_code < 300
    second = browser_factory()
    second.sign_in(other)
    added = second.post(f"/api/admin/groups/{board['id']}/members", json={"user_id": root.user.id})
    assert added.status_code < 300
    with runtime.sessions() as s:
        refused = (
            s.execute(
                select(AuditEvent).where(
                    AuditEvent.action == "group.add_member", AuditEvent.outcome == "refused"
                )
            )
            .scalars()
            .all()
        )
    assert len(refused) == 1
