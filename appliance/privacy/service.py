"""User erasure (right to be forgotten) and user export (right of access).

Erasure removes the person's conversations (and shreds their chat key, backups included),
sessions, API tokens, second factor and recovery codes, group memberships, grants naming
them, and the documents they own (deleted, or transferred to another user: the admin
chooses); then the account row. The audit log keeps only the opaque ``user:<id>``. Every
step commits on its own and is idempotent, so an interrupted erasure is finished by
running it again. A document under legal hold is never deleted: erasure then refuses unless
the documents are transferred.

Separation of duties (DESIGN invariant 4, `appliance.acl.duties`): an admin's erasure that
transfers confidential or personal documents to themselves or to an account whose
credentials they set, or that deletes such documents which are not theirs (the one
deletion rule), is held for a second admin (`request_erasure`); each document's transfer
or deletion is checked again in the transaction that commits it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from appliance.acl import duties
from appliance.acl import service as acl
from appliance.acl.principals import describe_principal
from appliance.approvals import service as approvals
from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.auth import service as users
from appliance.auth import sessions as auth_sessions
from appliance.auth import throttle
from appliance.auth.tables import ApiToken, AuthSession, Group, GroupMember, RecoveryCode, User
from appliance.chat import conversations as convs
from appliance.chat.tables import Conversation, Feedback, Message
from appliance.core.errors import InvalidInput, PermissionDenied
from appliance.core.places import CHAT_KEY
from appliance.core.runtime import Runtime
from appliance.documents import service as docs
from appliance.documents.tables import DELETING, Document, DocumentGrant, LegalHold

DELETE = "delete"
TRANSFER = "transfer"


@dataclass
class ErasureReport:
    """What an erasure removed or moved (counts and ids, never content)."""

    user_id: str
    documents_deleted: list[str] = field(default_factory=list)
    documents_transferred: list[str] = field(default_factory=list)
    grants_removed: int = 0
    conversations_deleted: int = 0
    sessions_ended: int = 0
    tokens_deleted: int = 0
    recovery_codes_deleted: int = 0
    memberships_removed: int = 0

    def counts(self) -> dict[str, Any]:
        """For the audit log: counts only."""
        return {
            "documents_deleted": len(self.documents_deleted),
            "documents_transferred": len(self.documents_transferred),
            "grants_removed": self.grants_removed,
            "conversations_deleted": self.conversations_deleted,
            "sessions_ended": self.sessions_ended,
            "tokens_deleted": self.tokens_deleted,
            "recovery_codes_deleted": self.recovery_codes_deleted,
            "memberships_removed": self.memberships_removed,
        }


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _check(
    rt: Runtime, *, user_id: str, documents: str, transfer_to: str | None, actor_id: str | None
) -> tuple[User, User | None]:
    if documents not in (DELETE, TRANSFER):
        raise InvalidInput("documents is 'delete' or 'transfer'.")
    with rt.sessions() as session:
        user = users.get_user(session, user_id)
        if actor_id == user.id:
            raise PermissionDenied(
                "You cannot erase your own account. Ask another admin, or the operator."
            )
        if user.is_admin and user.is_active:
            others = session.execute(
                select(User.id).where(
                    User.role == "admin", User.is_active.is_(True), User.id != user.id
                )
            ).all()
            if not others:
                raise PermissionDenied(
                    f"{user.username} is the last active admin and cannot be erased. "
                    "Make another user admin first."
                )
        target = None
        if documents == TRANSFER:
            if not transfer_to:
                raise InvalidInput("Name the user who receives the documents (transfer_to).")
            target = users.get_user(session, transfer_to)
            if target.id == user.id or not target.is_active:
                raise InvalidInput("The documents go to another, active user.")
        else:
            held = session.execute(
                select(LegalHold.doc_id)
                .join(Document, Document.id == LegalHold.doc_id)
                .where(Document.owner_id == user.id)
            ).all()
            if held:
                raise PermissionDenied(
                    f"{len(held)} of {user.username}'s documents are under legal hold and "
                    "cannot be deleted. Erase with documents=transfer (to another user), "
                    "or have the holds lifted first."
                )
        return user, target


def _erasure_hold(
    session: Session,
    rt: Runtime,
    *,
    admin: User,
    user: User,
    documents: str,
    target: User | None,
    now: dt.datetime,
) -> duties.Held | None:
    """Hold an admin's erasure that would expose or delete documents not theirs alone."""
    duties.lock(session)
    owned = list(
        session.execute(
            select(Document).where(Document.owner_id == user.id, Document.state != DELETING)
        ).scalars()
    )
    reason = None
    if target is not None:
        hold = approvals.needs_approval(rt.settings, approvals.SELF_GRANT_CONFIDENTIAL)
        exposed = duties.transfer_exposure(
            session, actor=admin, target_id=target.id, doc_ids=[d.id for d in owned]
        )
        if hold and exposed:
            reason = "transfer_to_circle"
    elif acl.hold_deletions(rt.settings) and any(
        duties.deletion_needs_approval(session, actor=admin, doc=d) for d in owned
    ):
        reason = "not_theirs"
    if reason is None:
        return None
    return duties.hold(
        session,
        requester=admin,
        kind=approvals.ERASE_USER,
        params={
            "user_id": user.id,
            "documents": documents,
            "transfer_to": target.id if target is not None else None,
        },
        now=now,
        expiry_hours=approvals.expiry_hours(rt.settings),
        action="user.erase",
        target=f"user:{user.id}",
        reason=reason,
        details={"documents": documents},
    )


