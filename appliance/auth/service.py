"""Accounts, groups and the sign-in flow: password, second factor, enrolment, password change.

The sign-in steps return a `Step`: the next stage and the session (pre or full) to hand out.
Failures raise `SignInFailed` with one generic message after counting the failure; the
caller commits before answering, so the count survives the failed request.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.auth import sessions, throttle, tokens, totp
from appliance.auth.passwords import (
    check_policy,
    hash_password,
    needs_rehash,
    one_time_password,
    verify_password,
)
from appliance.auth.tables import AuthSession, Group, GroupMember, RecoveryCode, User
from appliance.config import AuthSettings
from appliance.crypto.envelope import Crypto
from appliance.errors import ApplianceError, Duplicate, InvalidInput, NotFound, PermissionDenied

EVERYONE = "everyone"
GENERIC_FAILURE = (
    "Sign-in failed. Check the username, password and code. After several failures, "
    "wait a few minutes or ask an admin to unlock the account."
)
ROLES = ("admin", "user")
# Where TOTP secrets are encrypted: the system data key for fields, bound to the user.
FIELDS_KIND = "system"
FIELDS_OWNER = "fields"


class NotAuthenticated(ApplianceError):
    """No valid session or API token came with the request."""

    status_code = 401
    code = "not_authenticated"


class SignInFailed(NotAuthenticated):
    """A sign-in step failed; the message never says which part was wrong."""

    code = "sign_in_failed"

    def __init__(self, message: str = GENERIC_FAILURE) -> None:
        super().__init__(message)


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
    session: Session, *, username: str, role: str = "user", actor: str
) -> tuple[User, str]:
    """Create an account with a one-time password (returned once, stored only hashed)."""
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
    """Give a user a new one-time password (returned once); ends sessions and tokens."""
    user = get_user(session, user_id)
    password = one_time_password()
    user.password_hash = hash_password(password)
    user.must_change_password = True
    _end_access(session, user_id=user.id, now=now)
    session.flush()
    audit.record(session, actor=actor, action="user.reset_password", target=f"user:{user.id}")
    return password


def reset_totp(session: Session, *, user_id: str, actor: str, now: dt.datetime) -> User:
    """Forget a user's second factor and recovery codes: they enrol again at next sign-in."""
    user = get_user(session, user_id)
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


def add_member(session: Session, *, group_id: str, user_id: str, actor: str) -> bool:
    """Add a user to a group; False if already a member."""
    group, user = get_group(session, group_id), get_user(session, user_id)
    if session.get(GroupMember, (group.id, user.id)) is not None:
        return False
    if actor == user.principal and _group_reads_sensitive(session, group.id):
        # Joining a group is an indirect self-grant (DESIGN invariant 4): for confidential
        # or personal documents it takes a second admin, who can add this member.
        audit.record(
            session,
            actor=actor,
            action="group.add_member",
            target=f"group:{group.id}",
            outcome="refused",
            details={"user": f"user:{user.id}", "reason": "self_join_sensitive"},
        )
        session.commit()
        raise PermissionDenied(
            f"Group {group.name!r} can read confidential or personal documents, so you cannot "
            "add yourself to it. Ask another admin to add you."
        )
    session.add(GroupMember(group_id=group.id, user_id=user.id))
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="group.add_member",
        target=f"group:{group.id}",
        details={"user": f"user:{user.id}"},
    )
    return True


