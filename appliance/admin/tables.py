"""Persisted system switches (the kill switch): one row per switch, absent means off."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from appliance.core.db import Base, utcnow

ANSWERING_PAUSED = "answering_paused"
INGESTION_PAUSED = "ingestion_paused"
READ_ONLY = "read_only"
SWITCHES = (ANSWERING_PAUSED, INGESTION_PAUSED, READ_ONLY)


class SystemSwitch(Base):
    """One switch's state and who last flipped it, when and why."""

    __tablename__ = "system_switches"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    on: Mapped[bool] = mapped_column(default=False)
    changed_by: Mapped[str | None] = mapped_column(String(128), default=None)
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
