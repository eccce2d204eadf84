"""The one read rule: who may read, see or manage a document, decided fresh from the database.

DESIGN invariant 1: a document's content reaches a person only when it is live (indexed)
and granted, at any level, to one of their principals (`appliance.acl.principals`). The
search filters on the same principals inside the engine; these functions are the database
re-check every path runs in the same request (retrieval, passages, downloads, listings).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from appliance.acl.principals import principals_for
from appliance.auth.tables import User
from appliance.documents.tables import (
    DELETING,
    EMBEDDING,
    FAILED,
    INDEXED,
    PARSING,
    QUEUED,
    Document,
    DocumentGrant,
)

READ = "read"
MANAGE = "manage"
LEVELS = (READ, MANAGE)
NOT_FOUND = "No such document."
# States whose progress the managers of a document see in their library.
UNFINISHED = (QUEUED, PARSING, EMBEDDING, FAILED)


# -- who may do what ---------------------------------------------------------------------


def _granted(principals: Sequence[str], level: str | None = None) -> Select[str]:
    query = select(DocumentGrant.doc_id).where(DocumentGrant.principal.in_(list(principals)))
    if level is not None:
        query = query.where(DocumentGrant.level == level)
    return query


def readable_documents_query(principals: Sequence[str]) -> Select[Document]:
    """Live (indexed) documents granted, at any level, to any of these principals."""
    return select(Document).where(Document.state == INDEXED, Document.id.in_(_granted(principals)))


def visible_documents_query(principals: Sequence[str]) -> Select[Document]:
    """A library listing: readable documents plus unfinished uploads these principals manage."""
    return select(Document).where(
        or_(
            and_(Document.state == INDEXED, Document.id.in_(_granted(principals))),
            and_(
                Document.state.in_(UNFINISHED),
                Document.id.in_(_granted(principals, MANAGE)),
            ),
        )
    )


def readable_document_ids(
    session: Session, doc_ids: set[str], principals: Sequence[str]
) -> set[str]:
    """Of these documents, the ones live and granted to any of the principals (fresh)."""
    if not doc_ids or not principals:
        return set()
    rows = session.execute(
        select(Document.id).where(
            Document.id.in_(doc_ids),
            Document.state == INDEXED,
            Document.id.in_(_granted(principals)),
        )
    ).scalars()
    return set(rows)


def has_grant(
    session: Session, principals: Sequence[str], doc_id: str, level: str | None = None
) -> bool:
    if not principals:
        return False
    query = select(func.count()).where(
        DocumentGrant.doc_id == doc_id, DocumentGrant.principal.in_(list(principals))
    )
    if level is not None:
        query = query.where(DocumentGrant.level == level)
    return bool(session.execute(query).scalar_one())


def can_read(session: Session, user: User, doc: Document) -> bool:
    """Whether the user may read the document's content now (live and granted, fresh)."""
    return doc.state == INDEXED and has_grant(session, principals_for(session, user), doc.id)


def can_see(session: Session, user: User, doc: Document) -> bool:
    """Whether the user may see the document's metadata: readable, or an upload they manage."""
    if doc.state == INDEXED:
        return can_read(session, user, doc)
    return doc.state in UNFINISHED and has_grant(
        session, principals_for(session, user), doc.id, MANAGE
    )


def can_manage(session: Session, user: User, doc: Document) -> bool:
    """Whether the user may change the document's grants and classification, or delete it."""
    if not user.is_active or doc.state == DELETING:
        return False
    return user.is_admin or has_grant(session, principals_for(session, user), doc.id, MANAGE)