def _group_reads_sensitive(session: Session, group_id: str) -> bool:
    """Whether the group holds a grant on any confidential or personal document."""
    from appliance.documents.tables import Document, DocumentGrant

    return (
        session.execute(
            select(DocumentGrant.doc_id)
            .join(Document, Document.id == DocumentGrant.doc_id)
            .where(
                DocumentGrant.principal == f"group:{group_id}",
                Document.classification.in_(("confidential", "personal")),
            )
            .limit(1)
        ).first()
        is not None
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


# -- principals ----------------------------------------------------------------------------


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


# -- sign-in -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    """What a person needs to add the account to an authenticator app (shown once)."""

    secret: str
    uri: str
    qr_svg: str


@dataclass(frozen=True)
class Step:
    """The outcome of a sign-in step: what comes next, and the session to hand out."""

    stage: str  # "totp" | "enrol" | "password" | "done"
    user: User
    issued: sessions.Issued
    enrolment: Enrolment | None = None
    recovery_codes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Client:
    """Who is calling: address and user agent, for throttling and the session list."""

    address: str
    user_agent: str | None = None


def _place(user_id: str) -> str:
    return f"user:{user_id}:totp"


def _secret(crypto: Crypto, user: User) -> str:
    if user.totp_secret_enc is None:
        raise SignInFailed()
    plain = crypto.decrypt(FIELDS_KIND, FIELDS_OWNER, _place(user.id), user.totp_secret_enc)
    return plain.decode("ascii")


def _fail(
    session: Session,
    *,
    username: str,
    user: User | None,
    client: Client,
    now: dt.datetime,
    settings: AuthSettings,
    reason: str,
) -> SignInFailed:
    """Count and audit a failure; return the generic error for the caller to raise."""
    locked = throttle.record_failure(
        session, username=username, client=client.address, now=now, settings=settings
    )
    actor = f"user:{user.id}" if user is not None else "anonymous"
    audit.record(
        session,
        actor=actor,
        action="auth.failure",
        target=f"user:{user.id}" if user is not None else None,
        outcome="denied",
        client=client.address,
        details={"reason": reason},
    )
    for key in locked:
        audit.record(
            session,
            actor="system",
            action="auth.lockout",
            target=(f"user:{user.id}" if user is not None and key.startswith("account:") else None),
            outcome="locked",
            client=client.address,
            details={"scope": key.split(":", 1)[0], "minutes": settings.lockout_minutes},
        )
    return SignInFailed()


def _next_stage(
    session: Session,
    *,
    crypto: Crypto,
    user: User,
    after_password: bool,
    now: dt.datetime,
    settings: AuthSettings,
    client: Client,
) -> Step:
    """Issue the session for whatever the user must do next."""
    enrolment = None
    if after_password and user.totp_enrolled:
        stage = "totp"
    elif after_password:
        stage = "enrol"
        secret = totp.new_secret()
        crypto.create_data_key(FIELDS_KIND, FIELDS_OWNER)
        user.totp_secret_enc = crypto.encrypt(
            FIELDS_KIND, FIELDS_OWNER, _place(user.id), secret.encode("ascii")
        )
        uri = totp.provisioning_uri(secret, username=user.username, issuer=settings.totp_issuer)
        enrolment = Enrolment(secret=secret, uri=uri, qr_svg=totp.qr_svg(uri))
    elif user.must_change_password:
        stage = "password"
    else:
        stage = "done"
    issued = sessions.issue(
        session,
        user_id=user.id,
        kind=sessions.FULL if stage == "done" else sessions.PRE,
        stage=None if stage == "done" else stage,
        now=now,
        settings=settings,
        client=client.address,
        user_agent=client.user_agent,
    )
    if stage == "done":
        throttle.clear_account(session, username=user.username)
        audit.record(
            session,
            actor=f"user:{user.id}",
            action="auth.login",
            target=f"session:{issued.row.id}",
            client=client.address,
        )
    return Step(stage=stage, user=user, issued=issued, enrolment=enrolment)


def sign_in_password(
    session: Session,
    *,
    crypto: Crypto,
    username: str,
    password: str,
    client: Client,
    now: dt.datetime,
    settings: AuthSettings,
) -> Step:
    """First step: check the password; then a pre session for the second factor."""
    if throttle.is_blocked(
        session, username=username, client=client.address, now=now, settings=settings
    ):
        raise _throttled(session, client=client)
    user = session.execute(
        select(User).where(func.lower(User.username) == username.strip().lower())
    ).scalar_one_or_none()
    ok = verify_password(user.password_hash if user is not None else None, password)
    if user is None or not ok or not user.is_active:
        raise _fail(
            session,
            username=username,
            user=user,
            client=client,
            now=now,
            settings=settings,
            reason="password" if user is None or not ok else "disabled",
        )
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return _next_stage(
        session,
        crypto=crypto,
        user=user,
        after_password=True,
        now=now,
        settings=settings,
        client=client,
    )


def _throttled(session: Session, *, client: Client) -> SignInFailed:
    """Audit a refused attempt (not counted, so a lockout is not extended)."""
    audit.record(
        session,
        actor="anonymous",
        action="auth.failure",
        outcome="denied",
        client=client.address,
        details={"reason": "throttled"},
    )
    return SignInFailed()


def pre_session_user(session: Session, pre: AuthSession, stage: str) -> User:
    """The user of a pre session that is at `stage`; SignInFailed otherwise."""
    user = session.get(User, pre.user_id)
    if pre.kind != sessions.PRE or pre.stage != stage or user is None or not user.is_active:
        raise SignInFailed("This sign-in step is not pending. Start again with your password.")
    return user


def consume_step(session: Session, *, user_id: str, step: int) -> bool:
    """Record a TOTP time step as used; exactly one of concurrent callers gets True."""
    result = session.execute(
        update(User)
        .where(User.id == user_id, User.totp_last_step < step)
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def consume_recovery_code(session: Session, *, user_id: str, code: str, now: dt.datetime) -> bool:
    """Use one of the user's unused recovery codes; each works once."""
    unused = session.execute(
        select(RecoveryCode).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    ).scalars()
    for row in unused:
        if totp.recovery_code_matches(row.code_hash, code):
            result = session.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None))
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            )
            return getattr(result, "rowcount", 0) == 1
    return False


