"""Failed sign-in attempts per account and per client address: back-off, then lockout.

Keys are ``account:<username>`` (counted whether or not the name exists, so throttling
reveals nothing) and ``client:<address>``. While a key is backing off or locked, attempts
are refused without being counted, so hammering a locked account does not extend the lock.
Failures older than the lockout period are forgotten.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select
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


def is_blocked(
    session: Session, *, username: str, client: str, now: dt.datetime, settings: AuthSettings
) -> bool:
    """Whether an attempt for this account or from this address must be refused now."""
    for rule in _rules(username, client, settings):
        row = session.get(AuthThrottle, rule.key)
        if row is None or _stale(row, now, settings):
            continue
        if row.locked_until is not None and now < row.locked_until:
            return True
        if (
            rule.backoff
            and row.last_failure_at is not None
            and now < row.last_failure_at + backoff_delay(row.failures, settings)
        ):
            return True
    return False


def record_failure(
    session: Session, *, username: str, client: str, now: dt.datetime, settings: AuthSettings
) -> list[str]:
    """Count a failure against the account and the address; return the keys now locked."""
    locked: list[str] = []
    for rule in _rules(username, client, settings):
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(
            insert(AuthThrottle)
            .values(key=rule.key, failures=0, last_failure_at=None, locked_until=None)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = session.execute(
            select(AuthThrottle)
            .where(AuthThrottle.key == rule.key)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one()
        if _stale(row, now, settings):
            row.failures = 0
            row.locked_until = None
        row.failures += 1
        row.last_failure_at = now
        if row.failures >= rule.threshold and row.locked_until is None:
            row.locked_until = now + dt.timedelta(minutes=settings.lockout_minutes)
            locked.append(rule.key)
    session.flush()
    return locked


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
