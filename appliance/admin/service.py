"""The kill switch: persisted switches that pause answering, pause ingestion, or stop writes.

A switch is a row in `system_switches` (absent means off), read fresh from the database by
every request, question and worker claim, so a flip applies to the next one in every process
and survives a restart. Flipping is audited with the value before and after.

Users who meet a paused service are told the admin's reason and, when one was given, when
it should be back ("back by ..."). That estimate is kept in a companion row of the same
table, ``estimate:<switch>`` (never on; its ``changed_at`` is the estimate), so the table
needed no new column.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.admin.tables import (
    ANSWERING_PAUSED,
    INGESTION_PAUSED,
    READ_ONLY,
    SWITCHES,
    SystemSwitch,
)
from appliance.audit import service as audit
from appliance.core.errors import InvalidInput, Maintenance, ReadOnly

ANSWERING_MESSAGE = (
    "Maintenance: an admin paused answering questions for now. "
    "Your question was not stored. Please try again later."
)
READ_ONLY_MESSAGE = (
    "The appliance is read-only: an admin stopped all changes for maintenance. You can "
    "still sign in and read; uploads, edits and questions (which store chat history) are "
    "refused. Please try again later."
)
ESTIMATE_PREFIX = "estimate:"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_time(value: dt.datetime) -> str:
    """The site's one time format, in UTC: '3 Dec 2026, 14:05 UTC'."""
    utc = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return f"{utc.day} {_MONTHS[utc.month - 1]} {utc.year}, {utc:%H:%M} UTC"


@dataclass(frozen=True)
class SwitchState:
    """One switch as shown to admins."""

    name: str
    on: bool
    changed_by: str | None
    changed_at: dt.datetime | None
    reason: str | None
    back_by: dt.datetime | None = None

    def notice(self, message: str) -> str:
        """What a user who meets this switch reads: the message, the reason, the estimate."""
        parts = [message]
        if self.reason:
            parts.append(f"Reason: {self.reason.rstrip('.')}.")
        if self.back_by is not None:
            parts.append(f"Back by {format_time(self.back_by)}.")
        return " ".join(parts)


def states(session: Session) -> dict[str, SwitchState]:
    """Every switch, off unless a row says on."""
    rows = {r.name: r for r in session.execute(select(SystemSwitch)).scalars()}
    out: dict[str, SwitchState] = {}
    for name in SWITCHES:
        row = rows.get(name)
        estimate = rows.get(ESTIMATE_PREFIX + name)
        on = bool(row and row.on)
        out[name] = SwitchState(
            name=name,
            on=on,
            changed_by=row.changed_by if row else None,
            changed_at=row.changed_at if row else None,
            reason=row.reason if row else None,
            back_by=_aware(estimate.changed_at) if on and estimate is not None else None,
        )
    return out


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def paused(session: Session) -> list[SwitchState]:
    """The switches users notice (answering paused, read-only) that are on now."""
    return [s for s in states(session).values() if s.on and s.name != INGESTION_PAUSED]


def state_of(session: Session, name: str) -> SwitchState:
    """One switch's state, read fresh."""
    return states(session)[name]


def is_on(session: Session, name: str) -> bool:
    """Whether one switch is on now (one primary-key read)."""
    row = session.get(SystemSwitch, name, populate_existing=True)
    return bool(row and row.on)


def set_switch(
    session: Session,
    *,
    name: str,
    on: bool,
    actor: str,
    now: dt.datetime,
    reason: str | None = None,
    client: str | None = None,
    back_by: dt.datetime | None = None,
) -> SwitchState:
    """Turn a switch on or off; audited with before and after (a no-op is not recorded).

    ``back_by`` (when turning on) is the estimate users are shown; turning off drops it.
    """
    if name not in SWITCHES:
        raise InvalidInput(f"No switch {name!r}. Switches: {', '.join(SWITCHES)}.")
    if reason is not None and len(reason) > 500:
        raise InvalidInput("A reason has at most 500 characters.")
    if reason is not None and not reason.strip():
        raise InvalidInput("Give a reason that is not blank, or none at all.")
    _set_estimate(session, name, back_by if on else None)
    row = session.get(SystemSwitch, name)
    before = bool(row and row.on)
    if row is None and before != on:  # a no-op leaves no row ("last changed by unknown")
        row = SystemSwitch(name=name)
        session.add(row)
    if row is not None and before != on:
        row.on = on
        row.changed_by = actor
        row.changed_at = now
        row.reason = reason
        session.flush()
        audit.record(
            session,
            actor=actor,
            client=client,
            action="system.switch",
            target=f"switch:{name}",
            details={
                "before": before,
                "after": on,
                "reason": reason,
                **({"back_by": back_by.isoformat()} if on and back_by else {}),
            },
        )
    session.flush()
    return states(session)[name]


def _set_estimate(session: Session, name: str, back_by: dt.datetime | None) -> None:
    row = session.get(SystemSwitch, ESTIMATE_PREFIX + name)
    if back_by is None:
        if row is not None:
            session.delete(row)
        return
    if row is None:
        row = SystemSwitch(name=ESTIMATE_PREFIX + name, on=False)
        session.add(row)
    row.changed_at = back_by.astimezone(dt.UTC)


def switched_on(session: Session) -> set[str]:
    """The names of the switches that are on now (one query)."""
    rows = session.execute(select(SystemSwitch.name).where(SystemSwitch.on.is_(True)))
    return set(rows.scalars())


def check_answering(session: Session) -> None:
    """Refuse a question while answering is paused or the appliance is read-only."""
    on = switched_on(session)
    if ANSWERING_PAUSED in on:
        raise Maintenance(state_of(session, ANSWERING_PAUSED).notice(ANSWERING_MESSAGE))
    if READ_ONLY in on:
        raise ReadOnly(read_only_message(session))


def read_only_message(session: Session) -> str:
    """The read-only refusal, with the admin's reason and estimate."""
    return state_of(session, READ_ONLY).notice(READ_ONLY_MESSAGE)


def check_writable(session: Session) -> None:
    """Refuse a change while the appliance is read-only."""
    if is_on(session, READ_ONLY):
        raise ReadOnly(read_only_message(session))


def ingestion_paused(session: Session) -> bool:
    """Whether the worker should leave queued documents alone for now."""
    return bool(switched_on(session) & {INGESTION_PAUSED, READ_ONLY})
