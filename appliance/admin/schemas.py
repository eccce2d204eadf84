"""Request and response bodies of the kill-switch API."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SwitchOut(BaseModel):
    """One switch: on or off, and who last flipped it, when and why."""

    on: bool
    changed_by: str | None = Field(description="Who flipped it last (a username or pseudonym).")
    changed_at: dt.datetime | None
    reason: str | None
    back_by: dt.datetime | None = Field(None, description="When the service should be back.")


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
    reason: str | None = Field(
        None,
        max_length=500,
        description="Why; shown to admins, and to users while answering is paused or the "
        "appliance is read-only. Required when a switch is turned on; never blank.",
    )
    back_by: dt.datetime | None = Field(
        None,
        description="When the service is expected back (with a time zone); shown to users "
        "as 'back by ...' while the switches it comes with are on.",
    )

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "Give a reason: other admins see it, and users see it while the service is paused."
            )
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _reason_when_turned_on(self) -> SwitchesIn:
        turned_on = any((self.answering_paused, self.ingestion_paused, self.read_only))
        if turned_on and self.reason is None:
            raise ValueError(
                "Give a reason when you turn a switch on: other admins see it, and users see "
                "it while the service is paused."
            )
        return self

    @field_validator("back_by")
    @classmethod
    def _zoned(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("Give the time with a zone, e.g. 2026-12-03T14:00:00Z.")
        return value


class ObjectLabel(BaseModel):
    """How an admin page names an object: words the admin may see, and where it is shown.

    ``text`` is a username, a group name, or a document's allowed name; ``href`` the admin
    page that shows the object (None when there is none)."""

    text: str
    href: str | None = None
