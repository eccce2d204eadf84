"""Approval requests: held admin actions that a different admin approves (once) or rejects.

A request stores the exact action (kind and JSON parameters). Approval flips the status
from pending with one conditional UPDATE and runs the action in the same transaction, so
two admins approving at once run it once. Requests expire after `acl.approval_expiry_hours`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from appliance.approvals.tables import (
    APPROVED,
    EXPIRED,
    PENDING,
    REJECTED,
    STATUSES,
    ApprovalRequest,
)
from appliance.audit import service as audit
from appliance.auth.tables import User
from appliance.documents.tables import Document
from appliance.errors import InvalidInput, NotFound, PermissionDenied
from ingest.index import VectorIndex

KINDS = ("grant", "classify")


def params_of(req: ApprovalRequest) -> dict[str, Any]:
    """The stored parameters of a request's action."""
    value: dict[str, Any] = json.loads(req.params)
    return value


def _canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def request(
    *,
    session: Session,
    doc: Document,
    kind: str,
    params: dict[str, Any],
    requester: User,
    now: dt.datetime,
    expiry_hours: int,
    reason: str | None = None,
) -> ApprovalRequest:
    """Hold an action for approval (the same pending action is not requested twice); audited."""
    if kind not in KINDS:
        raise InvalidInput("A request is for a 'grant' or a 'classify' action.")
    canonical = _canonical(params)
    existing = session.execute(
        select(ApprovalRequest).where(
            ApprovalRequest.doc_id == doc.id,
            ApprovalRequest.requester_id == requester.id,
            ApprovalRequest.kind == kind,
            ApprovalRequest.params == canonical,
            ApprovalRequest.status == PENDING,
            ApprovalRequest.expires_at > now,
        )
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    req = ApprovalRequest(
        doc_id=doc.id,
        requester_id=requester.id,
        kind=kind,
        params=canonical,
        reason=reason,
        status=PENDING,
        created_at=now,
        expires_at=now + dt.timedelta(hours=expiry_hours),
    )
    session.add(req)
    session.flush()
    audit.record(
        session,
        actor=requester.principal,
        action="approval.request",
        target=f"approval:{req.id}",
        details={"doc": doc.id, "kind": kind, **params},
    )
    return req


def expire_due(session: Session, *, now: dt.datetime) -> int:
    """Mark pending requests past their expiry as expired (audited); returns how many."""
    due = list(
        session.execute(
            select(ApprovalRequest).where(
                ApprovalRequest.status == PENDING, ApprovalRequest.expires_at <= now
            )
        ).scalars()
    )
    for req in due:
        req.status = EXPIRED
        req.decided_at = now
        audit.record(
            session, actor="system:approvals", action="approval.expire", target=f"approval:{req.id}"
        )
    session.flush()
    return len(due)


def list_requests(
    session: Session, *, now: dt.datetime, status: str | None = None
) -> list[ApprovalRequest]:
    """Requests, newest first (expired ones marked as such first)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"The status is one of {', '.join(STATUSES)}.")
    expire_due(session, now=now)
    session.commit()
    query = select(ApprovalRequest).order_by(ApprovalRequest.created_at.desc())
    if status is not None:
        query = query.where(ApprovalRequest.status == status)
    return list(session.execute(query).scalars())


def get_request(session: Session, request_id: str) -> ApprovalRequest:
    """One request, or NotFound."""
    req = session.get(ApprovalRequest, request_id)
    if req is None:
        raise NotFound("No such approval request. List them with GET /api/approvals.")
    return req


def _decidable(session: Session, req: ApprovalRequest, decider: User, now: dt.datetime) -> None:
    if not decider.is_admin or not decider.is_active:
        raise PermissionDenied("Only an admin decides approval requests.")
    if req.status == PENDING and req.expires_at <= now:
        expire_due(session, now=now)
        session.commit()
    if req.status != PENDING:
        raise InvalidInput(f"This request is {req.status} already; it cannot be decided again.")


def approve(
    *, session: Session, index: VectorIndex, request_id: str, approver: User, now: dt.datetime
) -> ApprovalRequest:
    """Approve another admin's request and run its action, exactly once; audited."""
    # Imported here: acl.service creates requests through this module.
    from appliance.acl import service as acl

    req = get_request(session, request_id)
    if req.requester_id == approver.id:
        raise PermissionDenied("You cannot approve your own request; another admin must.")
    _decidable(session, req, approver, now)
    requester = session.get(User, req.requester_id)
    if requester is None:
        raise NotFound("The admin who made this request no longer exists.")
    claimed = session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == req.id, ApprovalRequest.status == PENDING)
        .values(status=APPROVED, decided_by=approver.id, decided_at=now, executed_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise InvalidInput("This request was decided by someone else meanwhile.")
    audit.record(
        session,
        actor=approver.principal,
        action="approval.approve",
        target=f"approval:{req.id}",
        details={"doc": req.doc_id, "kind": req.kind, "requester": requester.principal},
    )
    try:
        acl.run_approved(session=session, index=index, req=req, requester=requester)
    except Exception:
        session.rollback()  # the request stays pending: nothing ran
        raise
    session.commit()
    session.refresh(req)
    return req


def reject(
    *, session: Session, request_id: str, decider: User, now: dt.datetime
) -> ApprovalRequest:
    """Reject a request (the requester may withdraw their own); audited."""
    req = get_request(session, request_id)
    _decidable(session, req, decider, now)
    claimed = session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == req.id, ApprovalRequest.status == PENDING)
        .values(status=REJECTED, decided_by=decider.id, decided_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise InvalidInput("This request was decided by someone else meanwhile.")
    audit.record(
        session,
        actor=decider.principal,
        action="approval.reject",
        target=f"approval:{req.id}",
        details={"doc": req.doc_id, "kind": req.kind},
    )
    session.commit()
    session.refresh(req)
    return req
