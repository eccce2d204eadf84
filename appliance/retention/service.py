"""Retention: effective policies, retain-until dates, legal holds, and what the job deletes.

The effective policy is an admin's override (table ``retention_policies``) where there is
one, else the setting (``[retention]``). A document is due when its own ``retain_until``
has passed, or, without one, when its classification's period since upload has passed.
A document under legal hold is never deleted: `documents.service.begin_delete` refuses it,
so every path (user, admin, job, erasure) is covered in one place.

Who may delete alone follows one rule whatever the route (`appliance.acl.duties`): an admin
setting an earlier retain-until date on a confidential or personal document they neither own
nor manage by a grant, or deleting such documents in bulk, waits for a second admin, as
deleting it one by one or erasing its owner does (`retain`, `bulk_hold_reason`).

Documents are deleted through the one deletion path (hide, then shred the key and remove
points, blob and rows); a run that stopped half-way leaves documents in DELETING, which the
next run (or the cleanup job) finishes first. Everything here is idempotent.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from appliance.acl import duties
from appliance.acl import service as acl
from appliance.approvals import service as approvals
from appliance.audit import service as audit
from appliance.auth import sessions as auth_sessions
from appliance.auth.tables import User
from appliance.chat.conversations import UNAVAILABLE, decrypt_for, encrypt_for
from appliance.chat.tables import Conversation, Message
from appliance.core import places
from appliance.core.classification import CLASSIFICATIONS
from appliance.core.config import RetentionSettings, Settings
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied
from appliance.core.places import CHAT_KEY
from appliance.core.runtime import Runtime
from appliance.documents import service as docs
from appliance.documents.tables import DELETING, FAILED, INDEXED, QUEUED, Document, LegalHold
from appliance.retention.tables import RetentionPolicy

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:retention"
CLASSIFICATION_KEYS = {name: f"{name}_days" for name in CLASSIFICATIONS}
POLICY_KEYS = tuple(RetentionSettings.model_fields)
# Documents the job may delete; work in progress is left to the next run.
DELETABLE = (QUEUED, INDEXED, FAILED)
SCRUB_BATCH = 500  # messages decrypted per transaction when scrubbing sources

Checkpoint = Callable[[], None]


def _noop() -> None:
    return None


# -- policies ------------------------------------------------------------------------------


def _check_value(key: str, value: Any) -> int | None:
    if key not in POLICY_KEYS:
        raise InvalidInput(f"Unknown retention policy {key!r}. Policies: {', '.join(POLICY_KEYS)}.")
    if value is None:
        if key == "session_days":
            raise InvalidInput("session_days is a number of days (0 or more).")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 365_000:
        raise InvalidInput(f"{key} is a whole number of days from 0 to 365000, or null.")
    if value == 0 and key != "session_days":
        return None  # 0 means keep forever, stored as such
    return value


def overrides(session: Session) -> dict[str, RetentionPolicy]:
    """The admins' overrides, by key."""
    return {r.key: r for r in session.execute(select(RetentionPolicy)).scalars()}


def effective_policy(session: Session, settings: Settings) -> dict[str, int | None]:
    """Each policy's value now: the admin's override if any, else the setting."""
    values: dict[str, int | None] = {
        k: _check_value(k, getattr(settings.retention, k)) for k in POLICY_KEYS
    }
    for key, row in overrides(session).items():
        if key in values:
            values[key] = json.loads(row.value)
    return values


def set_policy(
    *,
    session: Session,
    settings: Settings,
    changes: dict[str, int | None],
    reset: list[str],
    actor: str,
    now: dt.datetime,
) -> dict[str, int | None]:
    """Override some policies (null keeps forever) and drop others' overrides; audited."""
    checked = {k: _check_value(k, v) for k, v in changes.items()}
    for key in reset:
        _check_value(key, 0)
        if key in checked:
            raise InvalidInput(f"{key} is both set and reset; choose one.")
    before = effective_policy(session, settings)
    for key in reset:
        session.execute(delete(RetentionPolicy).where(RetentionPolicy.key == key))
    for key, value in checked.items():
        row = session.get(RetentionPolicy, key)
        if row is None:
            row = RetentionPolicy(key=key, value="null", updated_by=actor, updated_at=now)
            session.add(row)
        row.value = json.dumps(value)
        row.updated_by = actor
        row.updated_at = now
    session.flush()
    after = effective_policy(session, settings)
    changed = {k: {"from": before[k], "to": after[k]} for k in POLICY_KEYS if before[k] != after[k]}
    audit.record(
        session,
        actor=actor,
        action="retention.policy",
        target="retention",
        details={"changed": changed, "reset": sorted(reset)},
    )
    return after


