"""HTTP API for retention: policies (admins), retain-until dates, legal holds, bulk deletion."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import Depends, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.acl import duties, rules
from appliance.admin.routes import document_label
from appliance.approvals import service as approvals
from appliance.audit import query as audit_query
from appliance.auth.tables import User
from appliance.core.classification import Classification
from appliance.core.errors import InvalidInput, NotFound
from appliance.core.runtime import Runtime
from appliance.deps import (
    AdminUser,
    CurrentUser,
    ManagedDocument,
    NowDep,
    RuntimeDep,
    SessionDep,
    admin_user,
    protected_router,
)
from appliance.documents import service as docs
from appliance.documents.tables import DELETING, Document, LegalHold
from appliance.retention import service as retention
from appliance.retention.schemas import (
    ApprovalPendingOut,
    BulkDeleteIn,
    BulkDeleteOut,
    HoldCandidateOut,
    HoldIn,
    PolicyIn,
    PolicyOut,
    PolicyOverrideOut,
    RetainIn,
    RetentionStateOut,
)

router = protected_router(prefix="/api", tags=["retention"])
admin_router = protected_router(
    prefix="/api/admin", tags=["retention"], dependencies=[Depends(admin_user)]
)
BULK_MAX = 1000


def _policy_out(session: Session, rt: Runtime) -> PolicyOut:
    import json

    return PolicyOut(
        effective=retention.effective_policy(session, rt.settings),
        settings={k: getattr(rt.settings.retention, k) for k in retention.POLICY_KEYS},
        overrides=[
            PolicyOverrideOut(
                key=r.key,
                value=json.loads(r.value),
                updated_by=r.updated_by,
                updated_at=r.updated_at,
                updated_by_name=audit_query.describe_actor(session, r.updated_by, crypto=rt.crypto),
            )
            for r in retention.overrides(session).values()
        ],
    )


def _state(session: Session, doc: Document) -> RetentionStateOut:
    hold = session.get(LegalHold, doc.id)
    return RetentionStateOut(
        doc_id=doc.id,
        retain_until=doc.retain_until,
        legal_hold=hold is not None,
        held_since=hold.placed_at if hold else None,
        held_by=hold.placed_by if hold else None,
        held_by_name=audit_query.describe_actor(session, hold.placed_by) if hold else None,
    )


def _doc(session: Session, doc_id: str) -> Document:
    doc = session.get(Document, doc_id)
    if doc is None or doc.state == DELETING:
        raise NotFound(rules.NOT_FOUND)
    return doc


def _bulk_ids(session: Session, body: BulkDeleteIn) -> list[str]:
    if (body.doc_ids is None) == (body.filter is None):
        raise InvalidInput("Give either doc_ids or a filter.")
    if body.doc_ids is not None:
        return sorted(set(body.doc_ids))
    assert body.filter is not None  # noqa: S101 - checked above
    f = body.filter
    if f.created_before is not None and f.created_before.tzinfo is None:
        raise InvalidInput("Give created_before with a time zone, e.g. 2024-01-01T00:00:00Z.")
    query = select(Document.id).where(Document.state != DELETING)
    if f.classification is not None:
        query = query.where(Document.classification == f.classification)
    if f.owner_id is not None:
        query = query.where(Document.owner_id == f.owner_id)
    if f.created_before is not None:
        query = query.where(Document.created_at < f.created_before)
    ids = sorted(session.execute(query.limit(BULK_MAX + 1)).scalars())
    if not ids:
        raise InvalidInput("No document matches the filter.")
    if len(ids) > BULK_MAX:
        raise InvalidInput(f"More than {BULK_MAX} documents match; narrow the filter.")
    return ids


def _hold(
    session: Session,
    rt: Runtime,
    admin: User,
    now: dt.datetime,
    response: Response,
    kind: str,
    params: dict[str, Any],
    doc: Document | None = None,
    target: str | None = None,
) -> ApprovalPendingOut:
    """Hold the action for a second admin: 202 with the approval request."""
    req = approvals.request(
        session=session,
        kind=kind,
        params=params,
        requester=admin,
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        doc_id=doc.id if doc is not None else None,
        target=target,
    )
    session.commit()
    response.status_code = 202
    return ApprovalPendingOut(approval_id=req.id, kind=req.kind)


@admin_router.get("/retention")
def get_policy(session: SessionDep, rt: RuntimeDep) -> PolicyOut:
    """The retention policies in force: the admins' overrides, else the settings file."""
    return _policy_out(session, rt)


@admin_router.put("/retention", responses={202: {"model": ApprovalPendingOut}})
def put_policy(
    body: PolicyIn,
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
    response: Response,
) -> Any:
    """Override retention policies (days; 0 or null keeps forever) or reset them to the
    settings file. Audited with the values before and after. The retention job applies
    them at its next run (`appliance jobs run retention` runs it now).

    A change that keeps anything for less time than before (the audit log above all)
    answers 202 with an approval request when `approvals.required` lists
    shorten_retention (the default); it applies, as asked, when a second admin approves."""
    shorter = retention.shortened(
        session=session, settings=rt.settings, changes=body.set, reset=body.reset
    )
    if shorter and approvals.needs_approval(rt.settings, approvals.SHORTEN_RETENTION):
        return _hold(
            session,
            rt,
            admin,
            now,
            response,
            approvals.SHORTEN_RETENTION,
            {"set": body.set, "reset": sorted(body.reset)},
            target="retention:" + ",".join(shorter),
        )
    retention.set_policy(
        session=session,
        settings=rt.settings,
        changes=body.set,
        reset=body.reset,
        actor=admin.principal,
        now=now,
    )
    session.commit()
    return _policy_out(session, rt)


