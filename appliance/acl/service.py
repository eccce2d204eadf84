"""Per-document access control: read and manage checks, and grant changes applied at once.

A document's grants live in `document_grants`; every chunk in the index carries the
document's granted principals. A grant, revoke or deletion rewrites only that document's
principals (one `index.publish` or `hide`). Grants to groups stay group principals, resolved
from fresh memberships at query time, so a membership change rewrites no chunk at all.

Admins manage any document's grants by their role but read only through a grant (DESIGN
invariant 4): an admin giving an account of their circle (themselves, an account whose
credentials they set, through its user, a group or everyone) `read` on a confidential or
personal document it cannot read yet is held for a second admin's approval
(`appliance.acl.duties`); other self-grants by admins go through and are audited as such.
Deleting follows the one deletion rule there too.

Changes commit before the index is updated: between the two, the index may still offer a
revoked chunk, and retrieval's database re-check in the same request withholds it.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.acl import duties
from appliance.acl.duties import Held as Held  # re-exported: faces write acl.Held
from appliance.acl.principals import principals_for
from appliance.acl.rules import (
    LEVELS,
    MANAGE,
    NOT_FOUND,
    can_manage,
    can_see,
    has_grant,
)
from appliance.approvals import service as approvals
from appliance.approvals.tables import ApprovalRequest
from appliance.audit import service as audit
from appliance.auth.tables import User
from appliance.core.blobs import BlobStore
from appliance.core.classification import SENSITIVE, check_classification
from appliance.core.config import Settings
from appliance.core.crypto import Crypto
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied
from appliance.documents import service as docs
from appliance.documents.tables import (
    DELETING,
    INDEXED,
    Document,
    DocumentGrant,
)
from ingest.index import VectorIndex, checked_principals

Actor = User | str
"""Who changes access: a signed-in user (checked), or 'operator:<os user>' on the shell."""

# One publisher at a time in this process: read-grants-then-publish must not interleave
# with another change to the same document's principals.
_publish_lock = threading.Lock()


def actor_name(actor: Actor) -> str:
    """How an actor is written in the audit log and in `granted_by`."""
    return actor.principal if isinstance(actor, User) else actor


def _authorise_manage(session: Session, doc: Document, actor: Actor) -> None:
    if doc.state == DELETING:
        raise NotFound(NOT_FOUND)
    if not isinstance(actor, User):
        if not actor.startswith(("operator:", "system:")):
            raise PermissionDenied("Only a signed-in user, an operator or the system acts.")
        return
    if can_manage(session, actor, doc):
        return
    if can_see(session, actor, doc):
        raise PermissionDenied(
            "You may read this document but not change its access. "
            "Ask someone who manages it, or an admin."
        )
    raise NotFound(NOT_FOUND)


def _reads_already(session: Session, user: User, doc: Document) -> bool:
    return has_grant(session, principals_for(session, user), doc.id)


# -- keeping the index in step -----------------------------------------------------------


def sync_index(session: Session, index: VectorIndex, doc_id: str) -> None:
    """Set the index principals of a live document to its current grants (one operation).

    Commits the session's transaction first, so that what is published is what others see.
    """
    with _publish_lock:
        while True:
            session.commit()
            state = session.execute(
                select(Document.state).where(Document.id == doc_id)
            ).scalar_one_or_none()
            if state != INDEXED:
                return  # not published yet (the worker publishes the grants it finds) or gone
            principals = docs.doc_principals(session, doc_id)
            if principals:
                index.publish(doc_id, principals)
            else:
                index.hide(doc_id)
            session.commit()
            # A change committed by another process between our read and our publish would
            # be lost; publish again until what we published is still current.
            if docs.doc_principals(session, doc_id) == principals:
                session.commit()
                return


# -- changes -----------------------------------------------------------------------------


def _check_principal(principal: str) -> str:
    try:
        (checked,) = checked_principals([principal], allow_empty=False)
    except ValueError as exc:
        raise InvalidInput(
            f"{principal!r} is not a principal. Write user:NAME, group:NAME or everyone."
        ) from exc
    return checked


def _refuse_last_manager(session: Session, doc: Document, principal: str) -> None:
    others = session.execute(
        select(func.count()).where(
            DocumentGrant.doc_id == doc.id,
            DocumentGrant.level == MANAGE,
            DocumentGrant.principal != principal,
        )
    ).scalar_one()
    if not others:
        raise InvalidInput(
            "This is the last grant that can manage the document; it would have no manager. "
            "Grant manage to someone else first."
        )


def grant(
    *,
    session: Session,
    index: VectorIndex,
    doc: Document,
    principal: str,
    level: str,
    actor: Actor,
    now: dt.datetime | None = None,
    expiry_hours: int = 72,
    approval_id: str | None = None,
    hold_self_grants: bool = True,
) -> Held | None:
    """Give a principal read or manage on a document; audited, and in the index at once.

    Returns `Held` (nothing changed yet) when an admin's grant would let an account of their
    circle (themselves, an account whose credentials they set) read a sensitive document it
    cannot read yet (`duties.grant_exposure`): the action waits for a second admin's
    approval (unless ``hold_self_grants`` is False: `approvals.required` without
    self_grant_confidential). The check runs under `duties.lock`, in the transaction that
    commits the grant.
    """
    if level not in LEVELS:
        raise InvalidInput("The level is 'read' or 'manage'.")
    principal = _check_principal(principal)
    _authorise_manage(session, doc, actor)
    now = now or utcnow()
    self_grant = isinstance(actor, User) and principal in principals_for(session, actor)
    admin = duties.acting_admin(session, actor)
    if admin is not None and approval_id is None and hold_self_grants:
        duties.lock(session)
        session.refresh(doc)
        exposed = duties.grant_exposure(session, actor=admin, doc=doc, principal=principal)
        if exposed:
            return duties.hold(
                session,
                requester=admin,
                kind="grant",
                params={"principal": principal, "level": level},
                now=now,
                expiry_hours=expiry_hours,
                action="acl.grant",
                target=f"doc:{doc.id}",
                doc_id=doc.id,
                reason="self_grant" if admin.id in exposed else "controlled_account",
                details={"principal": principal, "level": level, "accounts": exposed},
            )
    existing = session.get(DocumentGrant, (doc.id, principal))
    if existing is not None and existing.level == level:
        return None
    if existing is not None:
        if existing.level == MANAGE:
            _refuse_last_manager(session, doc, principal)
        existing.level = level
        existing.granted_by = actor_name(actor)
    else:
        session.add(
            DocumentGrant(
                doc_id=doc.id, principal=principal, level=level, granted_by=actor_name(actor)
            )
        )
    session.flush()
    details: dict[str, object] = {"principal": principal, "level": level}
    if self_grant:
        details["self_grant"] = True
    if approval_id is not None:
        details["approval"] = approval_id
    audit.record(
        session,
        actor=actor_name(actor),
        action="acl.grant",
        target=f"doc:{doc.id}",
        details=details,
    )
    sync_index(session, index, doc.id)
    return None


def revoke(
    *, session: Session, index: VectorIndex, doc: Document, principal: str, actor: Actor
) -> bool:
    """Take a principal's grant away (not the last manage grant); False if it had none."""
    principal = _check_principal(principal)
    _authorise_manage(session, doc, actor)
    existing = session.get(DocumentGrant, (doc.id, principal))
    if existing is None:
        return False
    if existing.level == MANAGE:
        _refuse_last_manager(session, doc, principal)
    session.delete(existing)
    session.flush()
    audit.record(
        session,
        actor=actor_name(actor),
        action="acl.revoke",
        target=f"doc:{doc.id}",
        details={"principal": principal},
    )
    sync_index(session, index, doc.id)
    return True