def request_erasure(
    *,
    rt: Runtime,
    user_id: str,
    documents: str,
    actor: User,
    now: dt.datetime,
    transfer_to: str | None = None,
) -> ErasureReport | duties.Held:
    """An admin's erasure: done now, or held for a second admin (see the module docstring)."""
    user, target = _check(
        rt, user_id=user_id, documents=documents, transfer_to=transfer_to, actor_id=actor.id
    )
    with rt.sessions() as session:
        admin = duties.acting_admin(session, session.get_one(User, actor.id))
        if admin is not None:
            held = _erasure_hold(
                session, rt, admin=admin, user=user, documents=documents, target=target, now=now
            )
            if held is not None:
                return held
    return erase_user(
        rt=rt, user_id=user_id, documents=documents, actor=actor, now=now, transfer_to=transfer_to
    )


def erase_approved(
    session: Session, params: dict[str, Any], approver: User, now: dt.datetime
) -> None:
    """Executor of an approved ``erase_user`` request: the requester's erasure, as asked."""
    ctx = approvals.current()
    if ctx.runtime is None:
        raise InvalidInput("Approving an erasure needs the running appliance.")
    # Erasure commits step by step: the approval (and its audit entry) commits first.
    session.commit()
    erase_user(
        rt=ctx.runtime,
        user_id=str(params["user_id"]),
        documents=str(params["documents"]),
        transfer_to=params.get("transfer_to"),
        actor=ctx.requester,
        now=now,
        approval_id=ctx.request.id,
    )


def _refuse_unapproved(what: str, held: duties.Held | None = None) -> PermissionDenied:
    ref = f" (approval request {held.request.id})" if held is not None else ""
    return PermissionDenied(
        f"{what} now needs a second admin's approval{ref}: something changed since this "
        "erasure was checked. Run it again to ask for the approval; it picks up where it "
        "stopped."
    )


