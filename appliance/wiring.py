"""Start-up wiring: the hooks and approval executors every entry point installs.

The API (`appliance.main.create_app`), the operator's CLI (`appliance.cli.common`) and the
test suite call `install()` once before anything runs. Each registration is explicit here,
so a reader sees every kind of held action and who runs it; nothing is loaded by name.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.acl import credentials, duties, principals
from appliance.acl import service as acl
from appliance.approvals import actions
from appliance.approvals import service as approvals
from appliance.audit import query as audit_query
from appliance.auth import service as users
from appliance.chat.tables import Conversation
from appliance.privacy import service as privacy
from appliance.retention import service as retention


def has_chat_history(session: Session, user_id: str) -> bool:
    """Whether the user has a stored conversation (the probe `acl.duties` asks).

    Separation of duties holds a credential reset that would let an admin read someone's
    chat history; chat is a domain above acl, so the question is wired in here.
    """
    found = session.execute(
        select(Conversation.id).where(Conversation.owner_id == user_id).limit(1)
    ).first()
    return found is not None


def install() -> None:
    """Register the audit name lookup and every approval kind's executor (idempotent)."""
    audit_query.set_actor_names(users.principal_name)
    duties.set_history_probe(has_chat_history)
    approvals.register("grant", acl.approved_change)
    approvals.register("classify", acl.approved_change)
    approvals.register(approvals.ADD_MEMBER, principals.add_member_approved)
    approvals.register(approvals.RESET_PASSWORD, actions.deferred, deferred=True)
    approvals.register(approvals.RESET_TOTP, credentials.reset_totp_approved)
    approvals.register(approvals.DELETE_DOCUMENT, acl.delete_approved)
    approvals.register(approvals.RETAIN_UNTIL, retention.retain_approved)
    approvals.register(approvals.ERASE_USER, privacy.erase_approved)
    approvals.register(approvals.MAKE_ADMIN, actions.make_admin)
    approvals.register(approvals.AUDIT_EXPORT, actions.deferred, deferred=True)
    approvals.register(approvals.LIFT_LEGAL_HOLD, retention.lift_hold_approved)
    approvals.register(approvals.BULK_DELETE, retention.bulk_delete_approved)
    approvals.register(approvals.SHORTEN_RETENTION, retention.set_policy_approved)
