"""Request and response bodies of the approvals API."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from appliance.admin.schemas import ObjectLabel
from appliance.approvals import service
from appliance.approvals.tables import PENDING, ApprovalRequest
from appliance.audit import query as audit_query
from appliance.auth.tables import Group, User
from appliance.core.crypto import Crypto

DocLabel = Callable[[str], ObjectLabel]
"""``doc_id -> label``: a document as the viewing admin may name it (see admin.routes)."""


class ApprovalRequestOut(BaseModel):
    """A consequential action held for a second admin: exactly what will run, and its state."""

    id: str
    kind: str
    target: str | None
    doc_id: str | None
    params: dict[str, Any]
    reason: str | None
    requester: str
    status: str
    created_at: dt.datetime
    expires_at: dt.datetime
    decided_by: str | None
    decided_at: dt.datetime | None
    executed_at: dt.datetime | None
    summary: str = Field("", description="The action in words, with names, not ids.")
    about: list[ObjectLabel] = Field(
        default_factory=list, description="The people, groups and documents it is about."
    )
    waiting_note: str | None = Field(
        None,
        description="While pending: why nobody can approve it yet, and how to change that.",
    )


def _user(session: Session, crypto: Crypto | None, user_id: Any) -> ObjectLabel:
    ref = f"user:{user_id}"
    exists = isinstance(user_id, str) and session.get(User, user_id) is not None
    return ObjectLabel(
        text=audit_query.describe_actor(session, ref, crypto=crypto),
        href=f"/admin/users#user-{user_id}" if exists else None,
    )


def _principal(session: Session, crypto: Crypto | None, principal: Any) -> ObjectLabel:
    kind, _, ident = str(principal).partition(":")
    if kind == "user":
        return _user(session, crypto, ident)
    if kind == "group":
        group = session.get(Group, ident)
        if group is None:
            return ObjectLabel(text="a deleted group")
        return ObjectLabel(text=f"group {group.name}", href=f"/admin/groups#group-{ident}")
    return ObjectLabel(text=str(principal))


def _document(doc_id: Any, doc_label: DocLabel | None) -> ObjectLabel:
    if doc_label is not None and isinstance(doc_id, str):
        return doc_label(doc_id)
    return ObjectLabel(text="a document", href=f"/admin/retention?doc={doc_id}")


# Kinds about one user or one document: (which, the words with {0} for its name).
_ONE_SUBJECT = {
    service.MAKE_ADMIN: ("user", "Make {0} an admin"),
    service.RESET_PASSWORD: ("user", "Give {0} a new one-time password"),
    service.RESET_TOTP: ("user", "Reset the second factor of {0}"),
    "classify": ("doc", "Classify {0} as {classification}"),
    service.DELETE_DOCUMENT: ("doc", "Delete {0}"),
    service.LIFT_LEGAL_HOLD: ("doc", "Lift the legal hold on {0}"),
}


def describe(
    session: Session,
    req: ApprovalRequest,
    *,
    crypto: Crypto | None = None,
    doc_label: DocLabel | None = None,
) -> tuple[str, list[ObjectLabel]]:
    """The action in words ("Make bob an admin") and the objects it names, with links."""
    p = service.params_of(req)
    doc_id = req.doc_id or p.get("doc_id")

    def user() -> ObjectLabel:
        return _user(session, crypto, p.get("user_id"))

    def doc() -> ObjectLabel:
        return _document(doc_id, doc_label)

    kind = req.kind
    about: list[ObjectLabel]
    if kind in _ONE_SUBJECT:
        subject, words = _ONE_SUBJECT[kind]
        about = [user() if subject == "user" else doc()]
        text = words.format(about[0].text, **{k: v for k, v in p.items() if isinstance(v, str)})
    elif kind == "grant":
        about = [_principal(session, crypto, p.get("principal")), doc()]
        text = f"Let {about[0].text} {p.get('level', 'read')} {about[1].text}"
    elif kind == service.ADD_MEMBER:
        about = [user(), _principal(session, crypto, f"group:{p.get('group_id')}")]
        text = f"Add {about[0].text} to {about[1].text}"
    elif kind == service.RETAIN_UNTIL:
        about = [doc()]
        until = p.get("until")
        text = f"Change when {about[0].text} is deleted" + (
            f" (to {str(until)[:10]})" if until else " (back to its classification's period)"
        )
    elif kind == service.ERASE_USER:
        about = [user()]
        if p.get("transfer_to"):
            about.append(_user(session, crypto, p["transfer_to"]))
        text = f"Erase the account {about[0].text}" + (
            f" and give their documents to {about[1].text}" if len(about) > 1 else ""
        )
    elif kind == service.AUDIT_EXPORT:
        about = [ObjectLabel(text="the audit log", href="/admin/audit")]
        text = f"Export the audit log ({str(p.get('format', 'jsonl')).upper()})"
    elif kind == service.BULK_DELETE:
        ids = p.get("doc_ids") or []
        about = [_document(d, doc_label) for d in ids[:5]]
        text = f"Delete {len(ids)} document{'s' if len(ids) != 1 else ''}"
    elif kind == service.SHORTEN_RETENTION:
        changes = ", ".join(
            f"{k.removesuffix('_days').replace('_', ' ')}: " + ("forever" if not v else f"{v} days")
            for k, v in (p.get("set") or {}).items()
        )
        about = [ObjectLabel(text="the retention policies", href="/admin/retention")]
        text = "Keep data for less time" + (f" ({changes})" if changes else "")
    else:
        about = [doc()] if doc_id else []
        text = kind.replace("_", " ").capitalize()
    return text, about


def approval_out(
    session: Session,
    req: ApprovalRequest,
    *,
    crypto: Crypto | None = None,
    doc_label: DocLabel | None = None,
) -> ApprovalRequestOut:
    """Shape a request for admins: people by name (or pseudonym once erased), the action in
    words, and, while it waits with nobody able to approve it, why and what to do."""

    def name(user_id: str | None) -> str | None:
        if user_id is None:
            return None
        return audit_query.describe_actor(session, f"user:{user_id}", crypto=crypto)

    summary, about = describe(session, req, crypto=crypto, doc_label=doc_label)
    requester = session.get(User, req.requester_id)
    note = None
    if req.status == PENDING and requester is not None:
        note = service.second_admin_note(session, requester)
    return ApprovalRequestOut(
        id=req.id,
        kind=req.kind,
        target=req.target,
        doc_id=req.doc_id,
        params=service.params_of(req),
        reason=req.reason,
        requester=name(req.requester_id) or "",
        status=req.status,
        created_at=req.created_at,
        expires_at=req.expires_at,
        decided_by=name(req.decided_by),
        decided_at=req.decided_at,
        executed_at=req.executed_at,
        summary=summary,
        about=about,
        waiting_note=note,
    )
