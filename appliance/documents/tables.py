"""Documents, their grants, their chunks. Content columns hold AES-GCM ciphertext only."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from appliance.core.db import Base, new_id, utcnow

# Ingestion states, in order. A document is visible to search only in INDEXED.
QUEUED = "queued"
PARSING = "parsing"
EMBEDDING = "embedding"
INDEXED = "indexed"
FAILED = "failed"
DELETING = "deleting"
STATES = (QUEUED, PARSING, EMBEDDING, INDEXED, FAILED, DELETING)
IN_PROGRESS = (PARSING, EMBEDDING)


class Document(Base):
    """One uploaded file and its ingestion job."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_state", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    filename_ct: Mapped[bytes] = mapped_column(LargeBinary)
    title_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # Keyed hash (HMAC-SHA256) of the content: finds duplicates without revealing a plain
    # sha256 that anyone could compare against a known file.
    content_mac: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int]
    mime_type: Mapped[str | None] = mapped_column(String(128), default=None)
    classification: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    pages: Mapped[int | None] = mapped_column(default=None)
    chunks_total: Mapped[int] = mapped_column(default=0)
    chunks_done: Mapped[int] = mapped_column(default=0)
    error_code: Mapped[str | None] = mapped_column(String(32), default=None)
    error_reason: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    # "host:pid" of the worker processing it; recovery resets work whose process is gone.
    claimed_by: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    indexed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Deleted by the retention job after this moment (replaces the classification's period).
    retain_until: Mapped[dt.datetime | None] = mapped_column(default=None)


class DocumentGrant(Base):
    """A principal's access to a document: 'read' or 'manage' (manage implies read)."""

    __tablename__ = "document_grants"

    doc_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    principal: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    level: Mapped[str] = mapped_column(String(8), default="read")
    granted_by: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Chunk(Base):
    """A passage of a document: its text and heading encrypted with the document's key."""

    __tablename__ = "chunks"
    __table_args__ = (UniqueConstraint("doc_id", "chunk_no"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    doc_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    chunk_no: Mapped[int]
    page: Mapped[int | None] = mapped_column(default=None)
    heading_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    text_ct: Mapped[bytes] = mapped_column(LargeBinary)
    # The embedder's vector of each sentence of the text (ingest.sentences), so evidence is
    # scored without embedding at question time; None for chunks stored before (0010).
    sentence_vectors_ct: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)


class LegalHold(Base):
    """A document under legal hold: no one and nothing deletes it until the hold is lifted."""

    __tablename__ = "legal_holds"

    doc_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    placed_by: Mapped[str] = mapped_column(String(128))
    placed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
