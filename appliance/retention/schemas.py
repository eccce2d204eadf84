"""Request and response bodies of the retention API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from appliance.core.classification import Classification


class PolicyOverrideOut(BaseModel):
    """An admin's override of one policy."""

    key: str
    value: int | None
    updated_by: str
    updated_at: dt.datetime
    updated_by_name: str | None = Field(None, description="Who, by username (or pseudonym).")


class PolicyOut(BaseModel):
    """The retention policies: effective values, the settings, and the overrides."""

    effective: dict[str, int | None] = Field(
        description="What the retention job applies now (null: keep forever)."
    )
    settings: dict[str, int | None] = Field(description="The values from the settings file.")
    overrides: list[PolicyOverrideOut]


class PolicyIn(BaseModel):
    """Override some policies (null keeps forever) and drop other overrides."""

    model_config = ConfigDict(extra="forbid")

    set: dict[str, int | None] = Field(
        default_factory=dict,
        max_length=20,
        description="Policy name -> days (0 or null: keep forever; session_days: 0 or more).",
    )
    reset: list[str] = Field(
        default_factory=list, max_length=20, description="Policies that go back to the setting."
    )


class RetainIn(BaseModel):
    """When the retention job deletes the document (null: its classification's period)."""

    model_config = ConfigDict(extra="forbid")

    retain_until: dt.datetime | None = Field(
        description="A time with a zone, e.g. 2030-01-01T00:00:00Z, or null."
    )


class HoldIn(BaseModel):
    """Why a document is put under legal hold (kept out of the audit log's details)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500)


class RetentionStateOut(BaseModel):
    """A document's retention state."""

    doc_id: str
    retain_until: dt.datetime | None
    legal_hold: bool
    held_since: dt.datetime | None = None
    held_by: str | None = None
    held_by_name: str | None = Field(None, description="Who placed the hold, by username.")


class HoldCandidateOut(BaseModel):
    """A document an admin may put under legal hold, named as they may see it."""

    id: str
    label: str = Field(
        description="Its title where you may read it, else e.g. 'a confidential document "
        "owned by alice, uploaded 3 Dec 2026'."
    )
    classification: Classification
    owner: str
    created_at: dt.datetime
    legal_hold: bool


class ApprovalPendingOut(BaseModel):
    """The action waits for a second admin: approve it under /api/admin/approvals."""

    status: Literal["approval_required"] = "approval_required"
    approval_id: str
    kind: str


class BulkFilter(BaseModel):
    """Select documents by what they are (all given conditions must hold)."""

    model_config = ConfigDict(extra="forbid")

    classification: Classification | None = None
    owner_id: str | None = Field(None, max_length=32, description="Documents this user owns.")
    created_before: dt.datetime | None = Field(
        None, description="Uploaded before this time (with a zone)."
    )


class BulkDeleteIn(BaseModel):
    """Documents to delete at once: a list of ids, or a filter (resolved when asked, so an
    approval deletes exactly the documents it listed)."""

    model_config = ConfigDict(extra="forbid")

    doc_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, min_length=1, max_length=1000
    )
    filter: BulkFilter | None = None


class BulkDeleteOut(BaseModel):
    """What a bulk deletion did; held documents are kept and listed."""

    status: Literal["done"] = "done"
    deleted: list[str]
    held: list[str]
    not_found: list[str]
    failed: list[str] = Field(
        default_factory=list,
        description="Left as they were after an error (see the server log); ask again for them.",
    )
