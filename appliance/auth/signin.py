"""The sign-in flow: password, second factor, enrolment, password change, sign-out.

The sign-in steps return a `Step`: the next stage and the session (pre or full) to hand out.
Each step first passes the throttle, which counts the attempt and commits before the
credential is checked (see `throttle`); a right credential takes the count back. Failures
raise `SignInFailed` with one generic message; the caller commits before answering, so the
failure's audit entry and lockout survive the failed request.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.auth import sessions, throttle, tokens, totp
from appliance.auth.passwords import (
    check_policy,
    hash_password,
    needs_rehash,
    verify_password,
)
from appliance.auth.tables import AuthSession, RecoveryCode, User
from appliance.core import places
from appliance.core.config import AuthSettings
from appliance.core.crypto import Crypto
from appliance.core.errors import (
    GENERIC_SIGN_IN_FAILURE,
    InvalidInput,
    SignInFailed,
)
from appliance.core.places import FIELDS_KIND, FIELDS_OWNER

GENERIC_FAILURE = GENERIC_SIGN_IN_FAILURE
# After the password was accepted, saying that the code was wrong reveals nothing new.
WRONG_CODE = (
    "The code was wrong. Enter the code your authenticator app shows now (it changes every "
    "30 seconds), or use a recovery code."
)
WRONG_RECOVERY_CODE = "That recovery code is wrong or was used already. Check it and try again."


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


def _secret(crypto: Crypto, user: User) -> str:
    if user.totp_secret_enc is None:
        raise SignInFailed()
    plain = crypto.decrypt(
        FIELDS_KIND, FIELDS_OWNER, places.totp_secret(user.id), user.totp_secret_enc
    )
    return plain.decode("ascii")


def _admit(
    session: Session, *, username: str, client: Client, now: dt.datetime, settings: AuthSettings
) -> throttle.Admission:
    """Pass the throttle (the attempt is counted and committed at once), or fail."""
    admission = throttle.admit(
        session, username=username, client=client.address, now=now, settings=settings
    )
    if admission is None:
        raise _throttled(session, client=client)
    return admission


def _fail(
    session: Session,
    *,
    admission: throttle.Admission,
    user: User | None,
    client: Client,
    now: dt.datetime,
    settings: AuthSettings,
    reason: str,
    message: str = GENERIC_FAILURE,
) -> SignInFailed:
    """Settle and audit a failure; return the error (generic unless the step allows more)
    for the caller to raise."""
    locked = throttle.record_failure(session, admission, now=now, settings=settings)
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
    return SignInFailed(message if not locked else GENERIC_FAILURE)


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
            FIELDS_KIND, FIELDS_OWNER, places.totp_secret(user.id), secret.encode("ascii")
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
    admission = _admit(session, username=username, client=client, now=now, settings=settings)
    user = session.execute(
        select(User).where(func.lower(User.username) == username.strip().lower())
    ).scalar_one_or_none()
    ok = verify_password(user.password_hash if user is not None else None, password)
    if user is None or not ok or not user.is_active:
        raise _fail(
            session,
            admission=admission,
            user=user,
            client=client,
            now=now,
            settings=settings,
            reason="password" if user is None or not ok else "disabled",
        )
    throttle.refund(session, admission)
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


def _totp_step(
    session: Session,
    *,
    crypto: Crypto,
    user: User,
    code: str,
    now: dt.datetime,
    settings: AuthSettings,
) -> tuple[bool, bool]:
    """Check a TOTP code and use its time step: (accepted, matched a step at all)."""
    step = totp.match_step(
        _secret(crypto, user), code, now.timestamp(), drift=settings.totp_drift_steps
    )
    return step is not None and consume_step(session, user_id=user.id, step=step), step is not None


def _replace_recovery_codes(session: Session, *, user_id: str, now: dt.datetime) -> list[str]:
    """Ten new recovery codes for a user (stored hashed); the old ones stop working."""
    codes = totp.new_recovery_codes()
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    session.add_all(
        RecoveryCode(user_id=user_id, code_hash=totp.hash_recovery_code(c), created_at=now)
        for c in codes
    )
    session.flush()
    return codes


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
    if not code and not recovery_code:
        raise InvalidInput("Send a code from the authenticator app, or a recovery code.")
    admission = _admit(session, username=user.username, client=client, now=now, settings=settings)
    if code:
        ok, matched = _totp_step(
            session, crypto=crypto, user=user, code=code, now=now, settings=settings
        )
        reason = "totp"
        # A code that matches no time step was mistyped or read late: say so. A replayed
        # code (right, but used already) keeps the generic answer.
        message = GENERIC_FAILURE if matched else WRONG_CODE
    else:
        assert recovery_code is not None  # noqa: S101 - checked before the throttle
        ok = consume_recovery_code(session, user_id=user.id, code=recovery_code, now=now)
        reason = "recovery_code"
        message = WRONG_RECOVERY_CODE
    if not ok:
        raise _fail(
            session,
            admission=admission,
            user=user,
            client=client,
            now=now,
            settings=settings,
            reason=reason,
            message=message,
        )
    throttle.refund(session, admission)
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
    admission = _admit(session, username=user.username, client=client, now=now, settings=settings)
    ok, _ = _totp_step(session, crypto=crypto, user=user, code=code, now=now, settings=settings)
    if not ok:
        raise _fail(
            session,
            admission=admission,
            user=user,
            client=client,
            now=now,
            settings=settings,
            reason="enrol",
        )
    throttle.refund(session, admission)
    user.totp_enrolled = True
    codes = _replace_recovery_codes(session, user_id=user.id, now=now)
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
    """Change a password (old one required); ends every session and API token of the
    account, then signs this browser in."""
    # Checked before the throttle: they need no secret, and a refusal must not count.
    # Once `old` is verified, `new` equals the current password exactly when it equals `old`.
    check_policy(new, username=user.username)
    if new == old:
        raise InvalidInput("The new password must differ from the current one.")
    admission = _admit(session, username=user.username, client=client, now=now, settings=settings)
    if not verify_password(user.password_hash, old):
        raise _fail(
            session,
            admission=admission,
            user=user,
            client=client,
            now=now,
            settings=settings,
            reason="password_change",
        )
    throttle.refund(session, admission)
    user.password_hash = hash_password(new)
    user.must_change_password = False
    user.password_changed_at = now
    ended = sessions.end_all(session, user_id=user.id)
    revoked = tokens.revoke_all(session, user_id=user.id, now=now)
    session.flush()
    audit.record(
        session,
        actor=f"user:{user.id}",
        action="auth.password_change",
        target=f"user:{user.id}",
        client=client.address,
        details={"sessions_ended": ended, "tokens_revoked": revoked},
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


def new_recovery_codes(
    session: Session,
    *,
    crypto: Crypto,
    user: User,
    code: str | None,
    password: str | None,
    client: Client,
    now: dt.datetime,
    settings: AuthSettings,
) -> list[str]:
    """Replace a signed-in user's recovery codes, proved by a current TOTP code (accepted
    once, as at sign-in) or the password; throttled and audited like a sign-in step."""
    if not code and not password:
        raise InvalidInput("Send a code from the authenticator app, or your password.")
    admission = _admit(session, username=user.username, client=client, now=now, settings=settings)
    if code:
        ok, _ = _totp_step(session, crypto=crypto, user=user, code=code, now=now, settings=settings)
        message, proof = WRONG_CODE, "totp"
    else:
        assert password is not None  # noqa: S101 - checked before the throttle
        ok = verify_password(user.password_hash, password)
        message, proof = "The password was wrong. Try again.", "password"
    if not ok:
        raise _fail(
            session,
            admission=admission,
            user=user,
            client=client,
            now=now,
            settings=settings,
            reason=f"recovery_codes_{proof}",
            message=message,
        )
    throttle.refund(session, admission)
    codes = _replace_recovery_codes(session, user_id=user.id, now=now)
    audit.record(
        session,
        actor=f"user:{user.id}",
        action="auth.recovery_codes",
        target=f"user:{user.id}",
        client=client.address,
        details={"proof": proof, "codes": len(codes)},
    )
    return codes


def end_other_sessions(
    session: Session, *, user: User, keep: str | None, client: Client, now: dt.datetime
) -> tuple[int, int]:
    """End every session of the user but `keep`, and revoke all their API tokens.

    A token is a credential that outlives the browser: "sign out everywhere else" after a
    suspected leak must end it too. Returns (sessions ended, tokens revoked).
    """
    ended = sessions.end_all(session, user_id=user.id, except_id=keep)
    revoked = tokens.revoke_all(session, user_id=user.id, now=now)
    audit.record(
        session,
        actor=f"user:{user.id}",
        action="auth.end_sessions",
        target=f"user:{user.id}",
        client=client.address,
        details={"ended": ended, "tokens_revoked": revoked},
    )
    return ended, revoked


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
