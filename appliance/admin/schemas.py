"""Request and response bodies of the kill-switch API."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class SwitchOut(BaseModel):
    """One switch: on or off, and who last flipped it, when and why."""

    on: bool
    changed_by: str | None = Field(description="Who flipped it last (a username or pseudonym).")
    changed_at: dt.datetime | None
    reason: str | None


class SwitchesOut(BaseModel):
    """The three switches of the kill switch."""

    answering_paused: SwitchOut
    ingestion_paused: SwitchOut
    read_only: SwitchOut


class SwitchesIn(BaseModel):
    """Switches to change; those left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    answering_paused: bool | None = Field(
        None, description="Pause answering: questions get a maintenance message (503)."
    )
    ingestion_paused: bool | None = Field(
        None, description="Pause ingestion: uploads still queue; the worker starts none."
    )
    read_only: bool | None = Field(
        None,
        description=(
            "Read-only: every change is refused (503) except signing in and out and this "
            "endpoint; questions are refused too (they store chat history)."
        ),
    )
    reason: str | None = Field(None, max_length=500, description="Why; shown to admins.")
