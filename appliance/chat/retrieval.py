"""Retrieval for one user: ACL-filtered vector search, then a database re-check, then decryption.

DESIGN invariant 1: the search itself filters on the caller's principals, and a chunk's
text is used only after the database confirms, in this request, that its document is
indexed (live) and still granted to one of those principals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.acl.principals import principals_for
from appliance.acl.rules import readable_document_ids
from appliance.auth.tables import User
from appliance.core import places
from appliance.core.places import DOC_KEY
from appliance.core.runtime import Runtime
from appliance.documents import service as docs
from appliance.documents.tables import Chunk, Document
from ingest.index import Hit
from ingest.sentences import split_sentences, unpack_vectors


@dataclass(frozen=True)
class Source:
    """A retrieved passage the user may read, ranked from 1."""

    rank: int
    doc_id: str
    chunk_no: int
    filename: str
    title: str | None
    page: int | None
    heading: str | None
    text: str
    score: float
    # The vectors of its sentences stored at ingestion (None for older chunks): internal.
    sentence_vectors: npt.NDArray[np.float32] | None = field(
        default=None, repr=False, compare=False
    )

    def public(self, snippet_chars: int = 300) -> dict[str, object]:
        """What the API shows of it: no scores' internals, a bounded snippet."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["snippet"] = self.text[:snippet_chars]
        del data["text"], data["sentence_vectors"]
        return data


RRF_K = 60
"""Reciprocal-rank-fusion constant (Cormack et al.): ranks, not raw scores, are fused."""


def retrieve(
    *,
    rt: Runtime,
    session: Session,
    user: User,
    query: str,
    k: int,
    min_score: float,
    also: Sequence[str] = (),
) -> list[Source]:
    """The top-k passages this user may read, best first (empty when nothing matches).

    With ``also`` (e.g. the question with its conversation's context), each text is searched
    too and the rankings are fused by reciprocal rank, so a follow-up on a new topic still
    finds its own passages while a terse "and for visitors?" keeps its context.
    """
    principals = principals_for(session, user)
    queries = [q for q in (query, *also) if q.strip()]
    if not principals or not query.strip():
        return []
    vectors = rt.embedder().embed(queries)
    index = rt.index()
    fused: dict[tuple[str, int], float] = {}
    best: dict[tuple[str, int], Hit] = {}
    for vector in vectors:
        # Ask for a few more than k: the database re-check may drop hits whose document
        # was revoked or deleted since the index was last updated.
        ranked = [h for h in index.search(vector, principals, k=k + 5) if h.score >= min_score]
        for position, hit in enumerate(ranked):
            key = (hit.doc_id, hit.chunk_no)
            fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + position + 1)
            if key not in best or hit.score > best[key].score:
                best[key] = hit
    order = sorted(fused, key=lambda key: (-fused[key], -best[key].score))
    hits = [best[key] for key in order]
    allowed = readable_document_ids(session, {h.doc_id for h in hits}, principals)
    hits = [h for h in hits if h.doc_id in allowed][:k]
    if not hits:
        return []
    wanted = {(h.doc_id, h.chunk_no) for h in hits}
    rows = session.execute(
        select(Chunk).where(
            Chunk.doc_id.in_({d for d, _ in wanted}),
            Chunk.chunk_no.in_({c for _, c in wanted}),
        )
    ).scalars()
    chunks = {(c.doc_id, c.chunk_no): c for c in rows if (c.doc_id, c.chunk_no) in wanted}
    documents = {
        d.id: d
        for d in session.execute(
            select(Document).where(Document.id.in_({h.doc_id for h in hits}))
        ).scalars()
    }
    crypto = rt.crypto
    sources: list[Source] = []
    for hit in hits:
        chunk = chunks.get((hit.doc_id, hit.chunk_no))
        doc = documents.get(hit.doc_id)
        if chunk is None or doc is None:
            continue
        text = crypto.decrypt_text(
            DOC_KEY, doc.id, places.chunk_text(chunk.chunk_no), chunk.text_ct
        )
        sentence_vectors = (
            unpack_vectors(
                crypto.decrypt(
                    DOC_KEY,
                    doc.id,
                    places.chunk_sentence_vectors(chunk.chunk_no),
                    chunk.sentence_vectors_ct,
                ),
                sentences=len(split_sentences(text)),
            )
            if chunk.sentence_vectors_ct
            else None
        )
        sources.append(
            Source(
                rank=len(sources) + 1,
                doc_id=doc.id,
                chunk_no=chunk.chunk_no,
                filename=docs.filename_of(crypto, doc),
                title=docs.title_of(crypto, doc),
                page=chunk.page,
                heading=crypto.decrypt_text(
                    DOC_KEY, doc.id, places.chunk_heading(chunk.chunk_no), chunk.heading_ct
                )
                if chunk.heading_ct
                else None,
                text=text,
                score=round(hit.score, 4),
                sentence_vectors=sentence_vectors,
            )
        )
    return sources