def _keeps_less(before: int | None, after: int | None) -> bool:
    """Whether AFTER keeps for less time than BEFORE (None keeps forever)."""
    if after is None:
        return False
    return before is None or after < before


def shortened(
    *, session: Session, settings: Settings, changes: dict[str, int | None], reset: list[str]
) -> list[str]:
    """The policies this change would make keep things for less time (checked input)."""
    checked = {k: _check_value(k, v) for k, v in changes.items()}
    for key in reset:
        if key not in POLICY_KEYS:  # before getattr: an unknown name is the caller's error
            raise InvalidInput(
                f"Unknown retention policy {key!r}. Policies: {', '.join(POLICY_KEYS)}."
            )
        checked[key] = _check_value(key, getattr(settings.retention, key))
    before = effective_policy(session, settings)
    return sorted(k for k, v in checked.items() if _keeps_less(before[k], v))


# -- legal hold and retain-until -----------------------------------------------------------


def is_held(session: Session, doc_id: str) -> bool:
    """Whether a document is under legal hold."""
    return session.get(LegalHold, doc_id) is not None


def _live(session: Session, doc_id: str) -> Document:
    doc = session.get(Document, doc_id)
    if doc is None or doc.state == DELETING:
        raise NotFound("No such document.")
    return doc


def place_hold(
    *, session: Session, doc_id: str, actor: str, now: dt.datetime, reason: str | None = None
) -> bool:
    """Put a document under legal hold (False if it already is); audited."""
    doc = _live(session, doc_id)
    if is_held(session, doc.id):
        return False
    session.add(LegalHold(doc_id=doc.id, placed_by=actor, placed_at=now, reason=reason))
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="document.legal_hold",
        target=f"doc:{doc.id}",
        details={"reason": bool(reason)},
    )
    return True


def lift_hold(*, session: Session, doc_id: str, actor: str, approval_id: str | None = None) -> bool:
    """Lift a document's legal hold (False if it had none); audited."""
    hold = session.get(LegalHold, doc_id)
    if hold is None:
        _live(session, doc_id)
        return False
    session.delete(hold)
    session.flush()
    details: dict[str, Any] = {"placed_by": hold.placed_by}
    if approval_id is not None:
        details["approval"] = approval_id
    audit.record(
        session,
        actor=actor,
        action="document.legal_hold_lift",
        target=f"doc:{doc_id}",
        details=details,
    )
    return True


def _checked_until(until: dt.datetime | None) -> dt.datetime | None:
    if until is not None and until.tzinfo is None:
        raise InvalidInput("Give retain_until with a time zone, e.g. 2030-01-01T00:00:00Z.")
    if until is not None:
        try:
            until = until.astimezone(dt.UTC)
        except (OverflowError, ValueError) as exc:
            raise InvalidInput(
                "retain_until is out of range; give a date between 1970 and 9999."
            ) from exc
    return until


def set_retain_until(
    *,
    session: Session,
    doc_id: str,
    until: dt.datetime | None,
    actor: str,
    approval_id: str | None = None,
) -> Document:
    """Set (or clear, with None) the moment after which the retention job deletes it."""
    doc = _live(session, doc_id)
    until = _checked_until(until)
    before = doc.retain_until
    doc.retain_until = until
    session.flush()
    details: dict[str, Any] = {
        "from": before.isoformat() if before else None,
        "to": doc.retain_until.isoformat() if doc.retain_until else None,
    }
    if approval_id is not None:
        details["approval"] = approval_id
    audit.record(
        session,
        actor=actor,
        action="document.retain_until",
        target=f"doc:{doc.id}",
        details=details,
    )
    return doc


def due_at(
    doc: Document, policy: dict[str, int | None], retain_until: dt.datetime | None
) -> dt.datetime | None:
    """When the job deletes the document with this retain-until date (None: never)."""
    if retain_until is not None:
        return retain_until
    days = policy.get(CLASSIFICATION_KEYS.get(doc.classification, ""))
    return doc.created_at + dt.timedelta(days=days) if days else None


