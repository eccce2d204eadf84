"""Legal holds on documents and the admin-edited retention policy overrides."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db import Base, utcnow


class LegalHold(Base):
    """A document under legal hold: no one and nothing deletes it until the hold is lifted."""

    __tablename__ = "legal_holds"

    doc_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    placed_by: Mapped[str] = mapped_column(String(128))
    placed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(String(500), default=None)


class RetentionPolicy(Base):
    """An admin's override of one retention setting (JSON value; null means keep forever)."""

    __tablename__ = "retention_policies"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
