"""HTTP API for approvals: list held actions, approve (runs once) or reject them (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from appliance.approvals import service
from appliance.approvals.schemas import ApprovalRequestOut, approval_out
from appliance.approvals.tables import STATUSES
from appliance.deps import AdminUser, NowDep, RuntimeDep, SessionDep, admin_user, protected_router

router = protected_router(
    prefix="/api/admin/approvals", tags=["approvals"], dependencies=[Depends(admin_user)]
)


@router.get("")
def list_approvals(
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
    status: Annotated[str | None, Query(description=f"One of {', '.join(STATUSES)}.")] = None,
) -> list[ApprovalRequestOut]:
    """Approval requests, newest first; those past their expiry are marked expired first."""
    reqs = service.list_requests(session, now=now, status=status)
    return [approval_out(session, r, crypto=rt.crypto) for r in reqs]


@router.get("/{request_id}")
def get_approval(request_id: str, session: SessionDep, rt: RuntimeDep) -> ApprovalRequestOut:
    """One approval request: the exact action it holds and its state."""
    return approval_out(session, service.get_request(session, request_id), crypto=rt.crypto)


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
    return approval_out(session, req, crypto=rt.crypto)


@router.post("/{request_id}/reject")
def reject_request(
    request_id: str, admin: AdminUser, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> ApprovalRequestOut:
    """Reject a request (or withdraw your own); nothing runs."""
    req = service.reject(session=session, request_id=request_id, decider=admin, now=now)
    return approval_out(session, req, crypto=rt.crypto)