def retain(
    *,
    session: Session,
    settings: Settings,
    doc_id: str,
    until: dt.datetime | None,
    actor: User,
    now: dt.datetime,
) -> duties.Held | Document:
    """Set a document's retain-until date under the one deletion rule; audited.

    An admin who makes a confidential or personal document that is not theirs due sooner
    (`duties.deletion_needs_approval`) gets `Held`: the date is set when a second admin
    approves. A later date, or a document that is theirs, is set at once.
    """
    doc = _live(session, doc_id)
    until = _checked_until(until)
    admin = duties.acting_admin(session, actor)
    if admin is not None and acl.hold_deletions(settings):
        duties.lock(session)
        session.refresh(doc)
        policy = effective_policy(session, settings)
        before, after = due_at(doc, policy, doc.retain_until), due_at(doc, policy, until)
        sooner = after is not None and (before is None or after < before)
        if sooner and duties.deletion_needs_approval(session, actor=admin, doc=doc):
            return duties.hold(
                session,
                requester=admin,
                kind=approvals.RETAIN_UNTIL,
                params={"doc_id": doc.id, "until": until.isoformat() if until else None},
                now=now,
                expiry_hours=approvals.expiry_hours(settings),
                action="document.retain_until",
                target=f"doc:{doc.id}",
                reason="not_theirs",
            )
    return set_retain_until(session=session, doc_id=doc.id, until=until, actor=actor.principal)


def retain_approved(
    session: Session, params: dict[str, Any], approver: Any, now: dt.datetime
) -> None:
    """Executor of an approved retain_until request: the date as it was asked."""
    ctx = approvals.current()
    until = params.get("until")
    set_retain_until(
        session=session,
        doc_id=str(params["doc_id"]),
        until=dt.datetime.fromisoformat(until) if isinstance(until, str) else None,
        actor=ctx.requester.principal,
        approval_id=ctx.request.id,
    )


# -- what is due ---------------------------------------------------------------------------


def _due_condition(policy: dict[str, int | None], now: dt.datetime) -> Any:
    own = and_(Document.retain_until.is_not(None), Document.retain_until <= now)
    by_class = [
        and_(
            Document.retain_until.is_(None),
            Document.classification == classification,
            Document.created_at <= now - dt.timedelta(days=days),
        )
        for classification, key in CLASSIFICATION_KEYS.items()
        if (days := policy.get(key))
    ]
    return or_(own, *by_class)


def due_documents(
    session: Session, *, policy: dict[str, int | None], now: dt.datetime
) -> tuple[list[str], list[str]]:
    """Documents due for deletion now: (deletable ids, ids kept because of a legal hold)."""
    rows = session.execute(
        select(Document.id, LegalHold.doc_id)
        .outerjoin(LegalHold, LegalHold.doc_id == Document.id)
        .where(Document.state.in_(DELETABLE), _due_condition(policy, now))
        .order_by(Document.created_at, Document.id)
    ).all()
    return [d for d, h in rows if h is None], [d for d, h in rows if h is not None]


def delete_one(rt: Runtime, doc_id: str, *, actor: str) -> bool:
    """Delete one document through the deletion path; False if it is gone or held meanwhile."""

    index = rt.index()
    with rt.sessions() as session:
        doc = session.get(Document, doc_id)
        if doc is None:
            return False
        if doc.state == DELETING:
            docs.finish_delete(
                session=session, index=index, crypto=rt.crypto, blobs=rt.blobs, doc_id=doc_id
            )
            return True
        if is_held(session, doc_id) or doc.state not in DELETABLE:
            return False  # held, or claimed by a worker meanwhile: the next run decides
        acl.delete_document(
            session=session, index=index, crypto=rt.crypto, blobs=rt.blobs, doc=doc, actor=actor
        )
    return True


def finish_interrupted(rt: Runtime, checkpoint: Checkpoint = _noop) -> int:
    """Finish deletions a crash interrupted (documents left in DELETING)."""
    index = rt.index()
    with rt.sessions() as session:
        pending = list(
            session.execute(select(Document.id).where(Document.state == DELETING)).scalars()
        )
    for doc_id in pending:
        checkpoint()
        with rt.sessions() as session:
            docs.finish_delete(
                session=session, index=index, crypto=rt.crypto, blobs=rt.blobs, doc_id=doc_id
            )
    return len(pending)


