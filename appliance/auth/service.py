"""Accounts and groups: create, list, disable, roles, credential resets, group CRUD.

Group *membership* lives in `appliance.acl.principals` (it decides what a person may read);
the sign-in flow lives in `appliance.auth.signin`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.auth import provenance, sessions, throttle, tokens
from appliance.auth.passwords import (
    hash_password,
    one_time_password,
)
from appliance.auth.tables import Group, GroupMember, RecoveryCode, User
from appliance.core.db import utcnow
from appliance.core.errors import (
    Duplicate,
    InvalidInput,
    NotFound,
    PermissionDenied,
)

ROLES = ("admin", "user")


# -- accounts ------------------------------------------------------------------------------


def get_user_by_name(session: Session, username: str) -> User:
    """The user of that name, or NotFound."""
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"No user named {username!r}. List users with `appliance users list`.")
    return user


def get_user(session: Session, user_id: str) -> User:
    """The user with that id, or NotFound."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("No such user. List users with GET /api/admin/users.")
    return user


def first_admin(session: Session) -> User | None:
    """The earliest-created active admin, if any."""
    return session.execute(
        select(User)
        .where(User.role == "admin", User.is_active.is_(True))
        .order_by(User.created_at, User.id)
        .limit(1)
    ).scalar_one_or_none()


def list_users(session: Session) -> list[User]:
    """Every account, by name."""
    return list(session.execute(select(User).order_by(User.username)).scalars())


def create_user(
    session: Session,
    *,
    username: str,
    role: str = "user",
    actor: str,
    now: dt.datetime | None = None,
) -> tuple[User, str]:
    """Create an account with a one-time password (returned once, stored only hashed).

    The actor is recorded as the one who set its credentials (`appliance.auth.provenance`).
    """
    username = username.strip()
    if not username or len(username) > 64 or not username.isprintable() or ":" in username:
        raise InvalidInput("A username has 1-64 printable characters and no ':'.")
    if role not in ROLES:
        raise InvalidInput("The role is 'admin' or 'user'.")
    exists = session.execute(
        select(User.id).where(func.lower(User.username) == username.lower())
    ).first()
    if exists:
        raise Duplicate(f"A user named {username!r} exists already.")
    password = one_time_password()
    user = User(username=username, role=role, password_hash=hash_password(password))
    provenance.record_created(user, by=actor, now=now or utcnow())
    session.add(user)
    session.flush()
    audit.record(
        session, actor=actor, action="user.create", target=f"user:{user.id}", details={"role": role}
    )
    return user, password


def _other_active_admins(session: Session, user_id: str) -> int:
    """Active admins other than this one, rows locked on PostgreSQL against a racing change."""
    rows = session.execute(
        select(User.id)
        .where(User.role == "admin", User.is_active.is_(True), User.id != user_id)
        .with_for_update()
    ).all()
    return len(rows)


def _refuse_last_admin(session: Session, user: User, what: str) -> None:
    if user.is_admin and user.is_active and _other_active_admins(session, user.id) == 0:
        raise PermissionDenied(
            f"{user.username} is the last active admin and cannot be {what}. "
            "Make another user admin first."
        )


def _end_access(session: Session, *, user_id: str, now: dt.datetime) -> None:
    """End every session and API token of a user at once."""
    sessions.end_all(session, user_id=user_id)
    tokens.revoke_all(session, user_id=user_id, now=now)


def set_active(
    session: Session, *, user_id: str, active: bool, actor: str, now: dt.datetime
) -> User:
    """Disable (ending sessions and tokens at once) or enable an account."""
    user = get_user(session, user_id)
    if not active:
        _refuse_last_admin(session, user, "disabled")
        _end_access(session, user_id=user.id, now=now)
    user.is_active = active
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.enable" if active else "user.disable",
        target=f"user:{user.id}",
    )
    return user


def set_role(session: Session, *, user_id: str, role: str, actor: str) -> User:
    """Make a user admin or user; the last active admin cannot be demoted."""
    if role not in ROLES:
        raise InvalidInput("The role is 'admin' or 'user'.")
    user = get_user(session, user_id)
    if user.role == role:
        return user
    if role != "admin":
        _refuse_last_admin(session, user, "demoted")
    user.role = role
    session.flush()
    audit.record(
        session, actor=actor, action="user.role", target=f"user:{user.id}", details={"role": role}
    )
    return user


