"""Principals and group membership: who a person is, for the ACL, read fresh per request.

A user's principals are ``user:<id>``, ``group:<id>`` for each membership, and
``everyone`` (DESIGN invariant 1). Membership lives here, beside the read rule, because
joining a group is how a person gains read access without a grant of their own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.acl import duties
from appliance.approvals import service as approvals
from appliance.audit import service as audit
from appliance.auth.service import get_group, get_user, get_user_by_name
from appliance.auth.tables import Group, GroupMember, User
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied
from ingest.index import EVERYONE


def principals_for(session: Session, user: User) -> list[str]:
    """A user's principals, read fresh: themselves, each group, and everyone."""
    if not user.is_active:
        return []
    group_ids = session.execute(
        select(GroupMember.group_id).where(GroupMember.user_id == user.id)
    ).scalars()
    return [user.principal, *(f"group:{gid}" for gid in group_ids), EVERYONE]


def resolve_principal(session: Session, text: str) -> str:
    """Turn 'user:NAME', 'group:NAME' or 'everyone' into the stored principal form."""
    text = text.strip()
    if text == EVERYONE:
        return EVERYONE
    kind, _, name = text.partition(":")
    if kind == "user" and name:
        return get_user_by_name(session, name).principal
    if kind == "group" and name:
        group = session.execute(select(Group).where(Group.name == name)).scalar_one_or_none()
        if group is None:
            raise NotFound(f"No group named {name!r}.")
        return f"group:{group.id}"
    raise InvalidInput(f"{text!r} is not a principal. Write user:NAME, group:NAME or everyone.")


def resolve_name(session: Session, text: str) -> str:
    """Like `resolve_principal`, and a bare NAME too when exactly one user or group has it.

    What people type when sharing: `hr` means the group hr when no account is named hr.
    A name both a user and a group have is refused with the two spellings to choose from.
    """
    text = text.strip()
    if text == EVERYONE or ":" in text:
        return resolve_principal(session, text)
    if not text:
        raise InvalidInput("Name a user, a group or everyone.")
    user = session.execute(select(User).where(User.username == text)).scalar_one_or_none()
    group = session.execute(select(Group).where(Group.name == text)).scalar_one_or_none()
    if user is not None and group is not None:
        raise InvalidInput(
            f"{text!r} is both a user and a group. Write user:{text} or group:{text}."
        )
    if user is not None:
        return user.principal
    if group is not None:
        return f"group:{group.id}"
    raise InvalidInput(
        f"No user or group is named {text!r}. Pick a name from the suggestions, or write "
        "user:NAME, group:NAME or everyone."
    )


def principal_names(
    session: Session, *, prefix: str = "", limit: int = 50
) -> list[tuple[str, str]]:
    """Names to pick from when sharing: ("user", username) of active accounts and
    ("group", name) of groups, sorted, starting with `prefix` (any case).

    Names only, never ids, roles, display details or memberships: any signed-in person may
    list them, and a name is all that the grants list and the sign-in bar show already.
    """
    needle = prefix.strip().casefold()
    users = session.execute(
        select(User.username).where(User.is_active.is_(True)).order_by(User.username)
    ).scalars()
    groups = session.execute(select(Group.name).order_by(Group.name)).scalars()
    named = [("user", u) for u in users] + [("group", g) for g in groups]
    picked = [(kind, name) for kind, name in named if name.casefold().startswith(needle)]
    return sorted(picked, key=lambda item: (item[1].casefold(), item[0]))[:limit]


def describe_principal(session: Session, principal: str) -> str:
    """The readable form of a stored principal ('user:alice')."""
    if principal == EVERYONE:
        return EVERYONE
    kind, _, pid = principal.partition(":")
    if kind == "user":
        user = session.get(User, pid)
        return f"user:{user.username}" if user else principal
    if kind == "group":
        group = session.get(Group, pid)
        return f"group:{group.name}" if group else principal
    return principal


# -- membership ---------------------------------------------------------------------------


def add_member(
    session: Session, *, group_id: str, user_id: str, actor: str, approval_id: str | None = None
) -> bool:
    """Add a user to a group; False if already a member.

    For operators and the system (trusted). An admin named as ``user:<id>`` is checked as
    `join` checks them, and refused (audited) where `join` would hold the change.
    """
    result = join(session, group_id=group_id, user_id=user_id, actor=actor, approval_id=approval_id)
    if isinstance(result, duties.Held):
        raise PermissionDenied(
            "Adding this member would let an account whose credentials you set read "
            f"confidential or personal documents; approval request {result.request.id} "
            "now waits for another admin."
        )
    return result


def join(
    session: Session,
    *,
    group_id: str,
    user_id: str,
    actor: duties.Actor,
    now: dt.datetime | None = None,
    expiry_hours: int = 72,
    hold_self_grants: bool = True,
    approval_id: str | None = None,
) -> bool | duties.Held:
    """Add a user to a group, or hold the change for a second admin; False if a member already.

    Joining a group is an indirect grant (DESIGN invariant 4): when an admin adds an account
    of their circle (themselves, or an account whose credentials they set) to a group that
    reads confidential or personal documents it cannot read yet, the change is held for a
    second admin and `Held` is returned (`duties.membership_exposure`, checked under
    `duties.lock` in the transaction that commits the membership). ``hold_self_grants``
    False (`approvals.required` without self_grant_confidential) lets it through, audited.
    """
    group, user = get_group(session, group_id), get_user(session, user_id)
    by = actor.principal if isinstance(actor, User) else actor
    admin = duties.acting_admin(session, actor)
    checked = admin is not None and approval_id is None and hold_self_grants
    if checked:
        duties.lock(session)
    if session.get(GroupMember, (group.id, user.id)) is not None:
        return False
    if admin is not None and checked:
        exposed = duties.membership_exposure(
            session, actor=admin, group_id=group.id, user_id=user.id
        )
        if exposed:
            return duties.hold(
                session,
                requester=admin,
                kind=approvals.ADD_MEMBER,
                params={"group_id": group.id, "user_id": user.id},
                now=now or utcnow(),
                expiry_hours=expiry_hours,
                action="group.add_member",
                target=f"group:{group.id}",
                reason="self_join" if admin.id == user.id else "controlled_account",
                details={"user": user.principal, "documents": len(exposed)},
            )
    session.add(GroupMember(group_id=group.id, user_id=user.id))
    session.flush()
    details = {"user": f"user:{user.id}"}
    if approval_id is not None:
        details["approval"] = approval_id
    audit.record(
        session,
        actor=by,
        action="group.add_member",
        target=f"group:{group.id}",
        details=details,
    )
    return True


def add_member_approved(
    session: Session, params: dict[str, Any], approver: User, now: dt.datetime
) -> None:
    """Executor of an approved ``add_member`` request (see `appliance.wiring`)."""
    ctx = approvals.current()
    join(
        session,
        group_id=str(params["group_id"]),
        user_id=str(params["user_id"]),
        actor=ctx.requester,
        approval_id=ctx.request.id,
    )


def remove_member(session: Session, *, group_id: str, user_id: str, actor: str) -> bool:
    """Remove a user from a group; False if not a member."""
    member = session.get(GroupMember, (group_id, user_id))
    if member is None:
        get_group(session, group_id)
        get_user(session, user_id)
        return False
    session.delete(member)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="group.remove_member",
        target=f"group:{group_id}",
        details={"user": f"user:{user_id}"},
    )
    return True