def scrub_sources(
    rt: Runtime, checkpoint: Checkpoint = _noop, *, batch_size: int = SCRUB_BATCH
) -> int:
    """Remove what stored answers cite of documents that no longer exist; returns how many.

    A cited source keeps its marker and document id, and says "no longer available":
    filename, title, heading and snippet of a deleted document go from chat history too.
    Messages are read in batches by id; which documents exist is asked per batch, so a
    document uploaded (and cited) during the run is never taken for a deleted one.
    """

    scrubbed, after = 0, 0
    while True:
        with rt.sessions() as session:
            batch = session.execute(
                select(Message, Conversation.owner_id)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(Message.sources_ct.is_not(None), Message.id > after)
                .order_by(Message.id)
                .limit(batch_size)
            ).all()
            if not batch:
                return scrubbed
            after = batch[-1][0].id
            decoded = []
            for msg, owner_id in batch:
                if not rt.crypto.has_data_key(CHAT_KEY, owner_id):
                    continue  # shredded: nothing readable is left to scrub
                place = places.message_sources(msg.conversation_id, msg.id)
                sources = json.loads(decrypt_for(rt, owner_id, place, msg.sources_ct or b""))
                decoded.append((msg, owner_id, place, sources))
            cited = {
                s.get("doc_id")
                for *_, sources in decoded
                for s in sources
                if s.get("status") != UNAVAILABLE
            }
            live = set(session.execute(select(Document.id).where(Document.id.in_(cited))).scalars())
            for msg, owner_id, place, sources in decoded:
                kept: list[dict[str, Any]] = []
                changed = 0
                for src in sources:
                    if src.get("doc_id") in live or src.get("status") == UNAVAILABLE:
                        kept.append(src)
                    else:
                        gone = {"doc_id": src.get("doc_id"), "marker": src.get("marker")}
                        kept.append({**gone, "status": UNAVAILABLE})
                        changed += 1
                if changed:
                    msg.sources_ct = encrypt_for(rt, owner_id, place, json.dumps(kept))
                    scrubbed += changed
            session.commit()
        checkpoint()


@dataclass
class RetentionReport:
    """What one retention run did (counts only: the audit log carries it)."""

    documents_deleted: int = 0
    documents_held: int = 0
    deletions_finished: int = 0
    sources_scrubbed: int = 0
    messages_deleted: int = 0
    conversations_deleted: int = 0
    sessions_deleted: int = 0
    audit_entries_pruned: int = 0
    audit_prune: str = "ok"

    def counts(self) -> dict[str, Any]:
        """As a plain dict."""
        return dict(self.__dict__)