def classify(
    *,
    session: Session,
    index: VectorIndex,
    doc: Document,
    classification: str,
    actor: Actor,
    now: dt.datetime | None = None,
    expiry_hours: int = 72,
    approval_id: str | None = None,
    hold_self_grants: bool = True,
) -> Held | None:
    """Set a document's classification; audited.

    An admin who cannot read a sensitive document may not lower it to a non-sensitive level
    alone (that would let them self-grant without approval): the change is held instead.
    """
    check_classification(classification)
    _authorise_manage(session, doc, actor)
    if classification == doc.classification:
        # A no-op stays a no-op, and is still on the record.
        audit.record(
            session,
            actor=actor_name(actor),
            action="acl.classify",
            target=f"doc:{doc.id}",
            outcome="unchanged",
            details={"from": doc.classification, "to": classification},
        )
        session.commit()
        return None
    if (
        isinstance(actor, User)
        and actor.is_admin
        and approval_id is None
        and hold_self_grants
        and doc.classification in SENSITIVE
        and classification not in SENSITIVE
        and not _reads_already(session, actor, doc)
    ):
        req = approvals.request(
            session=session,
            doc_id=doc.id,
            kind="classify",
            params={"classification": classification},
            requester=actor,
            now=now or utcnow(),
            expiry_hours=expiry_hours,
        )
        session.commit()
        return Held(req)
    details: dict[str, object] = {"from": doc.classification, "to": classification}
    if approval_id is not None:
        details["approval"] = approval_id
    doc.classification = classification
    audit.record(
        session,
        actor=actor_name(actor),
        action="acl.classify",
        target=f"doc:{doc.id}",
        details=details,
    )
    # The classification is not part of the index payload; the principals stay as they are.
    session.commit()
    return None


