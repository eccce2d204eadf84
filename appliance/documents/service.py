"""Documents: submit for ingestion, grants as index principals, delete, list."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.auth.tables import User
from appliance.core import places
from appliance.core.blobs import BlobStore
from appliance.core.classification import check_classification
from appliance.core.crypto import Crypto
from appliance.core.db import new_id
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied
from appliance.core.places import DOC_FILENAME, DOC_KEY, DOC_TITLE
from appliance.documents.tables import (
    DELETING,
    FAILED,
    INDEXED,
    QUEUED,
    Chunk,
    Document,
    DocumentGrant,
    LegalHold,
)
from ingest.index import VectorIndex

# Failures found before the file was stored: nothing is kept that could be retried.
NOT_STORED = frozenset({"too_large", "empty"})


@dataclass(frozen=True)
class Submitted:
    """What `submit_file` did."""

    document: Document
    duplicate: bool


def doc_principals(session: Session, doc_id: str) -> list[str]:
    """The principals that may read a document (every grant level implies read)."""
    return sorted(
        session.execute(select(DocumentGrant.principal).where(DocumentGrant.doc_id == doc_id))
        .scalars()
        .all()
    )


def filename_of(crypto: Crypto, doc: Document) -> str:
    """Decrypt a document's original filename."""
    return crypto.decrypt_text(DOC_KEY, doc.id, DOC_FILENAME, doc.filename_ct)


def title_of(crypto: Crypto, doc: Document) -> str | None:
    """Decrypt a document's title, if it has one."""
    if doc.title_ct is None:
        return None
    return crypto.decrypt_text(DOC_KEY, doc.id, DOC_TITLE, doc.title_ct)


def submit_file(
    *,
    session: Session,
    crypto: Crypto,
    blobs: BlobStore,
    path: Path,
    filename: str,
    owner: User,
    grants: list[str],
    classification: str,
    max_bytes: int,
    actor: str,
    as_new: bool = False,
) -> Submitted:
    """Queue a file for ingestion: encrypt and store it, record grants, audit the upload.

    A file over the size limit, or empty, is recorded as failed with a reason (nothing is
    stored). The same content already submitted by the same owner is not stored twice: the
    existing document comes back with ``duplicate`` set, its grants and classification as
    they were (the caller tells the person and offers to change them). ``as_new`` stores
    it as a new document all the same (a new version the person asked for).
    """
    check_classification(classification)
    size = path.stat().st_size
    content_mac = crypto.mac_file("document-content", path)
    existing = (
        None
        if as_new
        else session.execute(
            select(Document)
            .where(
                Document.content_mac == content_mac,
                Document.owner_id == owner.id,
                Document.state.not_in((DELETING, FAILED)),
            )
            .order_by(Document.created_at)
        )
        .scalars()
        .first()
    )
    if existing is not None:
        audit.record(
            session,
            actor=actor,
            action="document.upload",
            target=f"doc:{existing.id}",
            outcome="duplicate",
        )
        return Submitted(existing, True)

    doc_id = new_id()
    crypto.create_data_key(DOC_KEY, doc_id)
    doc = Document(
        id=doc_id,
        owner_id=owner.id,
        filename_ct=crypto.encrypt_text(DOC_KEY, doc_id, DOC_FILENAME, filename),
        content_mac=content_mac,
        size_bytes=size,
        classification=classification,
        state=QUEUED,
    )
    if size > max_bytes:
        doc.state = FAILED
        doc.error_code = "too_large"
        doc.error_reason = (
            f"The file is {size / 1048576:.1f} MiB, over the {max_bytes // 1048576} MiB limit. "
            "Split it, or raise the setting ingest.max_upload_mb."
        )
    elif size == 0:
        doc.state = FAILED
        doc.error_code = "empty"
        doc.error_reason = "The file is empty. Check that you picked the right file."
    else:
        blobs.put(doc_id, crypto.encrypt(DOC_KEY, doc_id, places.DOC_BLOB, path.read_bytes()))
    session.add(doc)
    session.flush()
    for principal in dict.fromkeys([owner.principal, *grants]):
        level = "manage" if principal == owner.principal else "read"
        session.add(
            DocumentGrant(doc_id=doc_id, principal=principal, level=level, granted_by=actor)
        )
    audit.record(
        session,
        actor=actor,
        action="document.upload",
        target=f"doc:{doc_id}",
        outcome="ok" if doc.state == QUEUED else "failed",
        details={
            "size": size,
            "grants": len(set(grants)),
            "classification": classification,
            **({"as_new": True} if as_new else {}),
        },
    )
    return Submitted(doc, False)


# Two uploads of one file at once (a double click) both looked for a duplicate before either
# had committed, and made two documents; the routes hold this from the look-up to the commit.
submit_lock = threading.Lock()


