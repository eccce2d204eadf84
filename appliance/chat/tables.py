"""Conversations and their messages; titles, messages and stored sources are ciphertext."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from appliance.core.db import Base, new_id, utcnow


class Conversation(Base):
    """A user's conversation; only its owner can see, rename or delete it."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_owner_updated", "owner_id", "updated_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Message(Base):
    """One turn. An answer's ``sources_ct`` holds its evidence, ``claims_ct`` its checked
    sentences (JSON, encrypted in the owner's chat key)."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # "user" | "assistant"
    content_ct: Mapped[bytes] = mapped_column(LargeBinary)
    sources_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    claims_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    model: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


HELPFUL = "helpful"
NOT_HELPFUL = "not_helpful"
RATINGS = (HELPFUL, NOT_HELPFUL)


class Feedback(Base):
    """A user's rating of one answer (one per user and answer; changing it overwrites)."""

    __tablename__ = "message_feedback"

    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    rating: Mapped[str] = mapped_column(String(16))  # one of RATINGS
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