def erase_user(
    *,
    rt: Runtime,
    user_id: str,
    documents: str,
    actor: User | str,
    now: dt.datetime,
    transfer_to: str | None = None,
    approval_id: str | None = None,
) -> ErasureReport:
    """Erase a user and everything that is theirs (see the module docstring); audited.

    `actor` is the signed-in admin (a User) or ``operator:<os user>`` on the shell. An
    admin's erasure that separation of duties would hold is refused here (audited), unless
    it runs an approval (``approval_id``); `request_erasure` holds it instead.
    """
    actor_id = actor.id if isinstance(actor, User) else None
    user, target = _check(
        rt, user_id=user_id, documents=documents, transfer_to=transfer_to, actor_id=actor_id
    )
    if isinstance(actor, User) and approval_id is None:
        with rt.sessions() as session:
            admin = duties.acting_admin(session, session.get_one(User, actor.id))
            if admin is not None:
                held = _erasure_hold(
                    session,
                    rt,
                    admin=admin,
                    user=user,
                    documents=documents,
                    target=target,
                    now=now,
                )
                if held is not None:
                    raise _refuse_unapproved("This erasure", held)
    by = acl.actor_name(actor)
    report = ErasureReport(user_id=user.id)
    index = rt.index()
    principal = f"user:{user.id}"

    # 0. No more requests from them: disable, end sessions, drop tokens (an erasure takes a
    # while, and an upload or question meanwhile would leave data behind).
    with rt.sessions() as session:
        row = session.get_one(User, user.id)
        row.is_active = False
        report.sessions_ended = auth_sessions.end_all(session, user_id=user.id)
        report.tokens_deleted = _rowcount(
            session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
        )
        session.commit()

    # 1. Documents they own: deleted through the deletion path, or given to the target.
    with rt.sessions() as session:
        owned = list(
            session.execute(
                select(Document.id).where(Document.owner_id == user.id).order_by(Document.id)
            ).scalars()
        )
    for doc_id in owned:
        with rt.sessions() as session:
            doc = session.get_one(Document, doc_id)
            if doc.state == DELETING or target is None:
                if doc.state == DELETING:
                    docs.finish_delete(
                        session=session,
                        index=index,
                        crypto=rt.crypto,
                        blobs=rt.blobs,
                        doc_id=doc_id,
                    )
                else:
                    held = acl.delete_document(
                        session=session,
                        index=index,
                        crypto=rt.crypto,
                        blobs=rt.blobs,
                        doc=doc,
                        actor=actor if isinstance(actor, str) else session.get_one(User, actor.id),
                        now=now,
                        expiry_hours=approvals.expiry_hours(rt.settings),
                        hold_deletions=acl.hold_deletions(rt.settings),
                        approval_id=approval_id,
                    )
                    if held is not None:
                        raise _refuse_unapproved(f"Deleting document {doc_id}", held)
                report.documents_deleted.append(doc_id)
                continue
            admin = duties.acting_admin(session, by)
            if admin is not None and approval_id is None:
                duties.lock(session)
                if duties.transfer_exposure(
                    session, actor=admin, target_id=target.id, doc_ids=[doc_id]
                ) and approvals.needs_approval(rt.settings, approvals.SELF_GRANT_CONFIDENTIAL):
                    audit.record(
                        session,
                        actor=by,
                        action="document.transfer",
                        target=f"doc:{doc_id}",
                        outcome="refused",
                        details={"to": target.principal, "reason": "transfer_to_circle"},
                    )
                    session.commit()
                    raise _refuse_unapproved(f"Transferring document {doc_id}")
            doc.owner_id = target.id
            grant = session.get(DocumentGrant, (doc_id, target.principal))
            if grant is None:
                session.add(
                    DocumentGrant(
                        doc_id=doc_id, principal=target.principal, level="manage", granted_by=by
                    )
                )
            else:
                grant.level = "manage"
            session.flush()
            audit.record(
                session,
                actor=by,
                action="document.transfer",
                target=f"doc:{doc_id}",
                details={"from": principal, "to": target.principal},
            )
            acl.sync_index(session, index, doc_id)  # commits
            report.documents_transferred.append(doc_id)

    # 2. Grants naming them on other documents: gone from the index at once.
    with rt.sessions() as session:
        granted = list(
            session.execute(
                select(DocumentGrant.doc_id).where(DocumentGrant.principal == principal)
            ).scalars()
        )
        session.execute(delete(DocumentGrant).where(DocumentGrant.principal == principal))
        session.commit()
        report.grants_removed = len(granted)
        for doc_id in granted:
            acl.sync_index(session, index, doc_id)

    # 3. Chat history, then its key (crypto-shredding covers backups of the database).
    with rt.sessions() as session:
        report.conversations_deleted = _rowcount(
            session.execute(delete(Conversation).where(Conversation.owner_id == user.id))
        )
        session.execute(delete(Feedback).where(Feedback.user_id == user.id))
        session.commit()
    rt.crypto.delete_data_key(CHAT_KEY, user.id)

    # 4. Access and second factor, memberships, then the account.
    with rt.sessions() as session:
        row = session.get_one(User, user.id)
        late = session.scalar(select(func.count()).where(Document.owner_id == user.id))
        if late:
            # A request that was already running when step 0 ended their access.
            raise InvalidInput(
                f"{late} document(s) of {row.username} arrived while erasing; run the "
                "erasure again to finish (it picks up where it stopped)."
            )
        report.sessions_ended += auth_sessions.end_all(session, user_id=user.id)
        report.tokens_deleted += _rowcount(
            session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
        )
        # A question already running at step 0 may have stored a turn (and made a new key).
        report.conversations_deleted += _rowcount(
            session.execute(delete(Conversation).where(Conversation.owner_id == user.id))
        )
        report.recovery_codes_deleted = _rowcount(
            session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        )
        report.memberships_removed = _rowcount(
            session.execute(delete(GroupMember).where(GroupMember.user_id == user.id))
        )
        throttle.clear_account(session, username=row.username)
        row.totp_secret_enc = None
        session.delete(row)
        session.flush()
        audit.record(
            session, actor=by, action="user.erase", target=principal, details=report.counts()
        )
        session.commit()
    rt.crypto.delete_data_key(CHAT_KEY, user.id)
    return report


