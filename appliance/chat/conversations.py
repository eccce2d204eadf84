"""Conversations: their encrypted history (the user's chat key) and their owner's CRUD.

Every message, title and stored source is AES-GCM ciphertext in the owner's chat data
key (DESIGN invariant 5), placed with `appliance.core.places`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.acl.principals import principals_for
from appliance.acl.rules import readable_document_ids
from appliance.auth.tables import User
from appliance.chat.claims import ABSTAIN_TEXT, QUOTE_INTRO
from appliance.chat.render import UNSUPPORTED_MARK, render_answer
from appliance.chat.repetition import CUT_NOTE
from appliance.chat.tables import Conversation, Feedback, Message
from appliance.core import places
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied
from appliance.core.places import CHAT_KEY
from appliance.core.runtime import Runtime
from models.protocols import ChatMessage

UNAVAILABLE = "no longer available"


def encrypt_for(rt: Runtime, user_id: str, place: str, text: str) -> bytes:
    """Encrypt with the user's chat-history key (created on first use)."""
    rt.crypto.create_data_key(CHAT_KEY, user_id)
    return rt.crypto.encrypt_text(CHAT_KEY, user_id, place, text)


def decrypt_for(rt: Runtime, user_id: str, place: str, blob: bytes) -> str:
    """Decrypt with the user's chat-history key."""
    return rt.crypto.decrypt_text(CHAT_KEY, user_id, place, blob)


def active_user(session: Session, user_id: str) -> User:
    """The user, loaded fresh; a disabled account asks nothing."""
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        raise PermissionDenied("This account is disabled.")
    return user


def own_conversation(session: Session, user: User, conv_id: str) -> Conversation:
    """A conversation of this user's, else NotFound (never 'forbidden')."""
    conv = session.get(Conversation, conv_id)
    if conv is None or conv.owner_id != user.id:
        raise NotFound("No such conversation.")
    return conv


def history_of(rt: Runtime, session: Session, conv: Conversation, turns: int) -> list[ChatMessage]:
    """The last `turns` messages, oldest first, decrypted."""
    if turns <= 0:
        return []
    rows = (
        session.execute(
            select(Message)
            .where(Message.conversation_id == conv.id)
            .order_by(Message.id.desc())
            .limit(turns)
        )
        .scalars()
        .all()
    )
    return [
        ChatMessage(
            "user" if m.role == "user" else "assistant",
            decrypt_for(rt, conv.owner_id, places.message_text(conv.id, m.id), m.content_ct),
        )
        for m in reversed(rows)
    ]


def list_conversations(rt: Runtime, session: Session, user: User) -> list[dict[str, Any]]:
    """The user's conversations, newest first, with decrypted titles and UTC times."""
    rows = session.execute(
        select(Conversation)
        .where(Conversation.owner_id == user.id)
        .order_by(Conversation.updated_at.desc())
    ).scalars()
    return [
        {
            "id": c.id,
            "title": decrypt_for(rt, user.id, places.conversation_title(c.id), c.title_ct),
            "created_at": _utc(c.created_at).isoformat(),
            "updated_at": _utc(c.updated_at).isoformat(),
        }
        for c in rows
    ]


def _utc(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; the page groups by the reader's own day, so say UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def show_conversation(rt: Runtime, session: Session, user: User, conv_id: str) -> dict[str, Any]:
    """A conversation's messages; each stored source is re-checked against current grants."""

    conv = own_conversation(session, user, conv_id)
    messages = (
        session.execute(
            select(Message).where(Message.conversation_id == conv.id).order_by(Message.id)
        )
        .scalars()
        .all()
    )
    decoded = []
    cited_ids: set[str] = set()
    for m in messages:
        sources = (
            json.loads(
                decrypt_for(rt, user.id, places.message_sources(conv.id, m.id), m.sources_ct)
            )
            if m.sources_ct
            else []
        )
        cited_ids.update(s["doc_id"] for s in sources)
        decoded.append((m, sources))
    readable = readable_document_ids(session, cited_ids, principals_for(session, user))
    rated = session.execute(
        select(Feedback.message_id, Feedback.rating).where(
            Feedback.user_id == user.id,
            Feedback.message_id.in_([m.id for m in messages if m.role == "assistant"]),
        )
    )
    ratings: dict[int, str] = {row.message_id: row.rating for row in rated}
    out = []
    for m, sources in decoded:
        shown = [
            s if s["doc_id"] in readable else {"marker": s.get("marker"), "status": UNAVAILABLE}
            for s in sources
        ]
        text = decrypt_for(rt, user.id, places.message_text(conv.id, m.id), m.content_ct)
        item: dict[str, Any] = {
            "id": m.id,
            "role": m.role,
            "text": text,
            "sources": shown,
            "model": m.model,
            "created_at": m.created_at.isoformat(),
        }
        if m.role == "assistant":
            item["html"] = render_answer(text, [s["marker"] for s in shown if "doc_id" in s])
            item["feedback"] = ratings.get(m.id)
            item["claims"] = (
                json.loads(
                    decrypt_for(rt, user.id, places.message_claims(conv.id, m.id), m.claims_ct)
                )
                if m.claims_ct
                else []
            )
            item["unsupported"] = sum(
                1 for c in item["claims"] if c.get("checked") and not c.get("supported")
            )
            item["cut_short"] = CUT_NOTE in text
            item["abstained"] = text.startswith((ABSTAIN_TEXT, QUOTE_INTRO))
            item["text"] = text.replace(UNSUPPORTED_MARK, " (not found in your documents)")
        out.append(item)
    return {
        "id": conv.id,
        "title": decrypt_for(rt, user.id, places.conversation_title(conv.id), conv.title_ct),
        "messages": out,
    }


def rename_conversation(
    rt: Runtime, session: Session, user: User, conv_id: str, title: str
) -> None:
    """Rename one of the user's conversations."""
    title = title.strip()
    if not title or len(title) > 200:
        raise InvalidInput("A title has 1-200 characters.")
    conv = own_conversation(session, user, conv_id)
    conv.title_ct = encrypt_for(rt, user.id, places.conversation_title(conv.id), title)


def delete_conversation(session: Session, user: User, conv_id: str) -> None:
    """Delete one of the user's conversations and its messages."""
    conv = own_conversation(session, user, conv_id)
    session.execute(delete(Message).where(Message.conversation_id == conv.id))
    session.delete(conv)