def sign_in_second_factor(
    session: Session,
    *,
    crypto: Crypto,
    pre: AuthSession,
    code: str | None,
    recovery_code: str | None,
    client: Client,
    now: dt.datetime,
    settings: AuthSettings,
) -> Step:
    """Second step: a TOTP code (each accepted once) or a recovery code (each used once)."""
    user = pre_session_user(session, pre, "totp")
    if throttle.is_blocked(
        session, username=user.username, client=client.address, now=now, settings=settings
    ):
        raise _throttled(session, client=client)
    if code:
        step = totp.match_step(
            _secret(crypto, user), code, now.timestamp(), drift=settings.totp_drift_steps
        )
        ok = step is not None and consume_step(session, user_id=user.id, step=step)
        reason = "totp"
    elif recovery_code:
        ok = consume_recovery_code(session, user_id=user.id, code=recovery_code, now=now)
        reason = "recovery_code"
    else:
        raise InvalidInput("Send a code from the authenticator app, or a recovery code.")
    if not ok:
        raise _fail(
            session,
            username=user.username,
            user=user,
            client=client,
            now=now,
            settings=settings,
            reason=reason,
        )
    if recovery_code:
        left = session.execute(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        ).scalar_one()
        audit.record(
            session,
            actor=f"user:{user.id}",
            action="auth.recovery_code",
            target=f"user:{user.id}",
            client=client.address,
            details={"remaining": left},
        )
    sessions.end(session, session_id=pre.id)
    return _next_stage(
        session,
        crypto=crypto,
        user=user,
        after_password=False,
        now=now,
        settings=settings,
        client=client,
    )


def confirm_enrolment(
    session: Session,
    *,
    crypto: Crypto,
    pre: AuthSession,
    code: str,
    client: Client,
    now: dt.datetime,
    settings: AuthSettings,
) -> Step:
    """Finish enrolment with a valid code; returns ten recovery codes (shown once)."""
    user = pre_session_user(session, pre, "enrol")
    if throttle.is_blocked(
        session, username=user.username, client=client.address, now=now, settings=settings
    ):
        raise _throttled(session, client=client)
    step = totp.match_step(
        _secret(crypto, user), code, now.timestamp(), drift=settings.totp_drift_steps
    )
    if step is None or not consume_step(session, user_id=user.id, step=step):
        raise _fail(
            session,
            username=user.username,
            user=user,
            client=client,
            now=now,
            settings=settings,
            reason="enrol",
        )
    user.totp_enrolled = True
    codes = totp.new_recovery_codes()
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    session.add_all(
        RecoveryCode(user_id=user.id, code_hash=totp.hash_recovery_code(c), created_at=now)
        for c in codes
    )
    sessions.end(session, session_id=pre.id)
    session.flush()
    audit.record(
        session,
        actor=f"user:{user.id}",
        action="auth.totp_enrol",
        target=f"user:{user.id}",
        client=client.address,
    )
    step_result = _next_stage(
        session,
        crypto=crypto,
        user=user,
        after_password=False,
        now=now,
        settings=settings,
        client=client,
    )
    return Step(
        stage=step_result.stage,
        user=user,
        issued=step_result.issued,
        recovery_codes=codes,
    )


def change_password(
    session: Session,
    *,
    user: User,
    old: str,
    new: str,
    client: Client,
    now: dt.datetime,
    settings: AuthSettings,
) -> Step:
    """Change a password (old one required); ends every session, then signs this one in."""
    if throttle.is_blocked(
        session, username=user.username, client=client.address, now=now, settings=settings
    ):
        raise _throttled(session, client=client)
    if not verify_password(user.password_hash, old):
        raise _fail(
            session,
            username=user.username,
            user=user,
            client=client,
            now=now,
            settings=settings,
            reason="password_change",
        )
    check_policy(new, username=user.username)
    if verify_password(user.password_hash, new):
        raise InvalidInput("The new password must differ from the current one.")
    user.password_hash = hash_password(new)
    user.must_change_password = False
    user.password_changed_at = now
    sessions.end_all(session, user_id=user.id)
    session.flush()
    audit.record(
        session,
        actor=f"user:{user.id}",
        action="auth.password_change",
        target=f"user:{user.id}",
        client=client.address,
    )
    issued = sessions.issue(
        session,
        user_id=user.id,
        kind=sessions.FULL,
        stage=None,
        now=now,
        settings=settings,
        client=client.address,
        user_agent=client.user_agent,
    )
    return Step(stage="done", user=user, issued=issued)


def sign_out(session: Session, *, row: AuthSession, client: Client) -> None:
    """End the caller's session."""
    sessions.end(session, session_id=row.id)
    audit.record(
        session,
        actor=f"user:{row.user_id}",
        action="auth.logout",
        target=f"session:{row.id}",
        client=client.address,
    )


def recovery_codes_left(session: Session, *, user_id: str) -> int:
    """How many unused recovery codes a user has."""
    return int(
        session.execute(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        ).scalar_one()
    )
