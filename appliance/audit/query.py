"""Reading the audit log: filters, paged search, person-readable names, and export.

Search and export never change the log; the chain, `record` and `verify` live in
`appliance.audit.service`.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from appliance.audit.tables import AuditEvent
from appliance.core.errors import InvalidInput

if TYPE_CHECKING:
    from appliance.core.crypto import Crypto

from appliance.audit.service import PSEUDONYM_PURPOSE, Checkpoint, checkpoint, record

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
    recent: int | None = None,
) -> Page:
    """Entries matching the filters, one page at a time (keyset on the entry id).

    With ``recent``, only the newest ``recent`` entries of the whole log are searched,
    whatever the filters (older ones need the export approval, see the audit routes).
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"The page size is between 1 and {MAX_PAGE}.")
    query = _where(select(AuditEvent), filters)
    if recent is not None:
        floor = session.execute(
            select(AuditEvent.id).order_by(AuditEvent.id.desc()).offset(recent - 1).limit(1)
        ).scalar_one_or_none()
        if floor is not None:
            query = query.where(AuditEvent.id >= floor)
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
