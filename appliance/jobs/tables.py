"""Job leases: which process runs a scheduled job now, and how its last run went."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.core.db import Base


class JobLease(Base):
    """One row per job. ``holder`` runs it until ``expires_at`` unless it renews the lease."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(160), default=None)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_outcome: Mapped[str | None] = mapped_column(String(16), default=None)
    last_result: Mapped[str | None] = mapped_column(Text, default=None)  # JSON counts