@admin_router.get("/retention/documents")
def hold_candidates(
    admin: AdminUser, session: SessionDep, rt: RuntimeDep
) -> list[HoldCandidateOut]:
    """Documents to place or lift a legal hold on, newest first (at most 1000).

    Each is named as you may see it: its title only where you may read it like anyone
    else (DESIGN invariant 4), otherwise its classification, owner and upload date."""
    held = set(session.execute(select(LegalHold.doc_id)).scalars())
    rows = session.execute(
        select(Document)
        .where(Document.state != DELETING)
        .order_by(Document.created_at.desc())
        .limit(BULK_MAX)
    ).scalars()
    return [
        HoldCandidateOut(
            id=d.id,
            label=document_label(session, rt.crypto, admin, d.id).text,
            classification=Classification(d.classification),
            owner=audit_query.describe_actor(session, f"user:{d.owner_id}", crypto=rt.crypto),
            created_at=d.created_at,
            legal_hold=d.id in held,
        )
        for d in rows
    ]


@router.get("/documents/{doc_id}/retention")
def get_retention(
    doc: ManagedDocument, user: CurrentUser, session: SessionDep
) -> RetentionStateOut:
    """A document's retain-until date and legal hold (for those who manage it)."""
    return _state(session, doc)


@router.put("/documents/{doc_id}/retention", responses={202: {"model": ApprovalPendingOut}})
def put_retention(
    doc: ManagedDocument,
    body: RetainIn,
    user: CurrentUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
    response: Response,
) -> Any:
    """Set when the retention job deletes the document (its managers or an admin).

    The date replaces the classification's period, earlier or later; null goes back to it.
    A document under legal hold is kept whatever the date says.

    An admin who makes a confidential or personal document they neither own nor manage by
    a grant due sooner gets 202 with an approval request (the one deletion rule, as for
    deleting it); the date is set when another admin approves it."""
    result = retention.retain(
        session=session,
        settings=rt.settings,
        doc_id=doc.id,
        until=body.retain_until,
        actor=user,
        now=now,
    )
    if isinstance(result, duties.Held):
        response.status_code = 202
        return ApprovalPendingOut(approval_id=result.request.id, kind=result.request.kind)
    session.commit()
    return _state(session, doc)


@admin_router.post("/documents/{doc_id}/legal-hold")
def place_hold(
    doc_id: str, body: HoldIn, admin: AdminUser, session: SessionDep, now: NowDep
) -> RetentionStateOut:
    """Put a document under legal hold: nobody and nothing deletes it (users, admins, the
    retention job, user erasure) until the hold is lifted. Audited."""
    doc = _doc(session, doc_id)
    retention.place_hold(
        session=session, doc_id=doc.id, actor=admin.principal, now=now, reason=body.reason
    )
    session.commit()
    return _state(session, doc)


@admin_router.delete(
    "/documents/{doc_id}/legal-hold", responses={202: {"model": ApprovalPendingOut}}
)
def lift_hold(
    doc_id: str,
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
    response: Response,
) -> Any:
    """Lift a legal hold. When `approvals.required` lists lift_legal_hold (the default),
    this answers 202 with an approval request that a second admin approves under
    /api/admin/approvals; the hold is lifted then."""
    doc = _doc(session, doc_id)
    if not retention.is_held(session, doc.id):
        return _state(session, doc)
    if approvals.needs_approval(rt.settings, approvals.LIFT_LEGAL_HOLD):
        return _hold(
            session,
            rt,
            admin,
            now,
            response,
            approvals.LIFT_LEGAL_HOLD,
            {"doc_id": doc.id},
            doc=doc,
        )
    retention.lift_hold(session=session, doc_id=doc.id, actor=admin.principal)
    session.commit()
    return _state(session, doc)


@admin_router.post("/documents/bulk-delete", responses={202: {"model": ApprovalPendingOut}})
def bulk_delete(
    body: BulkDeleteIn,
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    now: NowDep,
    response: Response,
) -> Any:
    """Delete many documents. Held documents are skipped and listed. When
    `approvals.required` lists bulk_delete (the default), this answers 202 with an approval
    request; the documents are deleted when a second admin approves it.

    Give `doc_ids`, or a `filter` (classification, owner, uploaded before): it is resolved
    now, at most 1000 documents, so an approval deletes exactly the documents it lists."""
    ids = _bulk_ids(session, body)
    if retention.bulk_hold_reason(session=session, settings=rt.settings, doc_ids=ids, actor=admin):
        return _hold(
            session,
            rt,
            admin,
            now,
            response,
            approvals.BULK_DELETE,
            {"doc_ids": ids},
            target=f"documents:{len(ids)}",
        )
    index = rt.index()

    def finish(doc_id: str) -> None:
        docs.finish_delete(
            session=session, index=index, crypto=rt.crypto, blobs=rt.blobs, doc_id=doc_id
        )

    report = retention.bulk_delete(
        session=session, index=index, doc_ids=ids, actor=admin.principal, finish=finish
    )
    session.commit()
    return BulkDeleteOut(
        deleted=report.deleted, held=report.held, not_found=report.not_found, failed=report.failed
    )
