"""Request and response bodies of the approvals API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from appliance.approvals import service
from appliance.approvals.tables import ApprovalRequest
from appliance.audit import query as audit_query
from appliance.core.crypto import Crypto


class ApprovalRequestOut(BaseModel):
    """A consequential action held for a second admin: exactly what will run, and its state."""

    id: str
    kind: str
    target: str | None
    doc_id: str | None
    params: dict[str, Any]
    reason: str | None
    requester: str
    status: str
    created_at: dt.datetime
    expires_at: dt.datetime
    decided_by: str | None
    decided_at: dt.datetime | None
    executed_at: dt.datetime | None


def approval_out(
    session: Session, req: ApprovalRequest, *, crypto: Crypto | None = None
) -> ApprovalRequestOut:
    """Shape a request for admins: people by name (or pseudonym once erased)."""

    def name(user_id: str | None) -> str | None:
        if user_id is None:
            return None
        return audit_query.describe_actor(session, f"user:{user_id}", crypto=crypto)

    return ApprovalRequestOut(
        id=req.id,
        kind=req.kind,
        target=req.target,
        doc_id=req.doc_id,
        params=service.params_of(req),
        reason=req.reason,
        requester=name(req.requester_id) or "",
        status=req.status,
        created_at=req.created_at,
        expires_at=req.expires_at,
        decided_by=name(req.decided_by),
        decided_at=req.decided_at,
        executed_at=req.executed_at,
    )
