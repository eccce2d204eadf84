"""Failed sign-in attempts per account and per client address: back-off, then lockout.

Keys are ``account:<username>`` (counted whether or not the name exists, so throttling
reveals nothing) and ``client:<address>``. While a key is backing off or locked, attempts
are refused without being counted, so hammering a locked account does not extend the lock.
Failures older than the lockout period are forgotten.

An attempt is counted *before* its credential is checked. `admit` checks both keys and
counts the attempt in one step, under the keys' row locks (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's write lock, taken by the statement that opens the transaction), and
commits at once: a concurrent attempt waits for that step and then sees this one counted,
so of many simultaneous wrong codes only as many reach the check as the back-off allows,
and no lock is held while a password hash is verified. The caller then settles the
attempt: `refund` when the credential was right, `record_failure` when it was not. An
attempt that crashes in between stays counted: it fails closed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from appliance.auth.tables import AuthThrottle
from appliance.core.config import AuthSettings


def account_key(username: str) -> str:
    """The throttle key of an account name (case-folded, bounded)."""
    return "account:" + username.strip().lower()[:64]


def client_key(address: str) -> str:
    """The throttle key of a client address."""
    return "client:" + address[:64]


def backoff_delay(failures: int, settings: AuthSettings) -> dt.timedelta:
    """How long after the latest failure the next attempt must wait."""
    if failures < settings.backoff_after:
        return dt.timedelta(0)
    exponent = min(failures - settings.backoff_after, 30)
    seconds = min(settings.backoff_base_seconds * 2**exponent, settings.backoff_max_seconds)
    return dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class _Rule:
    key: str
    threshold: int
    backoff: bool


def _rules(username: str, client: str, settings: AuthSettings) -> list[_Rule]:
    # Always account first, then client: one lock order, so two admissions never deadlock.
    return [
        _Rule(account_key(username), settings.lockout_threshold, True),
        # No back-off per address: many people may share one address (NAT, proxy).
        _Rule(client_key(client), settings.client_lockout_threshold, False),
    ]


def _stale(row: AuthThrottle, now: dt.datetime, settings: AuthSettings) -> bool:
    """Whether the row's failures are old enough to forget."""
    window = dt.timedelta(minutes=settings.lockout_minutes)
    if row.locked_until is not None:
        return now >= row.locked_until
    return row.last_failure_at is None or now - row.last_failure_at >= window


def _blocked(row: AuthThrottle, rule: _Rule, now: dt.datetime, settings: AuthSettings) -> bool:
    """Whether this key refuses an attempt now (its row is current, not stale)."""
    if row.locked_until is not None and now < row.locked_until:
        return True
    if row.failures >= rule.threshold:
        # Counted attempts reached the threshold; the lock is set when one of them fails.
        return True
    return (
        rule.backoff
        and row.last_failure_at is not None
        and now < row.last_failure_at + backoff_delay(row.failures, settings)
    )


def _locked_row(session: Session, key: str) -> AuthThrottle:
    """The key's row, created if missing and locked until the transaction ends."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for _ in range(3):  # a concurrent `clear_*` may delete the row between the two statements
        session.execute(
            insert(AuthThrottle)
            .values(key=key, failures=0, last_failure_at=None, locked_until=None)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = session.execute(
            select(AuthThrottle)
            .where(AuthThrottle.key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if row is not None:
            return row
    raise RuntimeError(f"the throttle row {key!r} keeps disappearing")  # pragma: no cover


@dataclass(frozen=True)
class _Charge:
    key: str
    threshold: int
    failures: int  # the key's count with this attempt in it
    previous_failure_at: dt.datetime | None


@dataclass(frozen=True)
class Admission:
    """An attempt let through and already counted; settle it with `refund` or `record_failure`."""

    charges: tuple[_Charge, ...]


def admit(
    session: Session, *, username: str, client: str, now: dt.datetime, settings: AuthSettings
) -> Admission | None:
    """Let one attempt through and count it, or None if a key is backing off or locked.

    Commits the session (with whatever the caller had pending): the count must be visible
    to concurrent attempts before this one's credential is checked.
    """
    rows: list[tuple[_Rule, AuthThrottle]] = []
    for rule in _rules(username, client, settings):
        row = _locked_row(session, rule.key)
        if _stale(row, now, settings):
            row.failures, row.last_failure_at, row.locked_until = 0, None, None
        rows.append((rule, row))
    admission: Admission | None = None
    if not any(_blocked(row, rule, now, settings) for rule, row in rows):
        charges = []
        for rule, row in rows:
            charges.append(_Charge(rule.key, rule.threshold, row.failures + 1, row.last_failure_at))
            row.failures += 1
            row.last_failure_at = now
        admission = Admission(tuple(charges))
    session.commit()
    for _, row in rows:
        session.expunge(row)  # settling changes the rows in SQL; keep no stale copies
    return admission


def record_failure(
    session: Session, admission: Admission, *, now: dt.datetime, settings: AuthSettings
) -> list[str]:
    """Settle a failed attempt (`admit` counted it): lock each key it took to its threshold.

    Returns the keys this failure locked; of concurrent failures, one locks a key.
    """
    until = now + dt.timedelta(minutes=settings.lockout_minutes)
    locked: list[str] = []
    for charge in admission.charges:
        result = session.execute(
            update(AuthThrottle)
            .where(
                AuthThrottle.key == charge.key,
                AuthThrottle.locked_until.is_(None),
                AuthThrottle.failures >= charge.threshold,
            )
            .values(locked_until=until)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            locked.append(charge.key)
    return locked


def refund(session: Session, admission: Admission) -> None:
    """Settle a successful attempt: take its count back (in the caller's transaction).

    The key's previous failure time comes back too unless another attempt was counted
    since, so a right password does not start a back-off for the second factor.
    """
    for charge in admission.charges:
        restored = session.execute(
            update(AuthThrottle)
            .where(AuthThrottle.key == charge.key, AuthThrottle.failures == charge.failures)
            .values(failures=charge.failures - 1, last_failure_at=charge.previous_failure_at)
            .execution_options(synchronize_session=False)
        )
        if getattr(restored, "rowcount", 0) == 0:
            session.execute(
                update(AuthThrottle)
                .where(AuthThrottle.key == charge.key, AuthThrottle.failures > 0)
                .values(failures=AuthThrottle.failures - 1)
                .execution_options(synchronize_session=False)
            )


def clear_account(session: Session, *, username: str) -> bool:
    """Forget an account's failures (after a full sign-in, or an admin's unlock)."""
    result = session.execute(delete(AuthThrottle).where(AuthThrottle.key == account_key(username)))
    return bool(getattr(result, "rowcount", 0))


def clear_client(session: Session, *, client: str) -> bool:
    """Forget an address's failures (an operator's unlock)."""
    result = session.execute(delete(AuthThrottle).where(AuthThrottle.key == client_key(client)))
    return bool(getattr(result, "rowcount", 0))


def account_locked_until(
    session: Session, *, username: str, now: dt.datetime
) -> dt.datetime | None:
    """When the account's lockout ends, if it is locked now (for admins, not for callers)."""
    row = session.get(AuthThrottle, account_key(username))
    if row is None or row.locked_until is None or now >= row.locked_until:
        return None
    return row.locked_until
