"""The executors of approval kinds this domain runs itself: make_admin and audit_export.

Other kinds run in the domain that owns the action (grant and classify in `acl.service`,
legal holds, bulk deletion and retention changes in `retention.service`);
`appliance.wiring.install` registers every one of them at start-up.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from appliance.approvals import service as approvals
from appliance.auth import service as users
from appliance.auth.tables import User


def make_admin(session: Session, params: dict[str, Any], approver: User, now: dt.datetime) -> None:
    """Give the named user the admin role."""
    ctx = approvals.current()
    users.set_role(
        session, user_id=str(params["user_id"]), role="admin", actor=ctx.requester.principal
    )


def deferred(session: Session, params: dict[str, Any], approver: User, now: dt.datetime) -> None:
    """Nothing runs at approval: the requester redeems the approval once."""
