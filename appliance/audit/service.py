"""Append to, verify, search, export and prune the hash-chained audit log.

Each entry's hash covers the previous entry's hash and the entry's canonical fields, so an
edited, removed, inserted or reordered entry breaks the chain at that point. A removed *tail*
leaves a valid (shorter) chain: signed checkpoints of the head (`checkpoint`, written by
`appliance audit checkpoint` and into every export) catch that, because the checkpointed head
must still be in the chain. Checkpoints are signed with an HMAC from the appliance's "system"
MAC key (wrapped by the key-encryption key, outside the data directory), so someone who can
write the database but not read the key store cannot forge one.

Pruning (`prune`) removes the oldest entries and appends an ``audit.pruned`` anchor naming the
hash of the last removed entry; verification accepts a chain that starts at something other
than the genesis only if such an anchor vouches for its first entry.

Details must never carry secrets, names or document text: callers pass ids and counts. Actors
and targets are ``user:<opaque id>``; `describe_actor` shows the username while the account
exists and a keyed pseudonym after it was erased.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from appliance.audit.tables import AuditEvent
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput

if TYPE_CHECKING:
    from appliance.core.crypto import Crypto

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


CHAIN_LOCK_KEY = 0x617564697431  # "audit1": the advisory lock that serialises appenders


def _lock_chain(session: Session) -> None:
    """Take the chain's write lock, held until the transaction ends, before reading the head.

    Two appenders that read the same head would fork the chain (a false tamper alarm).
    Locking the head row is not enough: on PostgreSQL a waiter that gets the lock is handed
    the row it waited for, now stale, and SQLite's driver reads outside a transaction.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})
    else:
        # A write statement (matching nothing) makes pysqlite open the transaction and takes
        # SQLite's write lock, waiting for the busy timeout if another writer holds it.
        session.execute(
            update(AuditEvent).where(AuditEvent.id == -1).values(actor=AuditEvent.actor)
        )


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    client: str | None = None,
    details: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> AuditEvent:
    """Append one event to the chain (in the caller's transaction); ``now`` for tests."""
    _lock_chain(session)
    last = session.execute(
        select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)
    ).scalar_one_or_none()
    prev_hash = last.entry_hash if last is not None else GENESIS
    ts = now or utcnow()
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


# -- verification ------------------------------------------------------------------------

