"""The ACL filter inside the engine does not starve results (DESIGN invariant 1).

A user who may read 1% of a corpus of 4,000 random 384-d chunks gets, from the filtered
search, the same top-10 as an exact numpy scan over that user's own chunks: once on the
appliance's own index, and once on a shard tuned so that the filter goes through the HNSW
graph (the case where a post-filter or a naive graph walk would come back short).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import select

from appliance.acl import rules
from appliance.acl import service as acl
from appliance.acl.principals import principals_for
from appliance.auth import service as users
from appliance.auth.tables import User
from appliance.core.runtime import EMBED_DIMENSION, Runtime
from appliance.documents.tables import INDEXED, Document, DocumentGrant
from ingest.index import ChunkPoint, VectorIndex
from ingest.qdrant_edge import QdrantEdgeIndex
from tests.fixtures.app import add_user
from tests.fixtures.index import EDGE_GRAPH_WITHOUT_PAYLOAD_LINKS, unit_vectors

N_DOCS = 200
CHUNKS_PER_DOC = 20
READABLE_DOCS = 2  # 1% of the corpus: one granted to the user, one to their group
QUERIES = 25
K = 10


def _corpus(rt: Runtime) -> tuple[list[str], npt.NDArray[np.float32], list[str], str]:
    """Documents with grants in the database; returns ids, vectors, readable ids, reader id."""
    reader_id = add_user(rt, "reader", group="few")
    others = [add_user(rt, f"other{i}", group=f"team{i % 4}") for i in range(8)]
    rng = np.random.default_rng(20261122)
    vectors = unit_vectors(rng, N_DOCS * CHUNKS_PER_DOC, EMBED_DIMENSION)
    with rt.sessions() as s:
        owner = s.get_one(User, others[0])
        few = users.get_group_by_name(s, "few")
        doc_ids: list[str] = []
        for n in range(N_DOCS):
            doc = Document(
                owner_id=owner.id,
                filename_ct=b"-",  # never decrypted here: only ids and vectors matter
                content_mac=f"{n:064x}",
                size_bytes=1,
                classification="internal",
                state=INDEXED,
                chunks_total=CHUNKS_PER_DOC,
                chunks_done=CHUNKS_PER_DOC,
            )
            s.add(doc)
            s.flush()
            doc_ids.append(doc.id)
            principals = {owner.principal, f"user:{others[n % len(others)]}"}
            if n % 3 == 0:
                principals.add("group:" + users.get_group_by_name(s, f"team{n % 4}").id)
            if n == 37:
                principals.add(f"user:{reader_id}")
            if n == 151:
                principals.add(f"group:{few.id}")
            for p in principals:
                s.add(DocumentGrant(doc_id=doc.id, principal=p, level="read"))
        s.commit()
    readable = [doc_ids[37], doc_ids[151]]
    return doc_ids, vectors, readable, reader_id


def _fill(
    index: VectorIndex, rt: Runtime, doc_ids: list[str], vectors: npt.NDArray[np.float32]
) -> None:
    points = [
        ChunkPoint(doc_id=d, chunk_no=c, vector=vectors[i * CHUNKS_PER_DOC + c])
        for i, d in enumerate(doc_ids)
        for c in range(CHUNKS_PER_DOC)
    ]
    for start in range(0, len(points), 500):
        index.upsert_hidden(points[start : start + 500])
    with rt.sessions() as s:
        for d in doc_ids:
            acl.sync_index(s, index, d)
    index.flush()


def _exact_top(
    query: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    doc_ids: list[str],
    readable: list[str],
) -> list[tuple[str, int]]:
    keys = [(d, c) for d in readable for c in range(CHUNKS_PER_DOC)]
    rows = np.array([doc_ids.index(d) * CHUNKS_PER_DOC + c for d, c in keys])
    scores = vectors[rows] @ query
    return [keys[i] for i in np.argsort(-scores, kind="stable")[:K]]


@pytest.mark.timeout(300)
def test_filtered_top10_equals_an_exact_scan_of_the_readers_chunks(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    doc_ids, vectors, readable, reader_id = _corpus(rt)
    with rt.sessions() as s:
        principals = principals_for(s, s.get_one(User, reader_id))
        listed = {d.id for d in s.execute(rules.readable_documents_query(principals)).scalars()}
    assert listed == set(readable)
    assert len(readable) / N_DOCS == 0.01

    tuned = QdrantEdgeIndex(
        tmp_path / "graph-index", EMBED_DIMENSION, tuning=EDGE_GRAPH_WITHOUT_PAYLOAD_LINKS
    )
    try:
        for index in (rt.index(), tuned):
            _fill(index, rt, doc_ids, vectors)
            assert index.count() == N_DOCS * CHUNKS_PER_DOC
            queries = unit_vectors(np.random.default_rng(7), QUERIES, EMBED_DIMENSION)
            # Half the queries aim at the reader's own chunks, half at everyone else's.
            first = doc_ids.index(readable[0]) * CHUNKS_PER_DOC
            own = vectors[first : first + QUERIES // 2]
            for query in [*queries, *own]:
                hits = index.search(query, principals, k=K)
                expected = _exact_top(query, vectors, doc_ids, readable)
                assert [(h.doc_id, h.chunk_no) for h in hits] == expected
                for h in hits:
                    row = doc_ids.index(h.doc_id) * CHUNKS_PER_DOC + h.chunk_no
                    exact = float(vectors[row] @ query)
                    assert h.score == pytest.approx(exact, abs=1e-4)
    finally:
        tuned.close()
    # The documents are untouched by the search: still indexed, still granted.
    with rt.sessions() as s:
        assert s.execute(select(Document).where(Document.state != INDEXED)).first() is None
