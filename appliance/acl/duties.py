"""Separation of duties: which admin changes wait for a second admin (DESIGN invariant 4).

Admins manage, they do not read, and no single admin can change that. An admin acts alone
as more than one account when they know another account's credentials: the accounts they
created with a one-time password or whose credentials they reset, while they may still
know them (`appliance.auth.provenance`). Those accounts, the admin's own, and the accounts
of whoever controls the admin form the admin's *circle*. The rules, one function each:

- `grant_exposure`, `membership_exposure`, `transfer_exposure`: a grant, a group membership
  or an ownership transfer (at erasure) that would let an account of the acting admin's
  circle read a confidential or personal document it cannot read yet is held for a second
  admin. Readers count whether or not their account is enabled now (enabling is not held).
- `reset_exposure`: resetting another admin's password or second factor is always held (the
  approver must be neither the requester nor the target); resetting an account's credentials
  so that the acting admin could sign in as it is held when that account reads confidential
  or personal documents the admin cannot, or has chat history.
- `deletion_needs_approval`: an admin deleting a confidential or personal document they
  neither own nor manage by a grant of their own (one by one, by an earlier retain-until
  date, or by erasing its owner) needs a second admin, as bulk deletion does.

The approver must not be the requester in another account, nor the account the request is
about (`appliance.approvals.service.approve`). Operators (``operator:<os user>``: shell
access is the credential) and the system are trusted and never held. Each check takes
`lock` first and runs in the transaction that commits the change, so two changes that each
pass alone (an admin joining a group while the group is granted a document) cannot both
pass by racing. Every held or refused attempt is audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.approvals import service as approvals
from appliance.approvals.tables import ApprovalRequest
from appliance.auth import provenance
from appliance.auth.tables import GroupMember, User
from appliance.core.classification import SENSITIVE
from appliance.core.db import serialise
from appliance.documents.tables import DELETING, Document, DocumentGrant
from ingest.index import EVERYONE

LOCK = "access-changes"
MANAGE = "manage"

Actor = User | str
"""Who changes access: a signed-in user, or 'operator:<os user>' / 'system:<job>'."""

HistoryProbe = Callable[[Session, str], bool]
"""Whether a user has stored chat history: ``probe(session, user_id)``."""


@dataclass(frozen=True)
class Held:
    """An action held for a second admin's approval, instead of being done."""

    request: ApprovalRequest


class _Hooks:
    # Chat history lives in `appliance.chat`, a domain above this one; `appliance.wiring`
    # installs the probe at start-up. Until then every account is taken to have history,
    # so a reset is never let through for want of the answer.
    history: HistoryProbe | None = None


def set_history_probe(probe: HistoryProbe) -> None:
    """Install the chat-history probe (`appliance.wiring.install` does, at start-up)."""
    _Hooks.history = probe


def has_history(session: Session, user_id: str) -> bool:
    """Whether the user has stored chat history (True when no probe is installed)."""
    probe = _Hooks.history
    return True if probe is None else probe(session, user_id)


def acting_admin(session: Session, actor: Actor) -> User | None:
    """The admin whose action is checked; None for users, operators and the system."""
    if isinstance(actor, str):
        if not actor.startswith("user:"):
            return None  # operator:<os user> or system:<job>: trusted
        found = session.get(User, actor.removeprefix("user:"))
        if found is None:
            return None
        actor = found
    return actor if actor.is_admin else None


def lock(session: Session) -> None:
    """Serialise access-changing checks with each other (see the module docstring)."""
    serialise(session, LOCK)


# -- who reads what (whether or not the account is enabled now) ----------------------------


def standing_principals(session: Session, user_id: str) -> list[str]:
    """A user's principals as they would be if the account were enabled."""
    groups = session.execute(
        select(GroupMember.group_id).where(GroupMember.user_id == user_id)
    ).scalars()
    return [f"user:{user_id}", *(f"group:{g}" for g in groups), EVERYONE]


def reads(session: Session, user_id: str, doc_id: str) -> bool:
    """Whether a grant to any of the user's standing principals names the document."""
    hit = session.execute(
        select(DocumentGrant.doc_id)
        .where(
            DocumentGrant.doc_id == doc_id,
            DocumentGrant.principal.in_(standing_principals(session, user_id)),
        )
        .limit(1)
    ).first()
    return hit is not None


def readable_sensitive(session: Session, user_id: str) -> set[str]:
    """The confidential or personal documents (not being deleted) the user reads."""
    rows = session.execute(
        select(DocumentGrant.doc_id)
        .join(Document, Document.id == DocumentGrant.doc_id)
        .where(
            DocumentGrant.principal.in_(standing_principals(session, user_id)),
            Document.classification.in_(SENSITIVE),
            Document.state != DELETING,
        )
    ).scalars()
    return set(rows)


