"""HTTP API for account administration: users and groups (admins only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Depends, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.acl import credentials, duties
from appliance.acl.principals import join, remove_member
from appliance.approvals import service as approvals
from appliance.approvals.routes import shaped
from appliance.approvals.schemas import ApprovalRequestOut
from appliance.approvals.tables import PENDING, ApprovalRequest
from appliance.auth import service, throttle
from appliance.auth.routes import user_out
from appliance.auth.schemas import (
    AdminUserOut,
    ChangedOut,
    GroupIn,
    GroupOut,
    GroupRef,
    MemberIn,
    MemberRef,
    OneTimePasswordOut,
    UserCreatedOut,
    UserCreateIn,
    UserPatchIn,
)
from appliance.auth.tables import Group, GroupMember, User
from appliance.core.places import CHAT_KEY
from appliance.core.runtime import Runtime
from appliance.deps import (
    AdminUser,
    NowDep,
    RuntimeDep,
    SessionDep,
    admin_user,
    protected_router,
)

admin_router = protected_router(
    prefix="/api/admin", tags=["admin"], dependencies=[Depends(admin_user)]
)


HELD: dict[int | str, dict[str, Any]] = {
    202: {"model": ApprovalRequestOut, "description": "Held for a second admin."}
}


def _held(session: Session, rt: Runtime, admin: User, held: duties.Held) -> JSONResponse:
    out = shaped(session, rt, admin, held.request)
    return JSONResponse(out.model_dump(mode="json"), status_code=202)


def _groups_of(session: Session, user_id: str) -> list[GroupRef]:
    rows = session.execute(
        select(Group)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .where(GroupMember.user_id == user_id)
        .order_by(Group.name)
    ).scalars()
    return [GroupRef(id=g.id, name=g.name) for g in rows]


def _pending_admin(session: Session, user_id: str, now: dt.datetime) -> str | None:
    return session.execute(
        select(ApprovalRequest.id)
        .where(
            ApprovalRequest.kind == approvals.MAKE_ADMIN,
            ApprovalRequest.target == f"user:{user_id}",
            ApprovalRequest.status == PENDING,
            ApprovalRequest.expires_at > now,
        )
        .limit(1)
    ).scalar_one_or_none()


def _admin_user_out(session: Session, user: User, now: dt.datetime) -> AdminUserOut:
    return AdminUserOut(
        **user_out(user).model_dump(),
        locked_until=throttle.account_locked_until(session, username=user.username, now=now),
        groups=_groups_of(session, user.id),
        pending_admin=None if user.is_admin else _pending_admin(session, user.id, now),
    )


@admin_router.get("/users")
def admin_list_users(session: SessionDep, now: NowDep) -> list[AdminUserOut]:
    """Every account, with its lockout state."""
    return [_admin_user_out(session, u, now) for u in service.list_users(session)]


@admin_router.post("/users", status_code=201)
def admin_create_user(
    body: UserCreateIn, admin: AdminUser, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> UserCreatedOut:
    """Create an account. The one-time password is shown once; the person changes it and
    enrols an authenticator app at first sign-in.

    Making someone admin needs a second admin's approval (`approvals.required` holds
    `make_admin` by default): an account asked for as admin is created as a user, and
    `approval_id` names the request that makes it admin once another admin approves."""
    held = body.role == "admin" and approvals.needs_approval(rt.settings, approvals.MAKE_ADMIN)
    user, password = service.create_user(
        session,
        username=body.username,
        role="user" if held else body.role,
        actor=admin.principal,
        now=now,
    )
    approval_id = None
    if held:
        approval_id = _request_make_admin(session, rt, admin, user.id, now).id
    session.commit()
    return UserCreatedOut(
        user=_admin_user_out(session, user, now),
        one_time_password=password,
        approval_id=approval_id,
        waiting_note=approvals.second_admin_note(session, admin) if held else None,
    )


def _request_make_admin(
    session: Session, rt: Runtime, admin: User, user_id: str, now: dt.datetime
) -> ApprovalRequest:
    return approvals.request(
        session=session,
        kind=approvals.MAKE_ADMIN,
        target=f"user:{user_id}",
        params={"user_id": user_id},
        requester=admin,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
    )


@admin_router.get("/users/{user_id}")
def admin_get_user(user_id: str, session: SessionDep, now: NowDep) -> AdminUserOut:
    """One account."""
    return _admin_user_out(session, service.get_user(session, user_id), now)


@admin_router.patch(
    "/users/{user_id}",
    response_model=AdminUserOut,
    responses={202: {"model": ApprovalRequestOut, "description": "Held for a second admin."}},
)
def admin_set_role(
    user_id: str,
    body: UserPatchIn,
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> AdminUserOut | JSONResponse:
    """Change an account's role. The last active admin cannot be demoted.

    Making someone admin needs a second admin's approval by default (`approvals.required`):
    the answer is then 202 with the approval request, and the role changes once another
    admin approves it (`POST /api/admin/approvals/{id}/approve`)."""
    user = service.get_user(session, user_id)
    if (
        body.role == "admin"
        and user.role != "admin"
        and approvals.needs_approval(rt.settings, approvals.MAKE_ADMIN)
    ):
        req = _request_make_admin(session, rt, admin, user.id, now)
        session.commit()
        out = shaped(session, rt, admin, req)
        return JSONResponse(out.model_dump(mode="json"), status_code=202)
    user = service.set_role(session, user_id=user_id, role=body.role, actor=f"user:{admin.id}")
    session.commit()
    return _admin_user_out(session, user, now)


@admin_router.post("/users/{user_id}/disable")
def admin_disable(user_id: str, admin: AdminUser, session: SessionDep, now: NowDep) -> AdminUserOut:
    """Disable an account: its sessions and API tokens end at once. Not the last admin."""
    user = service.set_active(
        session, user_id=user_id, active=False, actor=f"user:{admin.id}", now=now
    )
    session.commit()
    return _admin_user_out(session, user, now)


@admin_router.post("/users/{user_id}/enable")
def admin_enable(user_id: str, admin: AdminUser, session: SessionDep, now: NowDep) -> AdminUserOut:
    """Enable a disabled account."""
    user = service.set_active(
        session, user_id=user_id, active=True, actor=f"user:{admin.id}", now=now
    )
    session.commit()
    return _admin_user_out(session, user, now)


@admin_router.post(
    "/users/{user_id}/reset-password", response_model=OneTimePasswordOut, responses=HELD
)
def admin_reset_password(
    user_id: str,
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
    approval_id: Annotated[
        str | None,
        Query(max_length=32, description="The approved request of this reset, used once."),
    ] = None,
) -> OneTimePasswordOut | JSONResponse:
    """Give the account a new one-time password (shown once); its sessions and tokens end.

    Separation of duties (`approvals.required` lists reset_credentials by default): resetting
    another admin's password, or a password that would let you sign in as an account that
    reads confidential or personal documents or has chat history, answers 202 with an
    approval request. Once another admin (not the account itself, nor one whose credentials
    you set) approves it, send this again with `?approval_id=` to get the password, once."""
    result = credentials.reset_password(
        session,
        user_id=user_id,
        actor=admin,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        hold=credentials.hold_resets(rt.settings),
        approval_id=approval_id,
    )
    if isinstance(result, duties.Held):
        return _held(session, rt, admin, result)
    session.commit()
    return OneTimePasswordOut(one_time_password=result)


@admin_router.post("/users/{user_id}/reset-totp", response_model=AdminUserOut, responses=HELD)
def admin_reset_totp(
    user_id: str, admin: AdminUser, session: SessionDep, rt: RuntimeDep, now: NowDep
) -> AdminUserOut | JSONResponse:
    """Forget the account's authenticator and recovery codes; it enrols again at next
    sign-in. Its sessions and tokens end at once.

    Held (202, an approval request) like a password reset when it would let you sign in as
    another admin or as an account that reads confidential or personal documents or has
    chat history; the reset runs when another admin approves it."""
    result = credentials.reset_totp(
        session,
        user_id=user_id,
        actor=admin,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        hold=credentials.hold_resets(rt.settings),
    )
    if isinstance(result, duties.Held):
        return _held(session, rt, admin, result)
    session.commit()
    return _admin_user_out(session, result, now)


@admin_router.post("/users/{user_id}/unlock")
def admin_unlock(user_id: str, admin: AdminUser, session: SessionDep) -> ChangedOut:
    """Lift the account's sign-in lockout."""
    changed = service.unlock(session, user_id=user_id, actor=f"user:{admin.id}")
    session.commit()
    return ChangedOut(changed=changed)