PRUNED = "audit.pruned"
CHECKPOINT_PURPOSE = "audit-checkpoint"
PSEUDONYM_PURPOSE = "audit-pseudonym"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a chain verification."""

    ok: bool
    entries: int
    head: str
    problem: str | None = None
    at_id: int | None = None
    head_id: int | None = None
    pruned: int = 0


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of the chain's head: ``entries`` counts pruned ones too."""

    entries: int
    head_id: int
    head_hash: str
    time: str
    mac: str = ""

    def body(self) -> bytes:
        """The signed bytes."""
        fields = [1, self.entries, self.head_id, self.head_hash, self.time]
        return json.dumps(fields, separators=(",", ":")).encode()

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Parse a checkpoint file (or a JSON-lines export's first line)."""
        try:
            data = json.loads(text)
            if isinstance(data, dict) and "checkpoint" in data:
                data = data["checkpoint"]
            return cls(
                entries=int(data["entries"]),
                head_id=int(data["head_id"]),
                head_hash=str(data["head_hash"]),
                time=str(data["time"]),
                mac=str(data["mac"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(
                "That is not an audit checkpoint. Use a file written by "
                "`appliance audit checkpoint` or the first line of a JSON-lines export."
            ) from exc


def _pruned_anchor(event: AuditEvent) -> dict[str, Any] | None:
    if event.action != PRUNED:
        return None
    data: dict[str, Any] = json.loads(event.details)
    return data


def verify(session: Session, *, checkpoint: Checkpoint | None = None) -> VerifyResult:
    """Walk the chain from its oldest entry; report the first break.

    The oldest entry must follow the genesis, or an ``audit.pruned`` anchor in the chain must
    name its predecessor's hash. With a checkpoint (already signature-checked, see
    `check_checkpoint`), the checkpointed head must still be in the chain with the same hash
    and position: otherwise the tail was cut (or rewritten).
    """
    prev: str | None = None
    first: AuditEvent | None = None
    count = 0
    pruned_total = 0
    anchors: list[dict[str, Any]] = []
    seen_head: AuditEvent | None = None
    seen_head_pos: int | None = None
    for event in session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars():
        if first is None:
            first = event
        elif event.prev_hash != prev:
            return VerifyResult(
                False,
                count,
                prev or GENESIS,
                "entry removed, inserted or reordered before it",
                event.id,
            )
        if _entry_hash(event) != event.entry_hash:
            return VerifyResult(False, count, prev or GENESIS, "entry edited", event.id)
        anchor = _pruned_anchor(event)
        if anchor is not None:
            anchors.append(anchor)
            pruned_total = int(anchor.get("pruned_total", 0))
        prev = event.entry_hash
        count += 1
        if checkpoint is not None and event.id == checkpoint.head_id:
            seen_head, seen_head_pos = event, count
    head_id = None
    if first is not None and first.prev_hash != GENESIS:
        vouched = any(
            a.get("last_pruned_hash") == first.prev_hash
            and int(a.get("last_pruned_id", 0)) < first.id
            for a in anchors
        )
        if not vouched:
            return VerifyResult(
                False,
                0,
                GENESIS,
                "entries removed from the start of the log (no audit.pruned entry vouches "
                "for the oldest remaining one)",
                first.id,
            )
    if prev is not None:
        head_id = session.execute(select(func.max(AuditEvent.id))).scalar_one()
    head = prev or GENESIS
    if checkpoint is not None:
        problem = _against_checkpoint(
            checkpoint, first, seen_head, seen_head_pos, anchors, pruned_total, count
        )
        if problem is not None:
            return VerifyResult(False, count, head, problem, checkpoint.head_id, head_id)
    return VerifyResult(True, count, head, head_id=head_id, pruned=pruned_total)


def _against_checkpoint(
    cp: Checkpoint,
    first: AuditEvent | None,
    seen: AuditEvent | None,
    seen_pos: int | None,
    anchors: list[dict[str, Any]],
    pruned_total: int,
    count: int,
) -> str | None:
    if pruned_total + count < cp.entries:
        return (
            f"truncated: the checkpoint of {cp.time} counted {cp.entries} entries, "
            f"the log now holds {pruned_total + count} (pruned ones included)"
        )
    if first is not None and cp.head_id < first.id:
        # The checkpointed head was pruned since: an anchor must cover it.
        if any(int(a.get("last_pruned_id", 0)) >= cp.head_id for a in anchors):
            return None
        return f"the checkpoint's head entry {cp.head_id} is gone and no prune accounts for it"
    if seen is None or seen.entry_hash != cp.head_hash:
        return (
            f"truncated or rewritten: the checkpoint's head entry {cp.head_id} "
            f"({cp.head_hash[:12]}...) is no longer in the chain"
        )
    if seen_pos is not None and pruned_total_at(anchors, seen.id) + seen_pos != cp.entries:
        return "the checkpoint's head sits at a different position: entries were removed"
    return None


def pruned_total_at(anchors: list[dict[str, Any]], event_id: int) -> int:
    """Entries pruned before ``event_id`` (from the newest anchor that removed any)."""
    totals = [
        int(a.get("pruned_total", 0)) for a in anchors if int(a.get("last_pruned_id", 0)) < event_id
    ]
    return max(totals, default=0)


def _pruned_so_far(session: Session) -> int:
    newest_anchor = session.execute(
        select(AuditEvent.details)
        .where(AuditEvent.action == PRUNED)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if newest_anchor is None:
        return 0
    return int(json.loads(newest_anchor).get("pruned_total", 0))


def checkpoint(session: Session, *, crypto: Crypto, now: dt.datetime | None = None) -> Checkpoint:
    """A signed statement of the current head: entry count (pruned included), id and hash."""
    head = session.execute(
        select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)
    ).scalar_one_or_none()
    count = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    unsigned = Checkpoint(
        entries=_pruned_so_far(session) + count,
        head_id=head.id if head is not None else 0,
        head_hash=head.entry_hash if head is not None else GENESIS,
        time=(now or utcnow()).astimezone(dt.UTC).isoformat(timespec="seconds"),
    )
    mac = crypto.mac(CHECKPOINT_PURPOSE, unsigned.body())
    return Checkpoint(**{**asdict(unsigned), "mac": mac})


def check_checkpoint(cp: Checkpoint, *, crypto: Crypto) -> None:
    """Refuse a checkpoint whose signature does not match (forged or edited)."""
    expected = crypto.mac(CHECKPOINT_PURPOSE, cp.body())
    if not hmac.compare_digest(expected.encode(), cp.mac.encode("utf-8", "replace")):
        raise InvalidInput(
            "The checkpoint's signature does not match: it was edited, forged, or signed with "
            "another appliance's keys. Use a checkpoint this appliance wrote."
        )


# -- pruning -----------------------------------------------------------------------------


def prune(session: Session, *, before: dt.datetime, actor: str) -> int:
    """Delete entries older than ``before``, keeping the chain verifiable; returns how many.

    The newest entry is never removed. An ``audit.pruned`` entry records how many went and
    the hash of the last one removed, which vouches for the new oldest entry. Idempotent:
    nothing older means nothing removed and no anchor written. Commits nothing.
    """
    head_id = session.execute(select(func.max(AuditEvent.id))).scalar_one()
    if head_id is None:
        return 0
    keep_from = session.execute(
        select(func.min(AuditEvent.id)).where(AuditEvent.ts >= before)
    ).scalar_one()
    last_pruned_id = (keep_from - 1) if keep_from is not None else head_id - 1
    doomed = list(
        session.execute(
            select(AuditEvent).where(AuditEvent.id <= last_pruned_id).order_by(AuditEvent.id)
        ).scalars()
    )
    if not doomed:
        return 0
    last = doomed[-1]
    # The running total lives in the newest anchor, which may be among the doomed.
    before_total = _pruned_so_far(session)
    session.execute(delete(AuditEvent).where(AuditEvent.id <= last.id))
    record(
        session,
        actor=actor,
        action=PRUNED,
        target="audit",
        details={
            "before": before.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "pruned": len(doomed),
            "pruned_total": before_total + len(doomed),
            "last_pruned_id": last.id,
            "last_pruned_hash": last.entry_hash,
        },
    )
    return len(doomed)
