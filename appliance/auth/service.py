"""Accounts: lookup, creation, principals."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.auth.passwords import hash_password, one_time_password
from appliance.auth.tables import Group, GroupMember, User
from appliance.errors import Duplicate, InvalidInput, NotFound

EVERYONE = "everyone"


def get_user_by_name(session: Session, username: str) -> User:
    """The user of that name, or NotFound."""
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"No user named {username!r}. List users with `appliance users list`.")
    return user


def first_admin(session: Session) -> User | None:
    """The earliest-created active admin, if any."""
    return session.execute(
        select(User)
        .where(User.role == "admin", User.is_active.is_(True))
        .order_by(User.created_at, User.id)
        .limit(1)
    ).scalar_one_or_none()


def create_user(
    session: Session, *, username: str, role: str = "user", actor: str
) -> tuple[User, str]:
    """Create an account with a one-time password (returned once, stored only hashed)."""
    username = username.strip()
    if not username or len(username) > 64 or not username.isprintable() or ":" in username:
        raise InvalidInput("A username has 1-64 printable characters and no ':'.")
    if role not in ("admin", "user"):
        raise InvalidInput("The role is 'admin' or 'user'.")
    exists = session.execute(select(User.id).where(User.username == username)).first()
    if exists:
        raise Duplicate(f"A user named {username!r} exists already.")
    password = one_time_password()
    user = User(username=username, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    audit.record(
        session, actor=actor, action="user.create", target=f"user:{user.id}", details={"role": role}
    )
    return user, password


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