@admin_router.delete("/users/{user_id}", status_code=204)
def admin_delete_user(user_id: str, admin: AdminUser, session: SessionDep, rt: RuntimeDep) -> None:
    """Delete an account and its conversations (their key is shredded, backups included).

    Not the last admin, nor one that still owns documents.
    """
    service.delete_user(session, user_id=user_id, actor=f"user:{admin.id}")
    session.commit()
    rt.crypto.delete_data_key(CHAT_KEY, user_id)


def _group_out(session: Session, group: Group) -> GroupOut:
    members = service.group_members(session, group.id)
    return GroupOut(
        id=group.id,
        name=group.name,
        members=[MemberRef(id=u.id, username=u.username) for u in members],
    )


@admin_router.get("/groups")
def admin_list_groups(session: SessionDep) -> list[GroupOut]:
    """Every group and its members."""
    return [_group_out(session, g) for g, _ in service.list_groups(session)]


@admin_router.post("/groups", status_code=201)
def admin_create_group(body: GroupIn, admin: AdminUser, session: SessionDep) -> GroupOut:
    """Create a group."""
    group = service.create_group(session, name=body.name, actor=f"user:{admin.id}")
    session.commit()
    return _group_out(session, group)


@admin_router.get("/groups/{group_id}")
def admin_get_group(group_id: str, session: SessionDep) -> GroupOut:
    """One group and its members."""
    return _group_out(session, service.get_group(session, group_id))


