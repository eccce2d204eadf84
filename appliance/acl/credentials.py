"""Credential resets by admins, held where one admin could then act as another account.

The accounts service (`appliance.auth.service`) resets a password or a second factor and
records who did (`appliance.auth.provenance`); whether an admin may do it alone is decided
here, beside the read rule it protects (`appliance.acl.duties.reset_exposure`), under the
access lock and in the transaction that commits the reset:

- another admin's credentials: always held, and the approver is neither the requester nor
  the target (`appliance.approvals.service.approve`);
- an account that reads confidential or personal documents the admin cannot, or has chat
  history, when the reset would let the admin sign in as it: held.

An approved password reset is *deferred*: the requester redeems the approval once, by asking
for the reset again with its id, and is shown the one-time password then (only they may see
it). An approved second-factor reset runs when it is approved. The operator's CLI resets
directly (`appliance.auth.service`), as ``operator:<os user>``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from appliance.acl import duties
from appliance.approvals import service as approvals
from appliance.auth import service as users
from appliance.auth.tables import User
from appliance.core.config import Settings
from appliance.core.errors import InvalidInput

PASSWORD = "password"  # noqa: S105 - the name of a credential, not one
TOTP = "totp"


def hold_resets(settings: Settings) -> bool:
    """Whether admins' risky resets wait for a second admin (`approvals.required`)."""
    return approvals.needs_approval(settings, approvals.RESET_CREDENTIALS)


def _held(
    session: Session,
    *,
    actor: User,
    target: User,
    kind: str,
    credential: str,
    now: dt.datetime,
    expiry_hours: int,
) -> duties.Held | None:
    duties.lock(session)
    session.refresh(target)
    reason = duties.reset_exposure(session, actor=actor, target=target, kind=credential, now=now)
    if reason is None:
        return None
    return duties.hold(
        session,
        requester=actor,
        kind=kind,
        params={"user_id": target.id},
        now=now,
        expiry_hours=expiry_hours,
        action=f"user.reset_{credential}",
        target=f"user:{target.id}",
        reason=reason,
    )


def reset_password(
    session: Session,
    *,
    user_id: str,
    actor: User,
    now: dt.datetime,
    expiry_hours: int = 72,
    hold: bool = True,
    approval_id: str | None = None,
) -> duties.Held | str:
    """A new one-time password for the account (returned once), or the request holding it.

    With ``approval_id``: redeem that approved request (once, by its requester) and reset.
    """
    target = users.get_user(session, user_id)
    if approval_id is not None:
        req = approvals.redeem(
            session=session,
            request_id=approval_id,
            kind=approvals.RESET_PASSWORD,
            user=actor,
            now=now,
        )
        if approvals.params_of(req).get("user_id") != target.id:
            session.rollback()
            raise InvalidInput(f"Approval request {req.id} is for another account.")
    elif hold:
        held = _held(
            session,
            actor=actor,
            target=target,
            kind=approvals.RESET_PASSWORD,
            credential=PASSWORD,
            now=now,
            expiry_hours=expiry_hours,
        )
        if held is not None:
            return held
    return users.reset_password(session, user_id=target.id, actor=actor.principal, now=now)


def reset_totp(
    session: Session,
    *,
    user_id: str,
    actor: User,
    now: dt.datetime,
    expiry_hours: int = 72,
    hold: bool = True,
) -> duties.Held | User:
    """Forget the account's second factor, or hold that for a second admin."""
    target = users.get_user(session, user_id)
    if hold:
        held = _held(
            session,
            actor=actor,
            target=target,
            kind=approvals.RESET_TOTP,
            credential=TOTP,
            now=now,
            expiry_hours=expiry_hours,
        )
        if held is not None:
            return held
    return users.reset_totp(session, user_id=target.id, actor=actor.principal, now=now)


def reset_totp_approved(
    session: Session, params: dict[str, Any], approver: User, now: dt.datetime
) -> None:
    """Executor of an approved ``reset_totp`` request: the requester's reset, as asked."""
    ctx = approvals.current()
    users.reset_totp(
        session, user_id=str(params["user_id"]), actor=ctx.requester.principal, now=now
    )
