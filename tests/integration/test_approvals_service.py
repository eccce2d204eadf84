"""Approval requests at the service level: exactly once, not by the requester, expiring."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.acl import service as acl
from appliance.approvals import service as approvals
from appliance.approvals.tables import APPROVED, EXPIRED, PENDING
from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.auth.tables import User
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied
from appliance.core.runtime import Runtime
from appliance.documents.tables import Document, DocumentGrant
from tests.fixtures.app import inline_worker, submit

NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)


def _admins(rt: Runtime) -> tuple[str, str]:
    with rt.sessions() as s:
        made = [User(username=n, role="admin", password_hash="-") for n in ("ada", "bea")]
        s.add_all(made)
        s.commit()
        return made[0].id, made[1].id


def _confidential_doc(rt: Runtime, tmp_path: Path) -> str:
    path = tmp_path / "board.md"
    path.write_text("# Board minutes\n\nThe acquisition closes in May.\n")
    doc_id = submit(rt, path)
    inline_worker(rt).run_until_idle(only={doc_id})
    with rt.sessions() as s:
        doc = s.get_one(Document, doc_id)
        doc.classification = "confidential"
        s.commit()
    return doc_id


def _held_request(rt: Runtime, doc_id: str, requester_id: str) -> str:
    with rt.sessions() as s:
        held = acl.grant(
            session=s,
            index=rt.index(),
            doc=s.get_one(Document, doc_id),
            principal=f"user:{requester_id}",
            level="read",
            actor=s.get_one(User, requester_id),
            now=NOW,
            expiry_hours=24,
        )
        assert held is not None
        assert held.request.status == PENDING
        return held.request.id


def _grants(rt: Runtime, doc_id: str) -> set[str]:
    with rt.sessions() as s:
        rows = s.execute(select(DocumentGrant.principal).where(DocumentGrant.doc_id == doc_id))
        return set(rows.scalars())


def test_two_admins_approving_at_once_run_the_action_once(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    ada, bea = _admins(rt)
    doc_id = _confidential_doc(rt, tmp_path)
    request_id = _held_request(rt, doc_id, ada)
    assert f"user:{ada}" not in _grants(rt, doc_id)

    with rt.sessions() as first, rt.sessions() as second:
        # Both approvers loaded the pending request before either decided.
        stale = approvals.get_request(second, request_id)
        assert stale.status == PENDING
        approvals.approve(
            session=first,
            index=rt.index(),
            request_id=request_id,
            approver=first.get_one(User, bea),
            now=NOW,
        )
        with pytest.raises(InvalidInput):
            approvals.approve(
                session=second,
                index=rt.index(),
                request_id=request_id,
                approver=second.get_one(User, bea),
                now=NOW,
            )
    assert f"user:{ada}" in _grants(rt, doc_id)
    with rt.sessions() as s:
        grants = s.execute(select(AuditEvent).where(AuditEvent.action == "acl.grant")).all()
        assert len(grants) == 1
        assert approvals.get_request(s, request_id).status == APPROVED
        assert audit.verify(s).ok


def test_the_requester_cannot_approve_and_expiry_is_final(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    ada, bea = _admins(rt)
    doc_id = _confidential_doc(rt, tmp_path)
    request_id = _held_request(rt, doc_id, ada)
    with rt.sessions() as s:
        with pytest.raises(PermissionDenied):
            approvals.approve(
                session=s,
                index=rt.index(),
                request_id=request_id,
                approver=s.get_one(User, ada),
                now=NOW,
            )
        late = NOW + dt.timedelta(hours=24)
        with pytest.raises(InvalidInput, match="expired"):
            approvals.approve(
                session=s,
                index=rt.index(),
                request_id=request_id,
                approver=s.get_one(User, bea),
                now=late,
            )
        assert approvals.get_request(s, request_id).status == EXPIRED
        with pytest.raises(NotFound):
            approvals.get_request(s, "0" * 32)
    assert f"user:{ada}" not in _grants(rt, doc_id)


def test_a_non_admin_cannot_decide(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    ada, _ = _admins(rt)
    doc_id = _confidential_doc(rt, tmp_path)
    request_id = _held_request(rt, doc_id, ada)
    with rt.sessions() as s:
        plain = User(username="pat", password_hash="-")
        s.add(plain)
        s.commit()
        with pytest.raises(PermissionDenied):
            approvals.reject(session=s, request_id=request_id, decider=plain, now=NOW)
        assert approvals.get_request(s, request_id).status == PENDING


def test_operators_are_trusted_but_audited(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    ada, _ = _admins(rt)
    doc_id = _confidential_doc(rt, tmp_path)
    with rt.sessions() as s:
        held = acl.grant(
            session=s,
            index=rt.index(),
            doc=s.get_one(Document, doc_id),
            principal=f"user:{ada}",
            level="read",
            actor="operator:alice",
        )
        assert held is None
        (event,) = s.execute(select(AuditEvent).where(AuditEvent.action == "acl.grant")).scalars()
        assert event.actor == "operator:alice"
    assert f"user:{ada}" in _grants(rt, doc_id)
