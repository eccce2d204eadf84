"""The kill switch: persisted switches that pause answering, pause ingestion, or stop writes.

A switch is a row in `system_switches` (absent means off), read fresh from the database by
every request, question and worker claim, so a flip applies to the next one in every process
and survives a restart. Flipping is audited with the value before and after.
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


@dataclass(frozen=True)
class SwitchState:
    """One switch as shown to admins."""

    name: str
    on: bool
    changed_by: str | None
    changed_at: dt.datetime | None
    reason: str | None


def states(session: Session) -> dict[str, SwitchState]:
    """Every switch, off unless a row says on."""
    rows = {r.name: r for r in session.execute(select(SystemSwitch)).scalars()}
    out: dict[str, SwitchState] = {}
    for name in SWITCHES:
        row = rows.get(name)
        out[name] = SwitchState(
            name=name,
            on=bool(row and row.on),
            changed_by=row.changed_by if row else None,
            changed_at=row.changed_at if row else None,
            reason=row.reason if row else None,
        )
    return out


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
) -> SwitchState:
    """Turn a switch on or off; audited with before and after (a no-op is not recorded)."""
    if name not in SWITCHES:
        raise InvalidInput(f"No switch {name!r}. Switches: {', '.join(SWITCHES)}.")
    if reason is not None and len(reason) > 500:
        raise InvalidInput("A reason has at most 500 characters.")
    row = session.get(SystemSwitch, name)
    before = bool(row and row.on)
    if row is None:
        row = SystemSwitch(name=name)
        session.add(row)
    if before != on:
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
            details={"before": before, "after": on, "reason": reason},
        )
    session.flush()
    return states(session)[name]


def switched_on(session: Session) -> set[str]:
    """The names of the switches that are on now (one query)."""
    rows = session.execute(select(SystemSwitch.name).where(SystemSwitch.on.is_(True)))
    return set(rows.scalars())


def check_answering(session: Session) -> None:
    """Refuse a question while answering is paused or the appliance is read-only."""
    on = switched_on(session)
    if ANSWERING_PAUSED in on:
        raise Maintenance(ANSWERING_MESSAGE)
    if READ_ONLY in on:
        raise ReadOnly(READ_ONLY_MESSAGE)


def check_writable(session: Session) -> None:
    """Refuse a change while the appliance is read-only."""
    if is_on(session, READ_ONLY):
        raise ReadOnly(READ_ONLY_MESSAGE)


def ingestion_paused(session: Session) -> bool:
    """Whether the worker should leave queued documents alone for now."""
    return bool(switched_on(session) & {INGESTION_PAUSED, READ_ONLY})
