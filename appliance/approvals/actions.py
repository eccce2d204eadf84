"""The built-in approval kinds and their executors: grant, classify, make_admin, audit_export.

Imported by `approvals.service` before it looks a kind up; other domains register their own
kinds (lift_legal_hold, bulk_delete, ...) in their service modules.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from appliance.approvals import service as approvals
from appliance.auth.tables import User


def _acl_action(session: Session, params: dict[str, Any], approver: User, now: dt.datetime) -> None:
    """Run a held grant or classification change as the requester asked for it."""
    from appliance.acl import service as acl

    ctx = approvals.current()
    acl.run_approved(
        session=session, index=ctx.need_index(), req=ctx.request, requester=ctx.requester
    )


def _make_admin(session: Session, params: dict[str, Any], approver: User, now: dt.datetime) -> None:
    """Give the named user the admin role."""
    from appliance.auth import service as users

    ctx = approvals.current()
    users.set_role(
        session, user_id=str(params["user_id"]), role="admin", actor=ctx.requester.principal
    )


def _deferred(session: Session, params: dict[str, Any], approver: User, now: dt.datetime) -> None:
    """Nothing runs at approval: the requester redeems the approval once."""


approvals.register("grant", _acl_action)
approvals.register("classify", _acl_action)
approvals.register(approvals.MAKE_ADMIN, _make_admin)
approvals.register(approvals.AUDIT_EXPORT, _deferred, deferred=True)