def retry(*, session: Session, blobs: BlobStore, doc: Document, actor: str) -> None:
    """Queue a failed document again from its stored (encrypted) upload.

    Files refused before storing (empty, over the limit) have nothing kept to retry: the
    person picks the file again. A document whose content is meanwhile in the library again
    is not queued twice.
    """
    if doc.state != FAILED:
        raise InvalidInput("Only a failed upload can be retried.")
    if doc.error_code in NOT_STORED or not blobs.exists(doc.id):
        raise InvalidInput(
            "This upload's file was not kept, so it cannot be retried here. "
            "Pick the file again to upload it."
        )
    again = session.execute(
        select(Document.id).where(
            Document.content_mac == doc.content_mac,
            Document.owner_id == doc.owner_id,
            Document.state.not_in((DELETING, FAILED)),
        )
    ).first()
    if again is not None:
        raise InvalidInput("The same file is in your library again already; remove this one.")
    previous = doc.error_code
    doc.state = QUEUED
    doc.attempts = 0
    doc.chunks_done = doc.chunks_total = 0
    doc.error_code = doc.error_reason = None
    doc.claimed_by = None
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="document.retry",
        target=f"doc:{doc.id}",
        details={"previous_error": previous},
    )


def resolve_document(session: Session, crypto: Crypto, ref: str) -> Document:
    """Find a document by id or by its unique filename."""
    doc = session.get(Document, ref)
    if doc is not None and doc.state != DELETING:
        return doc
    matches = [
        d
        for d in session.execute(select(Document).where(Document.state != DELETING)).scalars()
        if filename_of(crypto, d) == ref
    ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InvalidInput(f"Several documents are named {ref!r}; give the document id instead.")
    raise NotFound(f"No document {ref!r}. List documents with `appliance docs list`.")


def begin_delete(*, session: Session, index: VectorIndex, doc: Document, actor: str) -> None:
    """First step of deletion: mark DELETING and hide the chunks from every search.

    A document under legal hold is refused here, so no path (user, admin, retention job,
    user erasure) can delete it.
    """
    if session.get(LegalHold, doc.id) is not None:
        audit.record(
            session,
            actor=actor,
            action="document.delete",
            target=f"doc:{doc.id}",
            outcome="refused",
            details={"reason": "legal_hold"},
        )
        session.commit()
        raise PermissionDenied(
            "This document is under legal hold and cannot be deleted until an admin lifts the hold."
        )
    doc.state = DELETING
    audit.record(session, actor=actor, action="document.delete", target=f"doc:{doc.id}")
    session.commit()
    index.hide(doc.id)


def finish_delete(
    *, session: Session, index: VectorIndex, crypto: Crypto, blobs: BlobStore, doc_id: str
) -> None:
    """Second step (also run by recovery): shred the key, then remove points, blob, rows."""
    crypto.delete_data_key(DOC_KEY, doc_id)
    index.delete_document(doc_id)
    blobs.delete(doc_id)
    session.execute(delete(Chunk).where(Chunk.doc_id == doc_id))
    session.execute(delete(DocumentGrant).where(DocumentGrant.doc_id == doc_id))
    session.execute(delete(Document).where(Document.id == doc_id))
    session.commit()


def visible_document_ids(session: Session) -> set[str]:
    """Ids of documents whose chunks may be visible in the index."""
    return set(session.execute(select(Document.id).where(Document.state == INDEXED)).scalars())


# -- passage reads: audited once per passage and sign-in session, not per keystroke -------

_PASSAGE_READS_KEPT = 50_000
_passage_reads: OrderedDict[tuple[str, str, int], None] = OrderedDict()
_passage_lock = threading.Lock()


def record_passage_read(
    *,
    session: Session,
    actor: str,
    via: str,
    doc_id: str,
    chunk_no: int,
    client: str | None,
) -> bool:
    """Audit that `actor` read passage `chunk_no` of a document through sign-in `via`.

    The first read of each passage in each session or API token is recorded (with how many
    distinct passages of that document the session has read so far); repeats, as a preview
    is reopened, are not. Returns whether an entry was written. Remembered per process:
    another replica or a restart records a passage again, never less.
    """
    key = (via, doc_id, chunk_no)
    with _passage_lock:
        if key in _passage_reads:
            _passage_reads.move_to_end(key)
            return False
        _passage_reads[key] = None
        if len(_passage_reads) > _PASSAGE_READS_KEPT:
            _passage_reads.popitem(last=False)
        count = sum(1 for v, d, _ in _passage_reads if v == via and d == doc_id)
    audit.record(
        session,
        actor=actor,
        action="document.passage_read",
        target=f"doc:{doc_id}",
        client=client,
        details={"chunk": chunk_no, "passages_this_session": count},
    )
    return True
