"""HTTP API for approvals: list held actions, approve (runs once) or reject them (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from sqlalchemy.orm import Session

from appliance.admin.routes import document_label
from appliance.approvals import service
from appliance.approvals.schemas import ApprovalRequestOut, DocLabel, approval_out
from appliance.approvals.tables import STATUSES, ApprovalRequest
from appliance.auth.tables import User
from appliance.core.runtime import Runtime
from appliance.deps import AdminUser, NowDep, RuntimeDep, SessionDep, admin_user, protected_router

router = protected_router(
    prefix="/api/admin/approvals", tags=["approvals"], dependencies=[Depends(admin_user)]
)


def labels_for(session: Session, rt: Runtime, viewer: User) -> DocLabel:
    """Documents named as this admin may see them (a title only where they may read it)."""
    return lambda doc_id: document_label(session, rt.crypto, viewer, doc_id)


def shaped(session: Session, rt: Runtime, viewer: User, req: ApprovalRequest) -> ApprovalRequestOut:
    """A request as this admin sees it: names, not ids."""
    return approval_out(session, req, crypto=rt.crypto, doc_label=labels_for(session, rt, viewer))


@router.get("")
def list_approvals(
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
    status: Annotated[str | None, Query(description=f"One of {', '.join(STATUSES)}.")] = None,
) -> list[ApprovalRequestOut]:
    """Approval requests, newest first; those past their expiry are marked expired first.

    `summary` says the action with names (documents by title only where you may read
    them); `waiting_note` says why a pending request cannot be approved yet (no second
    active admin) and how to create one."""
    reqs = service.list_requests(session, now=now, status=status)
    return [shaped(session, rt, admin, r) for r in reqs]


@router.get("/{request_id}")
def get_approval(
    request_id: str, admin: AdminUser, session: SessionDep, rt: RuntimeDep
) -> ApprovalRequestOut:
    """One approval request: the exact action it holds and its state."""
    return shaped(session, rt, admin, service.get_request(session, request_id))


@router.post("/{request_id}/approve")
def approve_request(
    request_id: str, admin: AdminUser, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> ApprovalRequestOut:
    """Approve another admin's request: its action runs now, exactly once.

    You cannot approve your own request. An expired, rejected or already approved request
    cannot be approved. Approving an audit export lets its requester download it once.
    """
    req = service.approve(
        session=session, request_id=request_id, approver=admin, now=now, runtime=rt
    )
    return shaped(session, rt, admin, req)


@router.post("/{request_id}/reject")
def reject_request(
    request_id: str, admin: AdminUser, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> ApprovalRequestOut:
    """Reject a request (or withdraw your own); nothing runs."""
    req = service.reject(session=session, request_id=request_id, decider=admin, now=now)
    return shaped(session, rt, admin, req)
