"""Retention over HTTP: policies for admins, retain-until for managers, legal hold blocking
every deletion path, lifting it and bulk deletion through a second admin's approval."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from appliance.approvals.tables import ApprovalRequest
from appliance.audit.tables import AuditEvent
from appliance.core.runtime import Runtime
from appliance.documents.tables import Document, LegalHold
from appliance.jobs.registry import run_job
from tests.fixtures.app import inline_worker, submit
from tests.fixtures.auth import Account, Browser, Clock, signed_in


def _doc(
    rt: Runtime, tmp_path: Path, name: str, *, owner: str, grants: tuple[str, ...] = ()
) -> str:
    path = tmp_path / f"{name}.md"
    path.write_text(f"# {name}\n\nThe {name} memo is about the travel portal.\n")
    doc_id = submit(rt, path, owner=owner, grants=grants)
    assert inline_worker(rt).run_until_idle(only={doc_id}) == 1
    return doc_id


def _exists(rt: Runtime, doc_id: str) -> bool:
    with rt.sessions() as s:
        return s.get(Document, doc_id) is not None


def test_policies_are_for_admins_and_audited(
    admin_browser: Browser, user_browser: Browser, runtime: Runtime
) -> None:
    runtime.settings.approvals.required = []  # shortening alone: see the next test
    assert user_browser.get("/api/admin/retention").status_code == 403
    r = admin_browser.get("/api/admin/retention")
    assert r.status_code == 200
    assert r.json()["effective"]["audit_log_days"] == 2555
    assert r.json()["effective"]["internal_days"] is None
    r = admin_browser.request(
        "PUT", "/api/admin/retention", json={"set": {"internal_days": 365, "public_days": 0}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["internal_days"] == 365
    assert r.json()["effective"]["public_days"] is None
    assert {o["key"] for o in r.json()["overrides"]} == {"internal_days", "public_days"}
    bad = admin_browser.request("PUT", "/api/admin/retention", json={"set": {"nope": 1}})
    assert bad.status_code == 422
    negative = admin_browser.request(
        "PUT", "/api/admin/retention", json={"set": {"internal_days": -1}}
    )
    assert negative.status_code == 422
    r = admin_browser.request("PUT", "/api/admin/retention", json={"reset": ["internal_days"]})
    assert r.json()["effective"]["internal_days"] is None
    with runtime.sessions() as s:
        events = s.execute(
            select(AuditEvent).where(AuditEvent.action == "retention.policy")
        ).scalars()
        assert len(list(events)) == 2


def test_shortening_retention_waits_for_a_second_admin(
    runtime: Runtime, browser_factory: Any, root: Account, root2: Account
) -> None:
    """One admin cannot cut the audit log (or any retention) short alone."""
    url = "/api/admin/retention"
    admin, admin2 = (signed_in(browser_factory, x) for x in (root, root2))
    r = admin.request("PUT", url, json={"set": {"audit_log_days": 3650}})  # longer: at once
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["audit_log_days"] == 3650

    for change in (
        {"set": {"audit_log_days": 1}},
        {"set": {"internal_days": 30}},  # from forever
        {"set": {"audit_log_days": 3650, "public_days": 1}},  # one shorter is enough
    ):
        r = admin.request("PUT", url, json=change)
        assert r.status_code == 202, (change, r.text)
        assert r.json()["kind"] == "shorten_retention"
    effective = admin.get(url).json()["effective"]
    assert effective["audit_log_days"] == 3650
    assert effective["internal_days"] is None
    assert effective["public_days"] is None

    r = admin.request("PUT", url, json={"set": {"audit_log_days": 1}})  # the same request again
    approval = r.json()["approval_id"]
    assert admin.post(f"/api/admin/approvals/{approval}/approve").status_code == 403  # own
    assert admin.get(url).json()["effective"]["audit_log_days"] == 3650
    r = admin2.post(f"/api/admin/approvals/{approval}/approve")
    assert r.status_code == 200, r.text
    assert admin.get(url).json()["effective"]["audit_log_days"] == 1
    with runtime.sessions() as s:
        changes = (
            s.execute(
                select(AuditEvent)
                .where(AuditEvent.action == "retention.policy")
                .order_by(AuditEvent.id)
            )
            .scalars()
            .all()
        )
        assert changes[-1].actor == f"user:{root.user.id}"  # the requester's change, approved
        assert '"to":1' in changes[-1].details.replace(" ", "")

    # Back to the settings file (2555 days): longer again, so at once.
    r = admin.request("PUT", url, json={"reset": ["audit_log_days"]})
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["audit_log_days"] == 2555


def test_retain_until_is_set_by_managers_and_admins(
    runtime: Runtime,
    tmp_path: Path,
    browser_factory: Any,
    alice: Account,
    bob: Account,
    root: Account,
) -> None:
    doc_id = _doc(runtime, tmp_path, "alices", owner="alice", grants=("user:bob",))
    stranger_id = _doc(runtime, tmp_path, "admins", owner="admin")
    a, b, admin = (signed_in(browser_factory, x) for x in (alice, bob, root))
    when = "2031-01-01T00:00:00Z"
    r = a.request("PUT", f"/api/documents/{doc_id}/retention", json={"retain_until": when})
    assert r.status_code == 200, r.text
    assert r.json()["retain_until"].startswith("2031-01-01T00:00:00")
    assert not r.json()["legal_hold"]
    r = b.request("PUT", f"/api/documents/{doc_id}/retention", json={"retain_until": None})
    assert r.status_code == 403  # bob reads it but does not manage it
    r = b.request("PUT", f"/api/documents/{stranger_id}/retention", json={"retain_until": None})
    assert r.status_code == 404
    r = a.request(
        "PUT", f"/api/documents/{doc_id}/retention", json={"retain_until": "2031-01-01T00:00:00"}
    )
    assert r.status_code == 422  # no time zone
    r = admin.request("PUT", f"/api/documents/{doc_id}/retention", json={"retain_until": None})
    assert r.status_code == 200
    assert r.json()["retain_until"] is None


def test_legal_hold_blocks_every_delete_and_lifting_needs_a_second_admin(
    runtime: Runtime,
    tmp_path: Path,
    browser_factory: Any,
    alice: Account,
    root: Account,
    root2: Account,
    clock: Clock,
) -> None:
    rt = runtime
    doc_id = _doc(rt, tmp_path, "evidence", owner="alice")
    a, admin, admin2 = (signed_in(browser_factory, x) for x in (alice, root, root2))
    assert a.post(f"/api/admin/documents/{doc_id}/legal-hold", json={}).status_code == 403
    r = admin.post(f"/api/admin/documents/{doc_id}/legal-hold", json={"reason": "case 7"})
    assert r.status_code == 200, r.text
    assert r.json()["legal_hold"] is True
    assert r.json()["held_by"] == f"user:{root.user.id}"

    r = a.delete(f"/api/documents/{doc_id}")  # the owner
    assert r.status_code == 403
    assert "legal hold" in r.json()["message"]
    assert admin.delete(f"/api/documents/{doc_id}").status_code == 403  # an admin
    r = admin.post("/api/admin/documents/bulk-delete", json={"doc_ids": [doc_id]})
    assert r.status_code == 202  # held for approval; the hold is checked when it runs
    with rt.sessions() as s:
        s.get_one(Document, doc_id).retain_until = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        s.commit()
    # The job (at the app's clock: the browsers' sessions live in that time).
    assert run_job(rt, "retention", now=clock()).counts["documents_held"] == 1
    assert _exists(rt, doc_id)

    r = admin.delete(f"/api/admin/documents/{doc_id}/legal-hold")
    assert r.status_code == 202, r.text
    approval = r.json()["approval_id"]
    assert r.json()["kind"] == "lift_legal_hold"
    assert admin.post(f"/api/admin/approvals/{approval}/approve").status_code == 403  # own request
    with rt.sessions() as s:
        assert s.get(LegalHold, doc_id) is not None
    r = admin2.post(f"/api/admin/approvals/{approval}/approve")
    assert r.status_code == 200, r.text
    with rt.sessions() as s:
        assert s.get(LegalHold, doc_id) is None
        lifted = s.execute(
            select(AuditEvent).where(AuditEvent.action == "document.legal_hold_lift")
        ).scalar_one()
        assert approval in lifted.details
    assert a.delete(f"/api/documents/{doc_id}").status_code == 204
    assert not _exists(rt, doc_id)


def test_lifting_without_the_approval_setting(
    runtime: Runtime, tmp_path: Path, admin_browser: Browser
) -> None:
    runtime.settings.approvals.required = []
    doc_id = _doc(runtime, tmp_path, "memo", owner="admin")
    admin_browser.post(f"/api/admin/documents/{doc_id}/legal-hold", json={})
    r = admin_browser.delete(f"/api/admin/documents/{doc_id}/legal-hold")
    assert r.status_code == 200
    assert r.json()["legal_hold"] is False


def test_bulk_delete_waits_for_approval_and_skips_held(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, root: Account, root2: Account
) -> None:
    rt = runtime
    held = _doc(rt, tmp_path, "held", owner="admin")
    free = [_doc(rt, tmp_path, f"free{i}", owner="admin") for i in range(2)]
    admin, admin2 = (signed_in(browser_factory, x) for x in (root, root2))
    admin.post(f"/api/admin/documents/{held}/legal-hold", json={})
    r = admin.post("/api/admin/documents/bulk-delete", json={"doc_ids": [held, *free, "0" * 32]})
    assert r.status_code == 202, r.text
    assert all(_exists(rt, d) for d in (held, *free))
    r = admin2.post(f"/api/admin/approvals/{r.json()['approval_id']}/approve")
    assert r.status_code == 200, r.text
    assert _exists(rt, held)  # deleted at approval: key, points, blob and rows
    assert not any(_exists(rt, d) for d in free)
    with rt.sessions() as s:
        event = s.execute(
            select(AuditEvent).where(AuditEvent.action == "document.bulk_delete")
        ).scalar_one()
        assert '"held":1' in event.details


def test_approved_bulk_delete_survives_one_documents_failure(
    runtime: Runtime,
    tmp_path: Path,
    browser_factory: Any,
    root: Account,
    root2: Account,
    monkeypatch: Any,
) -> None:
    """A failure on one document neither stops the others nor loses track of it."""
    from appliance.retention import service as retention_service

    rt = runtime
    untouched, half, fine = (_doc(rt, tmp_path, n, owner="admin") for n in ("a", "b", "c"))
    begin = retention_service.docs.begin_delete

    def flaky_begin(*, session: Any, index: Any, doc: Document, actor: str) -> None:
        if doc.id == untouched:
            raise OSError("disk full")  # before anything changed
        begin(session=session, index=index, doc=doc, actor=actor)

    real_delete = rt.blobs.delete

    def flaky_blob_delete(doc_id: str) -> None:
        if doc_id == half:
            raise OSError("I/O error")  # hidden and its key shredded, the rest left
        real_delete(doc_id)

    monkeypatch.setattr(retention_service.docs, "begin_delete", flaky_begin)
    monkeypatch.setattr(rt.blobs, "delete", flaky_blob_delete)
    admin, admin2 = (signed_in(browser_factory, x) for x in (root, root2))
    r = admin.post("/api/admin/documents/bulk-delete", json={"doc_ids": [untouched, half, fine]})
    assert r.status_code == 202, r.text
    approval = r.json()["approval_id"]
    r = admin2.post(f"/api/admin/approvals/{approval}/approve")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    with rt.sessions() as s:
        assert s.get_one(Document, untouched).state == "indexed"  # ask again for this one
        assert s.get_one(Document, half).state == "deleting"  # never visible again
        assert s.get(Document, fine) is None
        event = s.execute(
            select(AuditEvent).where(AuditEvent.action == "document.bulk_delete")
        ).scalar_one()
        assert event.outcome == "partial"
        assert json.loads(event.details)["failed"] == [untouched]
        assert json.loads(event.details)["deleted"] == 2
        request = s.get_one(ApprovalRequest, approval)
        assert request.status == "approved"
        assert request.executed_at is not None
        approved = s.execute(
            select(AuditEvent).where(AuditEvent.action == "approval.approve")
        ).scalar_one()
        assert approval in approved.target
    monkeypatch.setattr(rt.blobs, "delete", real_delete)
    assert run_job(rt, "cleanup").counts  # finishes the hidden one
    assert not _exists(rt, half)
    assert _exists(rt, untouched)


def test_bulk_delete_at_once_without_the_approval_setting(
    runtime: Runtime, tmp_path: Path, admin_browser: Browser
) -> None:
    runtime.settings.approvals.required = []
    held = _doc(runtime, tmp_path, "held", owner="admin")
    free = _doc(runtime, tmp_path, "free", owner="admin")
    admin_browser.post(f"/api/admin/documents/{held}/legal-hold", json={})
    r = admin_browser.post("/api/admin/documents/bulk-delete", json={"doc_ids": [held, free]})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "done",
        "deleted": [free],
        "held": [held],
        "not_found": [],
        "failed": [],
    }
    assert not _exists(runtime, free)
    assert _exists(runtime, held)


def test_bulk_delete_by_filter(runtime: Runtime, tmp_path: Path, admin_browser: Browser) -> None:
    rt = runtime
    rt.settings.approvals.required = []
    secret = _doc(rt, tmp_path, "secret", owner="admin")
    plain = _doc(rt, tmp_path, "plain", owner="admin")
    with rt.sessions() as s:
        s.get_one(Document, secret).classification = "confidential"
        s.commit()
    url = "/api/admin/documents/bulk-delete"
    assert admin_browser.post(url, json={}).status_code == 422
    both = {"doc_ids": [plain], "filter": {"classification": "public"}}
    assert admin_browser.post(url, json=both).status_code == 422
    none = admin_browser.post(url, json={"filter": {"classification": "public"}})
    assert none.status_code == 422
    r = admin_browser.post(url, json={"filter": {"classification": "confidential"}})
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] == [secret]
    assert _exists(rt, plain)
    assert not _exists(rt, secret)
