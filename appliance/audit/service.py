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

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select, text, update
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


# -- search and export -------------------------------------------------------------------

MAX_PAGE = 1000


@dataclass(frozen=True)
class Filters:
    """What to search for; every field optional. ``action`` ending in '*' is a prefix."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The filters as JSON-safe values (for approval requests and audit details)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None:
                continue
            out[key] = _utc(value).isoformat() if isinstance(value, dt.datetime) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Filters:
        """Inverse of `to_json`."""
        kw: dict[str, Any] = {}
        for key in ("actor", "action", "target", "outcome"):
            if data.get(key) is not None:
                kw[key] = str(data[key])
        for key in ("since", "until"):
            if data.get(key) is not None:
                kw[key] = dt.datetime.fromisoformat(str(data[key]))
        return cls(**kw)


def _utc(value: dt.datetime) -> dt.datetime:
    """A time without a zone is taken as UTC (the log's zone)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _where(query: Any, filters: Filters) -> Any:
    if filters.since is not None:
        query = query.where(AuditEvent.ts >= _utc(filters.since))
    if filters.until is not None:
        query = query.where(AuditEvent.ts < _utc(filters.until))
    if filters.actor is not None:
        query = query.where(AuditEvent.actor == filters.actor)
    if filters.action is not None:
        if filters.action.endswith("*"):
            query = query.where(AuditEvent.action.startswith(filters.action[:-1], autoescape=True))
        else:
            query = query.where(
                or_(
                    AuditEvent.action == filters.action,
                    AuditEvent.action.startswith(filters.action + ".", autoescape=True),
                )
            )
    if filters.target is not None:
        query = query.where(AuditEvent.target == filters.target)
    if filters.outcome is not None:
        query = query.where(AuditEvent.outcome == filters.outcome)
    return query


@dataclass
class Entry:
    """One entry as shown to an admin: names resolved, erased users pseudonymous."""

    id: int
    ts: dt.datetime
    actor: str
    actor_name: str
    client: str | None
    action: str
    target: str | None
    target_name: str | None
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = ""
    entry_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-safe values."""
        data = asdict(self)
        data["ts"] = self.ts.isoformat()
        return data


ActorNames = Callable[[Session, str, str], str | None]
"""``(session, kind, id) -> name``: a user's username or a group's name, None once gone."""

_actor_names: ActorNames | None = None


def set_actor_names(lookup: ActorNames) -> None:
    """Install how recorded ``user:``/``group:`` ids become names (at start-up).

    A hook rather than an import because the audit log sits below ``auth`` in the domain
    order (every domain, auth included, records its events here), while the names of
    accounts and groups belong to ``auth``; `appliance.wiring.install` registers
    `appliance.auth.service.principal_name`.
    """
    global _actor_names
    _actor_names = lookup


def describe_actor(session: Session, actor: str, *, crypto: Crypto | None = None) -> str:
    """A person-readable actor: the username while the account exists, else a pseudonym.

    ``user:<id>`` of an erased account becomes ``erased-user-<8 hex of a keyed hash>`` (the
    appliance's MAC key; without ``crypto`` a plain hash of the opaque id). Operators,
    system jobs and other principals are shown as recorded.
    """
    kind, _, ident = actor.partition(":")
    if kind not in ("user", "group") or not ident:
        return actor
    if _actor_names is None:
        raise RuntimeError("audit names are not wired: call appliance.wiring.install() first")
    name = _actor_names(session, kind, ident)
    if kind == "user":
        if name is not None:
            return name
        if crypto is not None:
            digest = crypto.mac(PSEUDONYM_PURPOSE, ident.encode())
        else:
            digest = hashlib.sha256(f"{PSEUDONYM_PURPOSE}\x00{ident}".encode()).hexdigest()
        return f"erased-user-{digest[:8]}"
    return f"group {name}" if name is not None else f"deleted-group-{ident[:8]}"


def _entry(session: Session, event: AuditEvent, crypto: Crypto | None) -> Entry:
    target_name = None
    if event.target is not None and event.target.startswith(("user:", "group:")):
        target_name = describe_actor(session, event.target, crypto=crypto)
    return Entry(
        id=event.id,
        ts=event.ts,
        actor=event.actor,
        actor_name=describe_actor(session, event.actor, crypto=crypto),
        client=event.client,
        action=event.action,
        target=event.target,
        target_name=target_name,
        outcome=event.outcome,
        details=json.loads(event.details),
        prev_hash=event.prev_hash,
        entry_hash=event.entry_hash,
    )


@dataclass(frozen=True)
class Page:
    """One page of search results; ``next_cursor`` continues it (None at the end)."""

    entries: list[Entry]
    next_cursor: int | None


def search(
    session: Session,
    *,
    filters: Filters,
    limit: int = 100,
    cursor: int | None = None,
    newest_first: bool = True,
    crypto: Crypto | None = None,
) -> Page:
    """Entries matching the filters, one page at a time (keyset on the entry id)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"The page size is between 1 and {MAX_PAGE}.")
    query = _where(select(AuditEvent), filters)
    if newest_first:
        if cursor is not None:
            query = query.where(AuditEvent.id < cursor)
        query = query.order_by(AuditEvent.id.desc())
    else:
        if cursor is not None:
            query = query.where(AuditEvent.id > cursor)
        query = query.order_by(AuditEvent.id)
    rows = list(session.execute(query.limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    entries = [_entry(session, e, crypto) for e in rows]
    return Page(entries=entries, next_cursor=rows[-1].id if more and rows else None)


def iter_entries(
    session: Session,
    *,
    filters: Filters,
    up_to_id: int | None = None,
    crypto: Crypto | None = None,
    batch: int = 500,
) -> Iterator[Entry]:
    """Every matching entry, oldest first, in batches (up to ``up_to_id`` inclusive)."""
    cursor = 0
    while True:
        query = _where(select(AuditEvent), filters).where(AuditEvent.id > cursor)
        if up_to_id is not None:
            query = query.where(AuditEvent.id <= up_to_id)
        rows = list(session.execute(query.order_by(AuditEvent.id).limit(batch)).scalars())
        if not rows:
            return
        for event in rows:
            yield _entry(session, event, crypto)
        cursor = rows[-1].id


FORMATS = ("jsonl", "csv")
CSV_FIELDS = (
    "id",
    "ts",
    "actor",
    "actor_name",
    "client",
    "action",
    "target",
    "target_name",
    "outcome",
    "details",
    "prev_hash",
    "entry_hash",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection: prefix a quote)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def start_export(
    session: Session,
    *,
    filters: Filters,
    fmt: str,
    actor: str,
    crypto: Crypto,
    client: str | None = None,
    approval_id: str | None = None,
    now: dt.datetime | None = None,
) -> Checkpoint:
    """Audit an export, commit, and return the signed checkpoint that bounds it."""
    if fmt not in FORMATS:
        raise InvalidInput("The export format is 'jsonl' or 'csv'.")
    details: dict[str, Any] = {"format": fmt, "filters": filters.to_json()}
    if approval_id is not None:
        details["approval"] = approval_id
    record(
        session, actor=actor, action="audit.export", target="audit", client=client, details=details
    )
    session.commit()
    return checkpoint(session, crypto=crypto, now=now)


def export_lines(
    session: Session,
    *,
    filters: Filters,
    fmt: str,
    cp: Checkpoint,
    crypto: Crypto | None = None,
) -> Iterator[str]:
    """The export's text, piece by piece: JSON lines (checkpoint first) or CSV."""
    entries = iter_entries(session, filters=filters, up_to_id=cp.head_id, crypto=crypto)
    if fmt == "jsonl":
        yield json.dumps({"checkpoint": asdict(cp)}, sort_keys=True) + "\n"
        for entry in entries:
            yield json.dumps(entry.to_json(), sort_keys=True) + "\n"
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for entry in entries:
        data = entry.to_json()
        data["details"] = json.dumps(entry.details, sort_keys=True)
        writer.writerow([csv_safe("" if data[k] is None else str(data[k])) for k in CSV_FIELDS])
        if buf.tell() > 64 * 1024:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
