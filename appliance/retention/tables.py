"""The admin-edited retention policy overrides (legal holds live with documents)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.core.db import Base, utcnow


class RetentionPolicy(Base):
    """An admin's override of one retention setting (JSON value; null means keep forever)."""

    __tablename__ = "retention_policies"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