def delete_document(
    *,
    session: Session,
    index: VectorIndex,
    crypto: Crypto,
    blobs: BlobStore,
    doc: Document,
    actor: Actor,
    now: dt.datetime | None = None,
    expiry_hours: int = 72,
    hold_deletions: bool = True,
    approval_id: str | None = None,
) -> Held | None:
    """Delete a document: hidden from every search at once, then its key shredded and removed.

    Returns `Held` (nothing deleted) when the one deletion rule asks for a second admin
    (`duties.deletion_needs_approval`: an admin deleting a sensitive document that is not
    theirs), unless ``hold_deletions`` is False (`approvals.required` without
    delete_document) or this runs an approval.
    """
    _authorise_manage(session, doc, actor)
    admin = duties.acting_admin(session, actor)
    if admin is not None and approval_id is None and hold_deletions:
        duties.lock(session)
        session.refresh(doc)
        if duties.deletion_needs_approval(session, actor=admin, doc=doc):
            return duties.hold(
                session,
                requester=admin,
                kind=approvals.DELETE_DOCUMENT,
                params={"doc_id": doc.id},
                now=now or utcnow(),
                expiry_hours=expiry_hours,
                action="document.delete",
                # Not doc_id: the request must outlive the document it deletes.
                target=f"doc:{doc.id}",
                reason="not_theirs",
            )
    doc_id = doc.id
    with _publish_lock:
        docs.begin_delete(session=session, index=index, doc=doc, actor=actor_name(actor))
    docs.finish_delete(session=session, index=index, crypto=crypto, blobs=blobs, doc_id=doc_id)
    return None


def hold_deletions(settings: Settings) -> bool:
    """Whether the deletion rule holds admins' deletions (`approvals.required`)."""
    return approvals.needs_approval(settings, approvals.DELETE_DOCUMENT)


def delete_approved(
    session: Session, params: dict[str, Any], approver: User, now: dt.datetime
) -> None:
    """Executor of an approved ``delete_document`` request (see `appliance.wiring`)."""
    ctx = approvals.current()
    if ctx.runtime is None:
        raise InvalidInput("Approving a deletion needs the running appliance.")
    doc = session.get(Document, str(params["doc_id"]))
    if doc is None or doc.state == DELETING:
        raise NotFound("The document of this request no longer exists.")
    # Deletion commits as it goes (hide first, then remove): the approval commits first.
    session.commit()
    delete_document(
        session=session,
        index=ctx.need_index(),
        crypto=ctx.runtime.crypto,
        blobs=ctx.runtime.blobs,
        doc=doc,
        actor=ctx.requester,
        approval_id=ctx.request.id,
    )


def approved_change(
    session: Session, params: dict[str, Any], approver: User, now: dt.datetime
) -> None:
    """Executor of approved ``grant`` and ``classify`` requests (see `appliance.wiring`)."""
    ctx = approvals.current()
    run_approved(session=session, index=ctx.need_index(), req=ctx.request, requester=ctx.requester)


def run_approved(
    *, session: Session, index: VectorIndex, req: ApprovalRequest, requester: User
) -> None:
    """Run an approved request's stored action exactly as it was requested."""
    doc = session.get(Document, req.doc_id)
    if doc is None or doc.state == DELETING:
        raise NotFound("The document of this request no longer exists.")
    params = approvals.params_of(req)
    if req.kind == "grant":
        grant(
            session=session,
            index=index,
            doc=doc,
            principal=str(params["principal"]),
            level=str(params["level"]),
            actor=requester,
            approval_id=req.id,
        )
    elif req.kind == "classify":
        classify(
            session=session,
            index=index,
            doc=doc,
            classification=str(params["classification"]),
            actor=requester,
            approval_id=req.id,
        )
    else:
        raise InvalidInput(f"Unknown kind of request {req.kind!r}.")
