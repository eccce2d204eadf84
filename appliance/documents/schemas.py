"""Request and response bodies of the documents and approvals API."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from appliance.approvals.schemas import ApprovalRequestOut
from appliance.core.classification import Classification

Level = Literal["read", "manage"]
ListedState = Literal["queued", "parsing", "embedding", "indexed", "failed"]


class DocumentOut(BaseModel):
    """A document's metadata and ingestion progress (shown only to those who may see it)."""

    id: str
    filename: str | None = Field(
        description="Only for those who may read it (or manage its upload); else null."
    )
    title: str | None
    classification: str
    state: str
    pages: int | None
    chunks_total: int
    chunks_done: int
    error_reason: str | None
    size_bytes: int
    created_at: dt.datetime
    indexed_at: dt.datetime | None
    yours: bool = Field(description="Whether you uploaded it.")
    can_manage: bool = Field(description="Whether you may change its access or delete it.")
    shared_with: list[str] = Field(
        default_factory=list,
        description="Who may read it, by name (user:NAME, group:NAME, everyone): every "
        "grant if you manage it, else only the grants through which you read it.",
    )


class UploadOut(DocumentOut):
    """The document an upload made, or the one already there with the same content."""

    duplicate: bool = Field(
        False,
        description="You uploaded this file before: this is that document, unchanged "
        "(the sharing and classification sent with the upload were not applied).",
    )


class PrincipalNameOut(BaseModel):
    """A name to share with: a user or a group (names only, never ids)."""

    kind: Literal["user", "group"]
    name: str


class DocumentListOut(BaseModel):
    """One page of your library, with counts over everything you may see."""

    total: int = Field(description="Documents matching the search and filters.")
    by_state: dict[str, int] = Field(description="Matching the search, per state.")
    by_classification: dict[str, int] = Field(description="Matching the search, per level.")
    documents: list[DocumentOut]


class PassageOut(BaseModel):
    """One passage (chunk) of a document."""

    doc_id: str
    chunk_no: int
    page: int | None
    heading: str | None
    text: str


class GrantIn(BaseModel):
    """A grant to add or change."""

    model_config = ConfigDict(extra="forbid")

    principal: str = Field(
        min_length=1,
        max_length=80,
        description="user:NAME, group:NAME, everyone, or a bare NAME only one user or group has.",
    )
    level: Level = "read"


class GrantOut(BaseModel):
    """One grant on a document."""

    principal: str = Field(description="Stored form: user:<id>, group:<id> or everyone.")
    name: str = Field(description="Readable form: user:NAME, group:NAME or everyone.")
    level: str
    granted_by: str | None
    created_at: dt.datetime


class ChangeOut(BaseModel):
    """The outcome of an access change: done, unchanged, or held for approval."""

    status: Literal["done", "unchanged", "approval_required"]
    grants: list[GrantOut] = Field(default_factory=list)
    approval: ApprovalRequestOut | None = None


class ClassifyIn(BaseModel):
    """A new classification."""

    model_config = ConfigDict(extra="forbid")

    classification: Classification


class ApprovalIn(BaseModel):
    """An action to hold for a second admin: a grant, or a classification change."""

    model_config = ConfigDict(extra="forbid")

    doc_id: str = Field(min_length=1, max_length=32)
    kind: Literal["grant", "classify"]
    principal: str | None = Field(None, max_length=80, description="For a grant.")
    level: Level = "read"
    classification: Classification | None = Field(None, description="For a classify action.")
    reason: str | None = Field(None, max_length=500, description="Why, for the approver.")