@admin_router.delete("/groups/{group_id}", status_code=204)
def admin_delete_group(group_id: str, admin: AdminUser, session: SessionDep) -> None:
    """Delete a group; its grants stop applying at once."""
    service.delete_group(session, group_id=group_id, actor=f"user:{admin.id}")
    session.commit()


@admin_router.post("/groups/{group_id}/members", response_model=GroupOut, responses=HELD)
def admin_add_member(
    group_id: str,
    body: MemberIn,
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
) -> GroupOut | JSONResponse:
    """Add a user to a group.

    Adding yourself, or an account whose credentials you set, to a group that reads
    confidential or personal documents the account cannot read yet answers 202 with an
    approval request: the member is added when another admin approves it."""
    result = join(
        session,
        group_id=group_id,
        user_id=body.user_id,
        actor=admin,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        hold_self_grants=approvals.needs_approval(rt.settings, approvals.SELF_GRANT_CONFIDENTIAL),
    )
    if isinstance(result, duties.Held):
        return _held(session, rt, admin, result)
    session.commit()
    return _group_out(session, service.get_group(session, group_id))


@admin_router.delete("/groups/{group_id}/members/{user_id}")
def admin_remove_member(
    group_id: str, user_id: str, admin: AdminUser, session: SessionDep
) -> GroupOut:
    """Remove a user from a group; what they could read through it is gone at once."""
    remove_member(session, group_id=group_id, user_id=user_id, actor=f"user:{admin.id}")
    session.commit()
    return _group_out(session, service.get_group(session, group_id))
