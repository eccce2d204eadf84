"""HTTP API for the kill switch (admins), and how every admin view names objects.

The labels live in this face because they need the read rule (`acl`) and document titles
(`documents`), two domains above `admin`, `approvals` and `audit` in the written order;
faces may import any domain. The approvals, audit, retention and user views call them.
"""

from __future__ import annotations

import datetime as dt

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from appliance.acl import rules
from appliance.admin import service
from appliance.admin.schemas import ObjectLabel, SwitchesIn, SwitchesOut, SwitchOut
from appliance.admin.tables import SWITCHES
from appliance.audit import query as audit_query
from appliance.auth.tables import Group, User
from appliance.core.crypto import Crypto
from appliance.deps import (
    AdminUser,
    NowDep,
    RuntimeDep,
    SessionDep,
    admin_user,
    client_address,
    protected_router,
)
from appliance.documents import service as docs
from appliance.documents.tables import DELETING, Document

router = protected_router(
    prefix="/api/admin/system", tags=["admin"], dependencies=[Depends(admin_user)]
)


# -- labels: names an admin may see --------------------------------------------------------


def day(value: dt.datetime) -> str:
    """A date in the site's format: '3 Dec 2026'."""
    return service.format_time(value).split(",")[0]


def document_label(session: Session, crypto: Crypto, viewer: User, doc_id: str) -> ObjectLabel:
    """A document as this admin may name it (DESIGN invariant 4).

    Its title (or filename) only when the viewer may read it like anyone else; otherwise
    what managing it needs: "a confidential document owned by alice, uploaded 3 Dec 2026".
    The link opens its retention and legal hold.
    """
    doc = session.get(Document, doc_id)
    if doc is None or doc.state == DELETING:
        return ObjectLabel(text="a deleted document")
    href = f"/admin/retention?doc={doc.id}"
    if rules.can_see(session, viewer, doc):
        name = docs.title_of(crypto, doc) or docs.filename_of(crypto, doc)
        return ObjectLabel(text=f"\u201c{name}\u201d", href=href)
    owner = audit_query.describe_actor(session, f"user:{doc.owner_id}", crypto=crypto)
    article = "an" if doc.classification[:1] in "aeiou" else "a"
    return ObjectLabel(
        text=(
            f"{article} {doc.classification} document owned by {owner}, "
            f"uploaded {day(doc.created_at)}"
        ),
        href=href,
    )


def object_label(
    session: Session, crypto: Crypto, viewer: User, ref: str | None
) -> ObjectLabel | None:
    """A recorded reference (``user:ID``, ``group:ID``, ``doc:ID``, ...) as admins read it."""
    if not ref:
        return None
    kind, _, ident = ref.partition(":")
    if kind == "doc" and ident:
        return document_label(session, crypto, viewer, ident)
    if kind == "user" and ident:
        user = session.get(User, ident)
        name = audit_query.describe_actor(session, ref, crypto=crypto)
        return ObjectLabel(text=name, href=f"/admin/users#user-{ident}" if user else None)
    if kind == "group" and ident:
        group = session.get(Group, ident)
        if group is None:
            return ObjectLabel(text="a deleted group")
        return ObjectLabel(text=f"group {group.name}", href=f"/admin/groups#group-{ident}")
    if kind == "approval" and ident:
        return ObjectLabel(text="an approval request", href=f"/admin/approvals#approval-{ident}")
    if kind == "switch" and ident:
        return ObjectLabel(text=f"the {ident.replace('_', ' ')} switch", href="/admin/system")
    if kind == "documents" and ident:
        return ObjectLabel(text=f"{ident} documents")
    if kind == "retention":
        return ObjectLabel(text="the retention policies", href="/admin/retention")
    if kind == "session" and ident:
        return ObjectLabel(text="a sign-in session")
    if kind == "token" and ident:
        return ObjectLabel(text="an API token")
    if ref == "audit":
        return ObjectLabel(text="the audit log", href="/admin/audit")
    if ref == "everyone":
        return ObjectLabel(text="everyone")
    return None


def switches_out(session: Session, *, crypto: Crypto | None = None) -> SwitchesOut:
    """The switches as shown to admins (who flipped them, by name)."""
    states = service.states(session)
    values = {
        name: SwitchOut(
            on=s.on,
            changed_by=(
                audit_query.describe_actor(session, s.changed_by, crypto=crypto)
                if s.changed_by
                else None
            ),
            changed_at=s.changed_at,
            reason=s.reason,
            back_by=s.back_by,
        )
        for name, s in states.items()
    }
    return SwitchesOut(**values)


@router.get("/switches")
def get_switches(session: SessionDep, rt: RuntimeDep) -> SwitchesOut:
    """The kill switch: whether answering or ingestion is paused, or the appliance read-only."""
    return switches_out(session, crypto=rt.crypto)


@router.put("/switches")
def put_switches(
    body: SwitchesIn,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    now: NowDep,
    rt: RuntimeDep,
) -> SwitchesOut:
    """Flip switches; each change is audited with its value before and after.

    `answering_paused`: questions are answered with 503 `maintenance` and a message that an
    admin paused answering. `ingestion_paused`: uploads still queue but the worker starts no
    new document (one in progress finishes). `read_only`: every change is refused with 503
    `read_only`, questions included, except signing in and out and this endpoint. A flip
    applies to the next request in every process and survives a restart.
    """
    for name in SWITCHES:
        value = getattr(body, name)
        if value is not None:
            service.set_switch(
                session,
                name=name,
                on=value,
                actor=admin.principal,
                now=now,
                reason=body.reason,
                client=client_address(request),
                back_by=body.back_by,
            )
    session.commit()
    return switches_out(session, crypto=rt.crypto)
