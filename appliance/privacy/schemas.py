"""Request and response bodies of the privacy API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EraseIn(BaseModel):
    """How to erase a user: their documents are deleted, or transferred to another user."""

    model_config = ConfigDict(extra="forbid")

    documents: Literal["delete", "transfer"]
    transfer_to: str | None = Field(
        None, max_length=32, description="User id receiving the documents (transfer only)."
    )


class ErasureOut(BaseModel):
    """What the erasure removed or moved."""

    user_id: str
    documents_deleted: list[str]
    documents_transferred: list[str]
    grants_removed: int
    conversations_deleted: int
    sessions_ended: int
    tokens_deleted: int
    recovery_codes_deleted: int
    memberships_removed: int