# -- export ------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_user(
    *, rt: Runtime, user_id: str, actor: str, now: dt.datetime, include_content: bool = True
) -> bytes:
    """A zip of the user's own data (no secrets or hashes); audited.

    profile.json, conversations.json (decrypted, sources re-checked as in the app),
    documents.json (metadata of the documents they own; the files themselves are
    downloaded from the library), feedback.json, audit.json (events they did).

    With ``include_content=False`` (an admin's export: admins manage, they do not read,
    DESIGN.md invariant 4) the archive leaves out what only the user may read: the
    conversations' text, titles and cited passages, and their documents' titles and
    filenames. The user downloads the whole archive themselves; so can an operator.
    """
    with rt.sessions() as session:
        user = users.get_user(session, user_id)
        groups = list(
            session.execute(
                select(Group.name)
                .join(GroupMember, GroupMember.group_id == Group.id)
                .where(GroupMember.user_id == user.id)
                .order_by(Group.name)
            ).scalars()
        )
        profile = {
            "id": user.id,
            "username": user.username,
            "role": user.role,
            "active": user.is_active,
            "created_at": _iso(user.created_at),
            "password_changed_at": _iso(user.password_changed_at),
            "totp_enrolled": user.totp_enrolled,
            "groups": groups,
            "api_tokens": [
                {
                    "name": t.name,
                    "scopes": t.scopes.split(),
                    "created_at": _iso(t.created_at),
                    "expires_at": _iso(t.expires_at),
                    "revoked_at": _iso(t.revoked_at),
                }
                for t in session.execute(
                    select(ApiToken).where(ApiToken.user_id == user.id)
                ).scalars()
            ],
            "sessions": [
                {
                    "created_at": _iso(s.created_at),
                    "last_seen_at": _iso(s.last_seen_at),
                    "client": s.client,
                    "user_agent": s.user_agent,
                }
                for s in session.execute(
                    select(AuthSession).where(AuthSession.user_id == user.id)
                ).scalars()
            ],
        }
        if include_content:
            conversations = [
                convs.show_conversation(rt, session, user, c["id"])
                for c in convs.list_conversations(rt, session, user)
            ]
        else:
            conversations = [
                {
                    "id": conv.id,
                    "created_at": _iso(conv.created_at),
                    "updated_at": _iso(conv.updated_at),
                    "messages": session.scalar(
                        select(func.count()).where(Message.conversation_id == conv.id)
                    ),
                }
                for conv in session.execute(
                    select(Conversation).where(Conversation.owner_id == user.id)
                ).scalars()
            ]
        owned = []
        for d in session.execute(
            select(Document).where(Document.owner_id == user.id, Document.state != DELETING)
        ).scalars():
            owned.append(
                {
                    "id": d.id,
                    "filename": docs.filename_of(rt.crypto, d) if include_content else None,
                    "title": docs.title_of(rt.crypto, d) if include_content else None,
                    "classification": d.classification,
                    "state": d.state,
                    "size_bytes": d.size_bytes,
                    "pages": d.pages,
                    "created_at": _iso(d.created_at),
                    "indexed_at": _iso(d.indexed_at),
                    "retain_until": _iso(d.retain_until),
                    "legal_hold": session.get(LegalHold, d.id) is not None,
                    "grants": [
                        {"principal": describe_principal(session, p), "level": lvl}
                        for p, lvl in session.execute(
                            select(DocumentGrant.principal, DocumentGrant.level).where(
                                DocumentGrant.doc_id == d.id
                            )
                        ).all()
                    ],
                }
            )
        feedback = [
            {"message_id": f.message_id, "rating": f.rating, "created_at": _iso(f.created_at)}
            for f in session.execute(select(Feedback).where(Feedback.user_id == user.id)).scalars()
        ]
        events = [
            {
                "ts": _iso(e.ts),
                "action": e.action,
                "target": e.target,
                "outcome": e.outcome,
                "client": e.client,
                "details": json.loads(e.details),
            }
            for e in session.execute(
                select(AuditEvent)
                .where(AuditEvent.actor == f"user:{user.id}")
                .order_by(AuditEvent.id)
            ).scalars()
        ]
        audit.record(
            session,
            actor=actor,
            action="user.export",
            target=f"user:{user.id}",
            details={
                "conversations": len(conversations),
                "documents": len(owned),
                "content": include_content,
            },
        )
        session.commit()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        files: dict[str, Any] = {
            "profile.json": profile,
            "conversations.json": conversations,
            "documents.json": owned,
            "feedback.json": feedback,
            "audit.json": events,
        }
        for name, value in files.items():
            archive.writestr(name, json.dumps(value, indent=2, ensure_ascii=False))
        archive.writestr(
            "README.txt",
            f"Data of user {user.username} ({user.id}), exported {now.isoformat()}.\n"
            "documents.json lists the documents you own; download the files themselves "
            "from the library.\n"
            + (
                ""
                if include_content
                else "An administrator prepared this archive, so it leaves out what only you "
                "may read: conversation text and titles, cited passages, document titles and "
                "filenames. Download the complete archive yourself (Account page, or "
                "GET /api/me/export).\n"
            ),
        )
    return buffer.getvalue()