def _reached(session: Session, principal: str, among: set[str]) -> set[str]:
    """Of the accounts `among`, those a principal names."""
    if principal == EVERYONE:
        return set(among)
    kind, _, ident = principal.partition(":")
    if kind == "user":
        return {ident} & among
    if kind == "group":
        members = session.execute(
            select(GroupMember.user_id).where(GroupMember.group_id == ident)
        ).scalars()
        return set(members) & among
    return set()


# -- the rules -----------------------------------------------------------------------------


def grant_exposure(session: Session, *, actor: User, doc: Document, principal: str) -> list[str]:
    """Accounts of the actor's circle that this grant would newly let read a sensitive doc."""
    if doc.classification not in SENSITIVE:
        return []
    mine = provenance.circle(session, actor)
    return sorted(
        uid for uid in _reached(session, principal, mine) if not reads(session, uid, doc.id)
    )


def membership_exposure(session: Session, *, actor: User, group_id: str, user_id: str) -> list[str]:
    """Sensitive documents joining the group would newly let an account of the circle read."""
    if user_id not in provenance.circle(session, actor):
        return []
    granted = session.execute(
        select(DocumentGrant.doc_id)
        .join(Document, Document.id == DocumentGrant.doc_id)
        .where(
            DocumentGrant.principal == f"group:{group_id}",
            Document.classification.in_(SENSITIVE),
            Document.state != DELETING,
        )
    ).scalars()
    return sorted(d for d in set(granted) if not reads(session, user_id, d))


def transfer_exposure(
    session: Session, *, actor: User, target_id: str, doc_ids: list[str]
) -> list[str]:
    """Of these documents, the sensitive ones a transfer to the target would newly expose."""
    if not doc_ids or target_id not in provenance.circle(session, actor):
        return []
    sensitive = session.execute(
        select(Document.id).where(
            Document.id.in_(doc_ids),
            Document.classification.in_(SENSITIVE),
            Document.state != DELETING,
        )
    ).scalars()
    return sorted(d for d in set(sensitive) if not reads(session, target_id, d))


def reset_exposure(
    session: Session, *, actor: User, target: User, kind: str, now: dt.datetime
) -> str | None:
    """Why resetting this credential needs a second admin, or None.

    `kind` is "password" or "totp". Resetting one's own credentials, or those of an account
    already in one's circle, exposes nothing new.
    """
    if target.id == actor.id:
        return None
    if target.is_admin:
        return "admin_credentials"
    mine = provenance.circle(session, actor)
    if target.id in mine:
        return None
    facts = provenance.Credentials.of(target)
    after = (
        facts.after_password_reset(by=actor.principal, now=now)
        if kind == "password"
        else facts.after_totp_reset(by=actor.principal)
    )
    controller = after.controller()
    if controller is None or controller.removeprefix("user:") not in mine:
        return None
    if readable_sensitive(session, target.id) - readable_sensitive(session, actor.id):
        return "would_read_sensitive"
    if has_history(session, target.id):
        return "would_read_chat_history"
    return None


def manages_by_grant(session: Session, user: User, doc: Document) -> bool:
    """Whether the user manages the document by a grant (not by the admin role)."""
    hit = session.execute(
        select(DocumentGrant.doc_id)
        .where(
            DocumentGrant.doc_id == doc.id,
            DocumentGrant.level == MANAGE,
            DocumentGrant.principal.in_(standing_principals(session, user.id)),
        )
        .limit(1)
    ).first()
    return hit is not None


def deletion_needs_approval(session: Session, *, actor: Actor, doc: Document) -> bool:
    """The one deletion rule: an admin deleting a sensitive document that is not theirs.

    "Theirs": they own it, or manage it by a grant. Deleting it one by one, setting its
    retain-until date earlier, and erasing its owner with documents=delete all ask this.
    """
    admin = acting_admin(session, actor)
    return (
        admin is not None
        and doc.classification in SENSITIVE
        and doc.owner_id != admin.id
        and not manages_by_grant(session, admin, doc)
    )


# -- holding -------------------------------------------------------------------------------


def hold(
    session: Session,
    *,
    requester: User,
    kind: str,
    params: dict[str, Any],
    now: dt.datetime,
    expiry_hours: int,
    action: str,
    target: str,
    reason: str,
    doc_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> Held:
    """Hold an action for a second admin: the request, audited as the attempt it is; commit.

    The ``approval.request`` entry names the action held (`action`), why (`reason`: e.g.
    self_grant, controlled_account, admin_credentials, not_theirs) and what it is about.
    """
    req = approvals.request(
        session=session,
        kind=kind,
        params=params,
        requester=requester,
        now=now,
        expiry_hours=expiry_hours,
        doc_id=doc_id,
        target=None if doc_id is not None else target,
        audit_details={"held": action, "why": reason, **(details or {})},
    )
    session.commit()
    return Held(req)
