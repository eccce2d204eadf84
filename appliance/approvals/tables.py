"""Approval requests: an admin action held until a second admin approves it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.core.db import Base, new_id, utcnow

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
STATUSES = (PENDING, APPROVED, REJECTED, EXPIRED)


class ApprovalRequest(Base):
    """One held action, stored exactly as it will run (kind + JSON params).

    ``doc_id`` is set for actions on one document (grant, classify); ``target`` names what
    any action is about (``doc:<id>``, ``user:<id>``, ``audit``) for listing and audit.
    """

    __tablename__ = "approval_requests"
    __table_args__ = (Index("ix_approval_requests_status", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    doc_id: Mapped[str | None] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True, default=None
    )
    target: Mapped[str | None] = mapped_column(String(128), default=None)
    requester_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))  # a registered action kind
    params: Mapped[str] = mapped_column(Text)  # canonical JSON of the action's arguments
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    decided_by: Mapped[str | None] = mapped_column(String(32), default=None)
    decided_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    executed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
