"""The approvals registry: other domains' kinds run exactly once, as stored, by another admin.

Time travel with explicit ``now`` values; two sessions for concurrent approvals.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.approvals import service as approvals
from appliance.approvals.tables import APPROVED, PENDING
from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.auth.tables import User
from appliance.core.config import Settings
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied
from appliance.core.runtime import Runtime

NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
KIND = "test_count_kind"


class Calls:
    """What the test executor saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], str, dt.datetime, str, str]] = []
        self.fail = False


@pytest.fixture
def calls() -> Iterator[Calls]:
    record = Calls()

    def run(session: Session, params: dict[str, Any], approver: User, now: dt.datetime) -> None:
        if record.fail:
            raise InvalidInput("The thing to change is gone.")
        ctx = approvals.current()
        record.seen.append((params, approver.username, now, ctx.requester.username, ctx.request.id))
        audit.record(session, actor=ctx.requester.principal, action="test.ran", details=params)

    approvals.register(KIND, run)
    yield record
    approvals._registry.pop(KIND, None)


def _admins(rt: Runtime) -> tuple[str, str]:
    with rt.sessions() as s:
        made = [User(username=n, role="admin", password_hash="-") for n in ("ada", "bea")]
        s.add_all(made)
        s.commit()
        return made[0].id, made[1].id


def _request(rt: Runtime, requester_id: str, kind: str = KIND, **params: Any) -> str:
    with rt.sessions() as s:
        req = approvals.request(
            session=s,
            kind=kind,
            target="thing:1",
            params=params or {"n": 1},
            requester=s.get_one(User, requester_id),
            now=NOW,
            expiry_hours=24,
        )
        s.commit()
        return req.id


def _actions(rt: Runtime) -> list[str]:
    with rt.sessions() as s:
        return list(s.execute(select(AuditEvent.action).order_by(AuditEvent.id)).scalars())


def test_a_registered_kind_runs_once_with_its_stored_parameters(
    runtime: Runtime, calls: Calls
) -> None:
    ada, bea = _admins(runtime)
    req_id = _request(runtime, ada, n=7, doc="d1")
    assert _request(runtime, ada, n=7, doc="d1") == req_id  # the same pending action once
    later = NOW + dt.timedelta(hours=1)
    with runtime.sessions() as first, runtime.sessions() as second:
        assert approvals.get_request(second, req_id).status == PENDING  # both loaded it
        approvals.approve(
            session=first, request_id=req_id, approver=first.get_one(User, bea), now=later
        )
        with pytest.raises(InvalidInput):
            approvals.approve(
                session=second, request_id=req_id, approver=second.get_one(User, bea), now=later
            )
    assert calls.seen == [({"doc": "d1", "n": 7}, "bea", later, "ada", req_id)]
    assert _actions(runtime).count("test.ran") == 1
    with runtime.sessions() as s:
        req = approvals.get_request(s, req_id)
        assert (req.status, req.executed_at, req.target) == (APPROVED, later, "thing:1")
        assert audit.verify(s).ok


def test_a_failing_executor_leaves_the_request_pending(runtime: Runtime, calls: Calls) -> None:
    ada, bea = _admins(runtime)
    req_id = _request(runtime, ada)
    calls.fail = True
    with runtime.sessions() as s:
        with pytest.raises(InvalidInput, match="gone"):
            approvals.approve(session=s, request_id=req_id, approver=s.get_one(User, bea), now=NOW)
        assert approvals.get_request(s, req_id).status == PENDING
    assert "approval.approve" not in _actions(runtime)
    calls.fail = False
    with runtime.sessions() as s:
        approvals.approve(session=s, request_id=req_id, approver=s.get_one(User, bea), now=NOW)
    assert len(calls.seen) == 1


@pytest.mark.parametrize("change", ["demoted", "disabled"])
def test_a_request_does_not_run_once_its_requester_is_no_longer_an_admin(
    runtime: Runtime, calls: Calls, change: str
) -> None:
    ada, bea = _admins(runtime)
    req_id = _request(runtime, ada)
    with runtime.sessions() as s:
        requester = s.get_one(User, ada)
        if change == "demoted":
            requester.role = "user"
        else:
            requester.is_active = False
        s.commit()
        with pytest.raises(PermissionDenied, match="no longer an active admin"):
            approvals.approve(session=s, request_id=req_id, approver=s.get_one(User, bea), now=NOW)
        assert approvals.get_request(s, req_id).status == PENDING
    assert calls.seen == []