def expire_chat(session: Session, *, days: int | None, now: dt.datetime) -> tuple[int, int]:
    """Delete messages older than `days`, then conversations left empty; (messages, convs)."""
    if not days:
        return 0, 0
    cutoff = now - dt.timedelta(days=days)
    messages = session.execute(
        delete(Message)
        .where(Message.created_at <= cutoff)
        .execution_options(synchronize_session=False)
    )
    conversations = session.execute(
        delete(Conversation)
        .where(
            Conversation.updated_at <= cutoff,
            ~exists().where(Message.conversation_id == Conversation.id),
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(messages, "rowcount", 0) or 0), int(
        getattr(conversations, "rowcount", 0) or 0
    )


def purge_sessions(
    session: Session, *, settings: Settings, days: int | None, now: dt.datetime
) -> int:
    """Delete sign-in sessions that ended more than `days` ago."""
    return auth_sessions.purge_expired(
        session, now=now - dt.timedelta(days=days or 0), settings=settings.auth
    )


def prune_audit(session: Session, *, days: int | None, now: dt.datetime) -> tuple[int, str]:
    """Prune audit entries older than `days` through the audit service; (count, status)."""
    if not days:
        return 0, "keep_forever"
    pruned = audit.prune(session, before=now - dt.timedelta(days=days), actor=SYSTEM_ACTOR)
    return pruned, "ok"


def apply_retention(
    *, rt: Runtime, now: dt.datetime, checkpoint: Checkpoint = _noop
) -> RetentionReport:
    """One run of the retention job: every policy, each step idempotent and resumable."""
    report = RetentionReport()
    report.deletions_finished = finish_interrupted(rt, checkpoint)
    with rt.sessions() as session:
        policy = effective_policy(session, rt.settings)
        due, held = due_documents(session, policy=policy, now=now)
    report.documents_held = len(held)
    for doc_id in due:
        checkpoint()
        if delete_one(rt, doc_id, actor=SYSTEM_ACTOR):
            report.documents_deleted += 1
    report.sources_scrubbed = scrub_sources(rt, checkpoint)
    checkpoint()
    with rt.sessions() as session:
        report.messages_deleted, report.conversations_deleted = expire_chat(
            session, days=policy["chat_history_days"], now=now
        )
        report.sessions_deleted = purge_sessions(
            session, settings=rt.settings, days=policy["session_days"], now=now
        )
        session.commit()
    checkpoint()
    with rt.sessions() as session:
        report.audit_entries_pruned, report.audit_prune = prune_audit(
            session, days=policy["audit_log_days"], now=now
        )
        session.commit()
    return report


def held_count(session: Session) -> int:
    """How many documents are under legal hold."""
    return int(session.execute(select(func.count()).select_from(LegalHold)).scalar_one())


# -- bulk deletion and the approval executors ---------------------------------------------


@dataclass
class BulkReport:
    """What a bulk deletion did, per document id."""

    deleted: list[str]
    held: list[str]
    not_found: list[str]
    failed: list[str]


def bulk_delete(
    *,
    session: Session,
    index: Any,
    doc_ids: list[str],
    actor: str,
    finish: Callable[[str], None] | None = None,
) -> BulkReport:
    """Delete many documents through the deletion path; held ones are skipped and reported.

    Each document is hidden at once (`begin_delete`); `finish` removes its key and data now,
    else the cleanup job finishes it (a document in DELETING is never visible). One
    document's failure does not stop the others: once hidden it counts as deleted (the
    cleanup job finishes it); one the error left untouched is reported as failed, to ask
    again for it. The audit event's outcome says "partial" then.
    """
    report = BulkReport([], [], [], [])
    for doc_id in dict.fromkeys(doc_ids):
        doc = session.get(Document, doc_id)
        if doc is None or doc.state == DELETING:
            report.not_found.append(doc_id)
            continue
        if is_held(session, doc_id):
            report.held.append(doc_id)
            continue
        try:
            docs.begin_delete(session=session, index=index, doc=doc, actor=actor)
            if finish is not None:
                finish(doc_id)
        except PermissionDenied:  # put under legal hold meanwhile
            session.rollback()
            report.held.append(doc_id)
            continue
        except Exception:
            session.rollback()
            log.exception("bulk deletion: document %s failed", doc_id)
            now_doc = session.get(Document, doc_id)
            if now_doc is not None and now_doc.state != DELETING:
                report.failed.append(doc_id)
                continue
        report.deleted.append(doc_id)
    audit.record(
        session,
        actor=actor,
        action="document.bulk_delete",
        outcome="partial" if report.failed else "ok",
        details={
            "deleted": len(report.deleted),
            "held": len(report.held),
            "not_found": len(report.not_found),
            "failed": report.failed,
        },
    )
    return report


def bulk_hold_reason(
    *, session: Session, settings: Settings, doc_ids: list[str], actor: User
) -> str | None:
    """Why a bulk deletion waits for a second admin, or None.

    Always, when `approvals.required` lists bulk_delete; else when any one of the documents
    would be held by the one deletion rule on its own.
    """
    if approvals.needs_approval(settings, approvals.BULK_DELETE):
        return "bulk_delete"
    admin = duties.acting_admin(session, actor)
    if admin is None or not acl.hold_deletions(settings):
        return None
    duties.lock(session)
    for doc_id in doc_ids:
        doc = session.get(Document, doc_id)
        if doc is not None and duties.deletion_needs_approval(session, actor=admin, doc=doc):
            return "not_theirs"
    return None


def lift_hold_approved(
    session: Session, params: dict[str, Any], approver: Any, now: dt.datetime
) -> None:
    """Executor of an approved lift_legal_hold request."""
    ctx = approvals.current()
    lift_hold(
        session=session,
        doc_id=str(params["doc_id"]),
        actor=ctx.requester.principal,
        approval_id=ctx.request.id,
    )


def bulk_delete_approved(
    session: Session, params: dict[str, Any], approver: Any, now: dt.datetime
) -> None:
    """Executor of an approved bulk_delete request: hides each document at once."""
    ctx = approvals.current()
    rt = ctx.runtime
    index = ctx.need_index()
    # Deletion commits document by document (hide first, then remove), so the approval
    # (and its audit entry) is committed first: a failure on one document, rolled back on
    # its own, never takes the approval with it.
    session.commit()

    def finish(doc_id: str) -> None:
        if rt is not None:
            docs.finish_delete(
                session=session, index=index, crypto=rt.crypto, blobs=rt.blobs, doc_id=doc_id
            )

    bulk_delete(
        session=session,
        index=index,
        doc_ids=[str(d) for d in params["doc_ids"]],
        actor=ctx.requester.principal,
        finish=finish if rt is not None else None,
    )


def set_policy_approved(
    session: Session, params: dict[str, Any], approver: Any, now: dt.datetime
) -> None:
    """Executor of an approved shorten_retention request: the change as it was asked."""
    ctx = approvals.current()
    if ctx.runtime is None:
        raise InvalidInput("Approving a retention change needs the running appliance.")
    set_policy(
        session=session,
        settings=ctx.runtime.settings,
        changes=dict(params["set"]),
        reset=list(params["reset"]),
        actor=ctx.requester.principal,
        now=now,
    )