def reset_password(session: Session, *, user_id: str, actor: str, now: dt.datetime) -> str:
    """Give a user a new one-time password (returned once); ends sessions and tokens.

    Whether an admin may do this alone is decided above (`appliance.acl.duties`); this
    records the actor as the one who set the password (`appliance.auth.provenance`).
    """
    user = get_user(session, user_id)
    provenance.record_password_reset(user, by=actor, now=now)
    password = one_time_password()
    user.password_hash = hash_password(password)
    user.must_change_password = True
    _end_access(session, user_id=user.id, now=now)
    session.flush()
    audit.record(session, actor=actor, action="user.reset_password", target=f"user:{user.id}")
    return password


def reset_totp(session: Session, *, user_id: str, actor: str, now: dt.datetime) -> User:
    """Forget a user's second factor and recovery codes: they enrol again at next sign-in.

    Recorded as a reset by the actor (`appliance.auth.provenance`).
    """
    user = get_user(session, user_id)
    provenance.record_totp_reset(user, by=actor, now=now)
    user.totp_secret_enc = None
    user.totp_enrolled = False
    # totp_last_step is kept: it only grows, so no old code can ever be replayed.
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    _end_access(session, user_id=user.id, now=now)
    session.flush()
    audit.record(session, actor=actor, action="user.reset_totp", target=f"user:{user.id}")
    return user


def unlock(session: Session, *, user_id: str, actor: str) -> bool:
    """Lift an account's lockout and forget its failures."""
    user = get_user(session, user_id)
    cleared = throttle.clear_account(session, username=user.username)
    audit.record(session, actor=actor, action="user.unlock", target=f"user:{user.id}")
    return cleared


def delete_user(session: Session, *, user_id: str, actor: str) -> None:
    """Delete an account (not the last active admin, nor one that still owns documents)."""
    user = get_user(session, user_id)
    _refuse_last_admin(session, user, "deleted")
    target = f"user:{user.id}"
    session.delete(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise InvalidInput(
            f"{user.username} still owns documents. Delete them or give them to someone "
            "else first, or disable the account instead."
        ) from exc
    audit.record(session, actor=actor, action="user.delete", target=target)


# -- groups --------------------------------------------------------------------------------


def get_group(session: Session, group_id: str) -> Group:
    """The group with that id, or NotFound."""
    group = session.get(Group, group_id)
    if group is None:
        raise NotFound("No such group. List groups with GET /api/admin/groups.")
    return group


def get_group_by_name(session: Session, name: str) -> Group:
    """The group of that name, or NotFound."""
    group = session.execute(select(Group).where(Group.name == name)).scalar_one_or_none()
    if group is None:
        raise NotFound(f"No group named {name!r}. List groups with `appliance groups list`.")
    return group


def list_groups(session: Session) -> list[tuple[Group, list[User]]]:
    """Every group with its members, by name."""
    groups = session.execute(select(Group).order_by(Group.name)).scalars().all()
    return [(g, group_members(session, g.id)) for g in groups]


def group_members(session: Session, group_id: str) -> list[User]:
    """The members of a group, by name."""
    return list(
        session.execute(
            select(User)
            .join(GroupMember, GroupMember.user_id == User.id)
            .where(GroupMember.group_id == group_id)
            .order_by(User.username)
        ).scalars()
    )


def create_group(session: Session, *, name: str, actor: str) -> Group:
    """Create a group."""
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable() or ":" in name:
        raise InvalidInput("A group name has 1-64 printable characters and no ':'.")
    if session.execute(select(Group.id).where(Group.name == name)).first():
        raise Duplicate(f"A group named {name!r} exists already.")
    group = Group(name=name)
    session.add(group)
    session.flush()
    audit.record(session, actor=actor, action="group.create", target=f"group:{group.id}")
    return group


def delete_group(session: Session, *, group_id: str, actor: str) -> None:
    """Delete a group and its memberships."""
    group = get_group(session, group_id)
    session.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
    session.delete(group)
    session.flush()
    audit.record(session, actor=actor, action="group.delete", target=f"group:{group_id}")


def principal_name(session: Session, kind: str, ident: str) -> str | None:
    """The name behind a recorded ``user:<id>`` or ``group:<id>``; None once it is gone."""
    if kind == "user":
        user = session.get(User, ident)
        return user.username if user is not None else None
    if kind == "group":
        group = session.get(Group, ident)
        return group.name if group is not None else None
    return None
