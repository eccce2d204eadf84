"""Append to and verify the hash-chained audit log.

Each entry's hash covers the previous entry's hash and the entry's canonical fields, so an
edited, removed, inserted or reordered entry breaks the chain at that point. Details must
never carry secrets or document text: callers pass ids and counts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.audit.tables import AuditEvent
from appliance.db import utcnow

GENESIS = "0" * 64


def _canonical(
    *,
    prev_hash: str,
    ts: dt.datetime,
    actor: str,
    client: str | None,
    action: str,
    target: str | None,
    outcome: str,
    details: str,
) -> bytes:
    body = [
        prev_hash,
        ts.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        actor,
        client,
        action,
        target,
        outcome,
        details,
    ]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


def _entry_hash(event: AuditEvent) -> str:
    """sha256 over the previous hash and the entry's canonical fields."""
    return hashlib.sha256(
        _canonical(
            prev_hash=event.prev_hash,
            ts=event.ts,
            actor=event.actor,
            client=event.client,
            action=event.action,
            target=event.target,
            outcome=event.outcome,
            details=event.details,
        )
    ).hexdigest()


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    client: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain (in the caller's transaction)."""
    # Serialise writers: on PostgreSQL lock the head row; SQLite serialises writes itself.
    last = session.execute(
        select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1).with_for_update()
    ).scalar_one_or_none()
    prev_hash = last.entry_hash if last is not None else GENESIS
    ts = utcnow()
    details_json = json.dumps(details or {}, sort_keys=True, separators=(",", ":"))
    event = AuditEvent(
        ts=ts,
        actor=actor,
        client=client,
        action=action,
        target=target,
        outcome=outcome,
        details=details_json,
        prev_hash=prev_hash,
    )
    event.entry_hash = _entry_hash(event)
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a chain verification."""

    ok: bool
    entries: int
    head: str
    problem: str | None = None
    at_id: int | None = None


def verify(session: Session) -> VerifyResult:
    """Walk the chain from the start; report the first break."""
    prev = GENESIS
    count = 0
    for event in session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars():
        if event.prev_hash != prev:
            return VerifyResult(
                False, count, prev, "entry removed, inserted or reordered before it", event.id
            )
        if _entry_hash(event) != event.entry_hash:
            return VerifyResult(False, count, prev, "entry edited", event.id)
        prev = event.entry_hash
        count += 1
    return VerifyResult(True, count, prev)
