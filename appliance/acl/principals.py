"""Principals and group membership: who a person is, for the ACL, read fresh per request.

A user's principals are ``user:<id>``, ``group:<id>`` for each membership, and
``everyone`` (DESIGN invariant 1). Membership lives here, beside the read rule, because
joining a group is how a person gains read access without a grant of their own.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.auth.service import get_group, get_user, get_user_by_name
from appliance.auth.tables import Group, GroupMember, User
from appliance.core.classification import SENSITIVE
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied
from appliance.documents.tables import Document, DocumentGrant
from ingest.index import EVERYONE


def principals_for(session: Session, user: User) -> list[str]:
    """A user's principals, read fresh: themselves, each group, and everyone."""
    if not user.is_active:
        return []
    group_ids = session.execute(
        select(GroupMember.group_id).where(GroupMember.user_id == user.id)
    ).scalars()
    return [user.principal, *(f"group:{gid}" for gid in group_ids), EVERYONE]


def resolve_principal(session: Session, text: str) -> str:
    """Turn 'user:NAME', 'group:NAME' or 'everyone' into the stored principal form."""
    text = text.strip()
    if text == EVERYONE:
        return EVERYONE
    kind, _, name = text.partition(":")
    if kind == "user" and name:
        return get_user_by_name(session, name).principal
    if kind == "group" and name:
        group = session.execute(select(Group).where(Group.name == name)).scalar_one_or_none()
        if group is None:
            raise NotFound(f"No group named {name!r}.")
        return f"group:{group.id}"
    raise InvalidInput(f"{text!r} is not a principal. Write user:NAME, group:NAME or everyone.")


def describe_principal(session: Session, principal: str) -> str:
    """The readable form of a stored principal ('user:alice')."""
    if principal == EVERYONE:
        return EVERYONE
    kind, _, pid = principal.partition(":")
    if kind == "user":
        user = session.get(User, pid)
        return f"user:{user.username}" if user else principal
    if kind == "group":
        group = session.get(Group, pid)
        return f"group:{group.name}" if group else principal
    return principal


# -- membership ---------------------------------------------------------------------------


def add_member(session: Session, *, group_id: str, user_id: str, actor: str) -> bool:
    """Add a user to a group; False if already a member."""
    group, user = get_group(session, group_id), get_user(session, user_id)
    if session.get(GroupMember, (group.id, user.id)) is not None:
        return False
    if actor == user.principal and _group_reads_sensitive(session, group.id):
        # Joining a group is an indirect self-grant (DESIGN invariant 4): for confidential
        # or personal documents it takes a second admin, who can add this member.
        audit.record(
            session,
            actor=actor,
            action="group.add_member",
            target=f"group:{group.id}",
            outcome="refused",
            details={"user": f"user:{user.id}", "reason": "self_join_sensitive"},
        )
        session.commit()
        raise PermissionDenied(
            f"Group {group.name!r} can read confidential or personal documents, so you cannot "
            "add yourself to it. Ask another admin to add you."
        )
    session.add(GroupMember(group_id=group.id, user_id=user.id))
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="group.add_member",
        target=f"group:{group.id}",
        details={"user": f"user:{user.id}"},
    )
    return True


def _group_reads_sensitive(session: Session, group_id: str) -> bool:
    """Whether the group holds a grant on any confidential or personal document."""
    return (
        session.execute(
            select(DocumentGrant.doc_id)
            .join(Document, Document.id == DocumentGrant.doc_id)
            .where(
                DocumentGrant.principal == f"group:{group_id}",
                Document.classification.in_(SENSITIVE),
            )
            .limit(1)
        ).first()
        is not None
    )


def remove_member(session: Session, *, group_id: str, user_id: str, actor: str) -> bool:
    """Remove a user from a group; False if not a member."""
    member = session.get(GroupMember, (group_id, user_id))
    if member is None:
        get_group(session, group_id)
        get_user(session, user_id)
        return False
    session.delete(member)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="group.remove_member",
        target=f"group:{group_id}",
        details={"user": f"user:{user_id}"},
    )
    return True
