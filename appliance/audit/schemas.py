"""Request and response bodies of the audit API."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from appliance.audit import query as audit_query


class DetailField(BaseModel):
    """One detail of an entry, as a person reads it (ids replaced by allowed names)."""

    label: str
    value: str


class AuditEntryOut(BaseModel):
    """One audit entry. ``actor_name`` is the username, or a pseudonym once erased.

    ``target_name`` names the target as the viewing admin may see it (a document by title
    only where they may read it); ``fields`` are the details in words."""

    id: int
    ts: dt.datetime
    actor: str
    actor_name: str
    client: str | None
    action: str
    target: str | None
    target_name: str | None
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str
    actor_href: str | None = None
    target_href: str | None = None
    fields: list[DetailField] = Field(default_factory=list)

    @classmethod
    def of(cls, entry: audit_query.Entry, **extra: Any) -> AuditEntryOut:
        """From the service's entry (plus the readable names the route adds)."""
        return cls(**{**entry.to_json(), **extra})


class AuditPageOut(BaseModel):
    """One page of entries; pass ``next_cursor`` as ``cursor`` for the next (null: the end)."""

    entries: list[AuditEntryOut]
    next_cursor: int | None


class ExportRequestIn(BaseModel):
    """An audit export to hold for a second admin's approval: format and filters."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["jsonl", "csv"] = "jsonl"
    since: dt.datetime | None = Field(None, description="Entries at or after this time (UTC).")
    until: dt.datetime | None = Field(None, description="Entries before this time (UTC).")
    actor: str | None = Field(None, max_length=128, description="user:<id>, or a username.")
    action: str | None = Field(None, max_length=64, description="'auth' matches auth.*.")
    target: str | None = Field(None, max_length=128)
    outcome: str | None = Field(None, max_length=16)
    reason: str | None = Field(None, max_length=500, description="Why; shown to approvers.")


class CheckpointBody(BaseModel):
    """A signed checkpoint of the chain's head (``entries`` counts pruned entries too)."""

    model_config = ConfigDict(extra="forbid")

    entries: int = Field(ge=0)
    head_id: int = Field(ge=0, le=2**62)
    head_hash: str = Field(pattern="^[0-9a-f]{64}$")
    time: str = Field(max_length=40)
    mac: str = Field(pattern="^[0-9a-f]{64}$")


class VerifyIn(BaseModel):
    """What to verify the chain against: optionally a checkpoint kept off the server."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: CheckpointBody | None = None


class VerifyOut(BaseModel):
    """The chain's state: ok, or the first break and where it is."""

    ok: bool
    entries: int
    pruned: int
    head: str
    head_id: int | None
    problem: str | None
    at_id: int | None