def test_requester_cannot_approve_and_requests_expire(runtime: Runtime, calls: Calls) -> None:
    ada, bea = _admins(runtime)
    req_id = _request(runtime, ada)
    with runtime.sessions() as s:
        with pytest.raises(PermissionDenied, match="another admin"):
            approvals.approve(session=s, request_id=req_id, approver=s.get_one(User, ada), now=NOW)
        with pytest.raises(InvalidInput, match="expired"):
            approvals.approve(
                session=s,
                request_id=req_id,
                approver=s.get_one(User, bea),
                now=NOW + dt.timedelta(hours=24),
            )
    assert calls.seen == []
    assert "approval.expire" in _actions(runtime)
    assert "approval.self_approve" in _actions(runtime)  # the refused attempt is audited


def test_registry_guards(runtime: Runtime, calls: Calls) -> None:
    ada, _ = _admins(runtime)
    with pytest.raises(ValueError, match="registered already"):
        approvals.register(KIND, lambda *_: None)
    with pytest.raises(InvalidInput, match="Unknown kind"):
        _request(runtime, ada, kind="no_such_kind")
    assert {"grant", "classify", "make_admin", "audit_export", KIND} <= set(approvals.kinds())
    with pytest.raises(RuntimeError):
        approvals.current()


def test_deferred_approvals_are_redeemed_once_by_their_requester(runtime: Runtime) -> None:
    ada, bea = _admins(runtime)
    req_id = _request(runtime, ada, kind=approvals.AUDIT_EXPORT, format="csv", filters={})
    with runtime.sessions() as s:
        a, b = s.get_one(User, ada), s.get_one(User, bea)
        with pytest.raises(PermissionDenied, match="approval"):
            approvals.redeem(session=s, request_id=req_id, kind="audit_export", user=a, now=NOW)
        approvals.approve(session=s, request_id=req_id, approver=b, now=NOW)
        assert approvals.get_request(s, req_id).executed_at is None  # nothing ran yet
        with pytest.raises(PermissionDenied, match="asked"):
            approvals.redeem(session=s, request_id=req_id, kind="audit_export", user=b, now=NOW)
        with pytest.raises(InvalidInput):
            approvals.redeem(session=s, request_id=req_id, kind="bulk_delete", user=a, now=NOW)
        with pytest.raises(PermissionDenied, match="expired"):
            approvals.redeem(
                session=s,
                request_id=req_id,
                kind="audit_export",
                user=a,
                now=NOW + dt.timedelta(hours=25),
            )
        used = approvals.redeem(session=s, request_id=req_id, kind="audit_export", user=a, now=NOW)
        s.commit()
        assert used.executed_at == NOW
        with pytest.raises(PermissionDenied, match="used already"):
            approvals.redeem(session=s, request_id=req_id, kind="audit_export", user=a, now=NOW)
        with pytest.raises(NotFound):
            approvals.get_request(s, "0" * 32)


def test_make_admin_runs_once_under_concurrent_approvals(runtime: Runtime) -> None:
    ada, bea = _admins(runtime)
    with runtime.sessions() as s:
        pat = User(username="pat", password_hash="-")
        s.add(pat)
        s.commit()
        pat_id = pat.id
    req_id = _request(runtime, ada, kind=approvals.MAKE_ADMIN, user_id=pat_id)
    with runtime.sessions() as first, runtime.sessions() as second:
        approvals.get_request(second, req_id)
        approvals.approve(
            session=first, request_id=req_id, approver=first.get_one(User, bea), now=NOW
        )
        with pytest.raises(InvalidInput):
            approvals.approve(
                session=second, request_id=req_id, approver=second.get_one(User, bea), now=NOW
            )
    with runtime.sessions() as s:
        assert s.get_one(User, pat_id).role == "admin"
        (role,) = s.execute(select(AuditEvent).where(AuditEvent.action == "user.role")).scalars()
        assert role.actor == f"user:{ada}"  # done as requested, by the requester
    assert _actions(runtime).count("approval.approve") == 1


def test_needs_approval_follows_the_settings(settings: Settings) -> None:
    assert all(approvals.needs_approval(settings, k) for k in approvals.CONSEQUENTIAL)
    settings.approvals.required = ["bulk_delete"]
    assert approvals.needs_approval(settings, "bulk_delete")
    assert not approvals.needs_approval(settings, "make_admin")
    assert approvals.expiry_hours(settings) == settings.acl.approval_expiry_hours
    settings.approvals.expiry_hours = 5
    assert approvals.expiry_hours(settings) == 5
