"""The VectorIndex contract: every backend, real engines, no mocks.

Runs on a Qdrant Edge shard in tmp_path and on qdrant-client's local mode, and also on a real
Qdrant server when APPLIANCE_TEST_QDRANT_URL is set (see tests/fixtures/index.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.index import EVERYONE, ChunkPoint, Hit, VectorIndex, VectorIndexError, point_id
from ingest.qdrant_edge import EdgeTuning, QdrantEdgeIndex
from ingest.qdrant_server import QdrantServerIndex
from tests.fixtures.index import (
    EDGE_GRAPH_WITH_PAYLOAD_LINKS,
    EDGE_GRAPH_WITHOUT_PAYLOAD_LINKS,
    SMALL_DIMENSION,
    IndexMaker,
    unit_vectors,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DIM = SMALL_DIMENSION


def doc_id() -> str:
    """A fresh document id, as the database makes them."""
    return uuid.uuid4().hex


def chunks(doc: str, count: int, *, seed: int = 0, dimension: int = DIM) -> list[ChunkPoint]:
    """``count`` chunks of ``doc`` with random unit vectors."""
    vectors = unit_vectors(np.random.default_rng(seed), count, dimension)
    return [ChunkPoint(doc, n, vectors[n]) for n in range(count)]


def keys(hits: Sequence[Hit]) -> set[tuple[str, int]]:
    """The (doc_id, chunk_no) of each hit."""
    return {(hit.doc_id, hit.chunk_no) for hit in hits}


def docs(hits: Sequence[Hit]) -> set[str]:
    """The documents the hits come from."""
    return {hit.doc_id for hit in hits}


def probe(dimension: int = DIM) -> list[float]:
    """Any non-zero query vector."""
    return [1.0] * dimension


# --- visibility -------------------------------------------------------------------------


def test_hidden_points_are_never_returned(vector_index: VectorIndex) -> None:
    doc = doc_id()
    vector_index.upsert_hidden(chunks(doc, 5))

    for principals in (["everyone"], ["user:1", "group:a", EVERYONE], ["group:x"]):
        assert vector_index.search(probe(), principals, 10) == []
    assert vector_index.count() == 5
    assert vector_index.document_ids() == {doc}


def test_publish_makes_all_chunks_visible(vector_index: VectorIndex) -> None:
    doc = doc_id()
    vector_index.upsert_hidden(chunks(doc, 6))

    vector_index.publish(doc, ["group:sales"])

    assert keys(vector_index.search(probe(), ["group:sales"], 10)) == {(doc, n) for n in range(6)}
    assert vector_index.search(probe(), ["group:hr", "user:7", EVERYONE], 10) == []


def test_publish_is_atomic_for_a_concurrent_searcher(vector_index: VectorIndex) -> None:
    doc = doc_id()
    vector_index.upsert_hidden(chunks(doc, 40))
    seen: list[int] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            seen.append(len(vector_index.search(probe(), ["group:a"], 100)))

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        for _ in range(15):
            vector_index.publish(doc, ["group:a"])
            vector_index.hide(doc)
    finally:
        stop.set()
        thread.join()

    assert seen
    assert set(seen) <= {0, 40}, "a search saw a half-published document"


def test_hide_makes_the_document_invisible_until_published_again(
    vector_index: VectorIndex,
) -> None:
    doc, other = doc_id(), doc_id()
    vector_index.upsert_hidden(chunks(doc, 3) + chunks(other, 2, seed=1))
    vector_index.publish(doc, ["group:a"])
    vector_index.publish(other, ["group:a"])

    vector_index.hide(doc)

    assert docs(vector_index.search(probe(), ["group:a"], 10)) == {other}
    assert vector_index.count(doc) == 3
    vector_index.publish(doc, ["group:a"])
    assert docs(vector_index.search(probe(), ["group:a"], 10)) == {doc, other}


def test_publish_replaces_the_previous_principals(vector_index: VectorIndex) -> None:
    doc = doc_id()
    vector_index.upsert_hidden(chunks(doc, 2))
    vector_index.publish(doc, ["group:a", "user:1"])

    vector_index.publish(doc, ["group:b"])

    assert vector_index.search(probe(), ["group:a", "user:1"], 10) == []
    assert docs(vector_index.search(probe(), ["group:b"], 10)) == {doc}


def test_delete_document_removes_only_its_points(vector_index: VectorIndex) -> None:
    doc, other = doc_id(), doc_id()
    vector_index.upsert_hidden(chunks(doc, 4) + chunks(other, 3, seed=1))
    vector_index.publish(doc, [EVERYONE])
    vector_index.publish(other, [EVERYONE])

    vector_index.delete_document(doc)

    assert vector_index.count(doc) == 0
    assert vector_index.count() == 3
    assert vector_index.document_ids() == {other}
    assert docs(vector_index.search(probe(), [EVERYONE], 10)) == {other}
    vector_index.delete_document(doc)  # deleting what is gone is a no-op
    vector_index.delete_document(doc_id())
    assert vector_index.count() == 3


def test_user_group_and_everyone_principals(vector_index: VectorIndex) -> None:
    mine, team, public, secret = doc_id(), doc_id(), doc_id(), doc_id()
    vector_index.upsert_hidden(
        chunks(mine, 2) + chunks(team, 2, seed=1) + chunks(public, 2, seed=2) + chunks(secret, 2)
    )
    vector_index.publish(mine, ["user:alice"])
    vector_index.publish(team, ["group:eng", "user:carol"])
    vector_index.publish(public, [EVERYONE])
    vector_index.publish(secret, ["user:bob"])

    def visible(principals: list[str]) -> set[str]:
        return docs(vector_index.search(probe(), principals, 20))

    assert visible(["user:alice", "group:eng", EVERYONE]) == {mine, team, public}
    assert visible(["user:alice", EVERYONE]) == {mine, public}
    assert visible(["user:carol", EVERYONE]) == {team, public}
    assert visible(["user:dave", "group:ops", EVERYONE]) == {public}
    assert visible(["user:dave"]) == set()
    assert visible(["user:bob"]) == {secret}


def test_search_never_returns_a_document_outside_the_callers_principals(
    vector_index: VectorIndex,
) -> None:
    rng = np.random.default_rng(3)
    pool = ["user:1", "user:2", "user:3", "group:a", "group:b", "group:c", EVERYONE]
    granted: dict[str, set[str]] = {}
    for n in range(12):
        doc = doc_id()
        vector_index.upsert_hidden(chunks(doc, 3, seed=n))
        grant = {str(p) for p in rng.choice(pool, size=int(rng.integers(1, 3)), replace=False)}
        vector_index.publish(doc, sorted(grant))
        granted[doc] = grant

    for _ in range(40):
        caller = {str(p) for p in rng.choice(pool, size=int(rng.integers(1, 4)), replace=False)}
        query = unit_vectors(rng, 1, DIM)[0]
        hits = vector_index.search(query, sorted(caller), 50)
        allowed = {doc for doc, grant in granted.items() if grant & caller}
        assert docs(hits) == allowed
        assert len(hits) == 3 * len(allowed)


@pytest.mark.parametrize(
    "principals",
    [[], (), "group:a", ["group:"], ["admin"], [""], ["user:1", None]],
    ids=["empty-list", "empty-tuple", "bare-string", "no-id", "unknown-kind", "blank", "none"],
)
def test_search_refuses_missing_or_malformed_principals(
    vector_index: VectorIndex, principals: Sequence[str]
) -> None:
    doc = doc_id()
    vector_index.upsert_hidden(chunks(doc, 2))
    vector_index.publish(doc, [EVERYONE])

    with pytest.raises(ValueError, match="principal"):
        vector_index.search(probe(), principals, 10)


def test_publish_refuses_malformed_principals(vector_index: VectorIndex) -> None:
    doc = doc_id()
    vector_index.upsert_hidden(chunks(doc, 1))

    with pytest.raises(ValueError, match="principal"):
        vector_index.publish(doc, ["everybody"])
    assert vector_index.search(probe(), [EVERYONE], 10) == []


# --- writes, counts, results ------------------------------------------------------------


def test_reupserting_a_chunk_is_idempotent(vector_index: VectorIndex) -> None:
    doc = doc_id()
    points = chunks(doc, 5)
    vector_index.upsert_hidden(points)
    vector_index.upsert_hidden(points)
    vector_index.upsert_hidden(points[:2])

    assert vector_index.count() == 5
    assert vector_index.count(doc) == 5
    vector_index.publish(doc, ["group:a"])
    assert len(vector_index.search(probe(), ["group:a"], 10)) == 5


def test_reupserting_a_published_chunk_hides_it_and_updates_its_vector(
    vector_index: VectorIndex,
) -> None:
    doc = doc_id()
    vector_index.upsert_hidden(chunks(doc, 3))
    vector_index.publish(doc, ["group:a"])
    axis = [0.0] * DIM
    axis[0] = 1.0

    vector_index.upsert_hidden([ChunkPoint(doc, 1, axis)])

    assert keys(vector_index.search(axis, ["group:a"], 10)) == {(doc, 0), (doc, 2)}
    vector_index.publish(doc, ["group:a"])
    best = vector_index.search(axis, ["group:a"], 1)
    assert keys(best) == {(doc, 1)}
    assert best[0].score == pytest.approx(1.0, abs=1e-5)


def test_document_ids_and_count(vector_index: VectorIndex) -> None:
    assert vector_index.document_ids() == set()
    assert vector_index.count() == 0
    a, b, c = doc_id(), doc_id(), doc_id()
    vector_index.upsert_hidden(chunks(a, 3) + chunks(b, 1) + chunks(c, 7))
    vector_index.publish(b, [EVERYONE])

    assert vector_index.document_ids() == {a, b, c}
    assert (vector_index.count(), vector_index.count(a), vector_index.count(c)) == (11, 3, 7)
    assert vector_index.count(doc_id()) == 0


def test_results_are_cosine_scores_best_first_and_at_most_k(vector_index: VectorIndex) -> None:
    rng = np.random.default_rng(5)
    doc = doc_id()
    vectors = unit_vectors(rng, 30, DIM) * 3.0  # not normalised: cosine must not care
    vector_index.upsert_hidden([ChunkPoint(doc, n, vectors[n]) for n in range(30)])
    vector_index.publish(doc, ["group:a"])
    query = rng.standard_normal(DIM)

    hits = vector_index.search(query, ["group:a"], 7)

    cosine = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    expected = np.argsort(-cosine)[:7]
    assert [hit.chunk_no for hit in hits] == [int(n) for n in expected]
    assert [hit.score for hit in hits] == pytest.approx(cosine[expected].tolist(), abs=1e-4)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


@pytest.mark.parametrize(
    "vector",
    [[1.0] * (DIM - 1), [1.0] * (DIM + 1), [0.0] * DIM, [float("nan")] + [1.0] * (DIM - 1)],
    ids=["short", "long", "zero", "nan"],
)
def test_bad_vectors_are_refused(vector_index: VectorIndex, vector: list[float]) -> None:
    with pytest.raises(ValueError, match="vector"):
        vector_index.search(vector, [EVERYONE], 5)
    with pytest.raises(ValueError, match="vector"):
        vector_index.upsert_hidden([ChunkPoint(doc_id(), 0, vector)])
    assert vector_index.count() == 0


@pytest.mark.parametrize(
    "point",
    [ChunkPoint("", 0, probe()), ChunkPoint("d", -1, probe()), ChunkPoint("d", True, probe())],
    ids=["empty-doc-id", "negative-chunk", "bool-chunk"],
)
def test_bad_points_are_refused_before_anything_is_written(
    vector_index: VectorIndex, point: ChunkPoint
) -> None:
    with pytest.raises(ValueError, match="doc_id|chunk_no"):
        vector_index.upsert_hidden([*chunks(doc_id(), 2), point])
    assert vector_index.count() == 0


@pytest.mark.parametrize("k", [0, -1])
def test_search_refuses_a_non_positive_k(vector_index: VectorIndex, k: int) -> None:
    with pytest.raises(ValueError, match="k must"):
        vector_index.search(probe(), [EVERYONE], k)


def test_point_ids_are_stable_uuid5() -> None:
    assert point_id("abc", 1) == point_id("abc", 1)
    assert point_id("abc", 1) != point_id("abc", 2)
    assert point_id("abc", 1).version == 5


def test_a_closed_index_raises_vector_index_error(vector_index: VectorIndex) -> None:
    vector_index.close()
    vector_index.close()  # closing twice is harmless

    with pytest.raises(VectorIndexError, match="closed"):
        vector_index.search(probe(), [EVERYONE], 1)
    with pytest.raises(VectorIndexError, match="closed"):
        vector_index.upsert_hidden(chunks(doc_id(), 1))


def test_flush_keeps_everything_searchable(vector_index: VectorIndex) -> None:
    doc = doc_id()
    vector_index.upsert_hidden(chunks(doc, 4))
    vector_index.publish(doc, ["group:a"])

    vector_index.flush()

    assert len(vector_index.search(probe(), ["group:a"], 10)) == 4


def test_concurrent_writers_and_searchers(vector_index: VectorIndex) -> None:
    errors: list[BaseException] = []
    written = [doc_id() for _ in range(8)]

    def writer(doc: str, seed: int) -> None:
        try:
            for _ in range(3):
                vector_index.upsert_hidden(chunks(doc, 4, seed=seed))
                vector_index.publish(doc, [f"group:{seed % 2}"])
        except BaseException as exc:  # any failure in a thread must fail the test
            errors.append(exc)

    def searcher() -> None:
        try:
            for _ in range(30):
                for hit in vector_index.search(probe(), ["group:0"], 50):
                    assert written.index(hit.doc_id) % 2 == 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(d, n)) for n, d in enumerate(written)]
    threads += [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert vector_index.count() == 32
    assert vector_index.document_ids() == set(written)
    assert len(vector_index.search(probe(), ["group:0", "group:1"], 50)) == 32


# --- recall of a selective filtered search ----------------------------------------------


def _filtered_recall(index: VectorIndex, rng: np.random.Generator) -> float:
    """Index 3,000 384-d points in 100 groups; mean recall@10 for callers in 1-3 groups."""
    n_points, n_groups, per_doc = 3000, 100, 30
    vectors = unit_vectors(rng, n_points, 384)
    # One document per group, so a group is exactly 1% of the points (and local mode, which
    # scans every point on each publish, stays quick).
    group_of_doc = rng.permutation(n_points // per_doc) % n_groups
    ids = [doc_id() for _ in group_of_doc]
    for d, doc in enumerate(ids):
        rows = range(d * per_doc, (d + 1) * per_doc)
        index.upsert_hidden([ChunkPoint(doc, r - d * per_doc, vectors[r]) for r in rows])
        index.publish(doc, [f"group:{group_of_doc[d]}"])
    index.flush()
    group_of_row = np.repeat(group_of_doc, per_doc)
    row_of = {(doc, n): d * per_doc + n for d, doc in enumerate(ids) for n in range(per_doc)}

    recalls = []
    for q in range(20):
        groups = rng.choice(n_groups, size=1 + q % 3, replace=False)
        allowed = np.flatnonzero(np.isin(group_of_row, groups))
        assert len(allowed) / n_points == pytest.approx(0.01 * len(groups))
        query = unit_vectors(rng, 1, 384)[0]
        exact = allowed[np.argsort(-(vectors[allowed] @ query))[:10]]
        hits = index.search(query, [f"group:{g}" for g in groups] + [EVERYONE], 10)
        found = {row_of[(hit.doc_id, hit.chunk_no)] for hit in hits}
        assert all(group_of_row[r] in groups for r in found)
        recalls.append(len(found & {int(r) for r in exact}) / 10)
    return float(np.mean(recalls))


def test_filtered_top10_matches_an_exact_scan(vector_index_factory: IndexMaker) -> None:
    index = vector_index_factory(384)

    assert _filtered_recall(index, np.random.default_rng(11)) >= 0.95


@pytest.mark.parametrize(
    "tuning",
    [EDGE_GRAPH_WITH_PAYLOAD_LINKS, EDGE_GRAPH_WITHOUT_PAYLOAD_LINKS],
    ids=["payload-links", "union-of-small-groups"],
)
def test_filtered_top10_through_the_edge_hnsw_graph(tmp_path: Path, tuning: EdgeTuning) -> None:
    index = QdrantEdgeIndex(tmp_path / "hnsw", 384, tuning=tuning)
    try:
        recall = _filtered_recall(index, np.random.default_rng(12))
        assert index.stats()["indexed_vectors"] == 3000  # the graph, not a plain scan
        assert recall >= 0.95
    finally:
        index.close()


# --- durability (edge) and reattaching (server) -----------------------------------------


def test_edge_shard_reopens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "index"
    index = QdrantEdgeIndex(path, DIM)
    doc, hidden = doc_id(), doc_id()
    index.upsert_hidden(chunks(doc, 3) + chunks(hidden, 2, seed=1))
    index.publish(doc, ["group:a"])
    index.close()

    reopened = QdrantEdgeIndex(path, DIM)
    try:
        assert reopened.count() == 5
        assert reopened.document_ids() == {doc, hidden}
        assert docs(reopened.search(probe(), ["group:a"], 10)) == {doc}
        reopened.hide(doc)
        assert reopened.search(probe(), ["group:a"], 10) == []
    finally:
        reopened.close()


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from ingest.index import ChunkPoint
    from ingest.qdrant_edge import EdgeTuning, QdrantEdgeIndex

    index = QdrantEdgeIndex(Path(sys.argv[1]), {dim})
    rng = np.random.default_rng(0)
    for d in range(3):
        doc = f"{{d:032x}}"
        index.upsert_hidden([ChunkPoint(doc, n, rng.standard_normal({dim})) for n in range(50)])
        index.publish(doc, ["group:a"])
    index.upsert_hidden([ChunkPoint("f" * 32, 0, rng.standard_normal({dim}))])
    if sys.argv[2] == "flush":
        index.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("flush", ["flush", "no-flush"])
def test_edge_shard_survives_sigkill(tmp_path: Path, flush: str) -> None:
    path = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER.format(dim=DIM), str(path), flush],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()

    index = QdrantEdgeIndex(path, DIM)
    try:
        assert index.count() == 151
        assert index.document_ids() == {f"{d:032x}" for d in range(3)} | {"f" * 32}
        assert len(index.search(probe(), ["group:a"], 200)) == 150
    finally:
        index.close()


def test_edge_shard_refuses_another_dimension(tmp_path: Path) -> None:
    path = tmp_path / "index"
    QdrantEdgeIndex(path, DIM).close()

    with pytest.raises(VectorIndexError, match="re-index"):
        QdrantEdgeIndex(path, DIM * 2)


def test_edge_shard_cannot_be_opened_twice(tmp_path: Path) -> None:
    first = QdrantEdgeIndex(tmp_path / "index", DIM)
    try:
        with pytest.raises(VectorIndexError, match="another process"):
            QdrantEdgeIndex(tmp_path / "index", DIM)
    finally:
        first.close()


def test_edge_shard_directory_is_private(tmp_path: Path) -> None:
    QdrantEdgeIndex(tmp_path / "index", DIM).close()

    assert (tmp_path / "index").stat().st_mode & 0o077 == 0


def test_server_index_reattaches_to_its_collection() -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    first = QdrantServerIndex(client, "chunks", DIM)
    doc = doc_id()
    first.upsert_hidden(chunks(doc, 2))
    first.publish(doc, [EVERYONE])

    again = QdrantServerIndex(client, "chunks", DIM)
    assert docs(again.search(probe(), [EVERYONE], 5)) == {doc}
    with pytest.raises(VectorIndexError, match="re-index"):
        QdrantServerIndex(client, "chunks", DIM + 1)
    client.close()


# --- property: the index agrees with a dict model after every step ----------------------

_DOCS = [uuid.UUID(int=n + 1).hex for n in range(3)]
_CHUNKS_PER_DOC = 3
_PRINCIPALS = ["user:1", "user:2", "group:a", "group:b", EVERYONE]
_principal_sets = st.lists(st.sampled_from(_PRINCIPALS), min_size=1, max_size=3, unique=True)
# (action, doc, chunk numbers for "upsert", principals for "publish")
Step = tuple[str, str, set[int], list[str]]
_steps = st.tuples(
    st.sampled_from(["upsert", "publish", "hide", "delete"]),
    st.sampled_from(_DOCS),
    st.sets(st.integers(0, _CHUNKS_PER_DOC - 1), min_size=1),
    st.lists(st.sampled_from(_PRINCIPALS), unique=True),
)


@settings(
    max_examples=30,
    deadline=None,
    # Each example makes its own fresh index through the factory: nothing is shared.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(_steps, min_size=1, max_size=8),
    callers=st.lists(_principal_sets, min_size=1, max_size=3),
)
def test_visibility_matches_a_dict_model(
    vector_index_factory: IndexMaker, steps: list[Step], callers: list[list[str]]
) -> None:
    index = vector_index_factory()
    vectors = unit_vectors(np.random.default_rng(0), len(_DOCS) * _CHUNKS_PER_DOC, DIM)
    model: dict[tuple[str, int], frozenset[str]] = {}
    try:
        for action, doc, numbers, principals in steps:
            if action == "upsert":
                row = _DOCS.index(doc) * _CHUNKS_PER_DOC
                index.upsert_hidden([ChunkPoint(doc, n, vectors[row + n]) for n in sorted(numbers)])
                model.update({(doc, n): frozenset() for n in numbers})
            elif action == "publish":
                index.publish(doc, principals)
                model.update({key: frozenset(principals) for key in model if key[0] == doc})
            elif action == "hide":
                index.hide(doc)
                model.update({key: frozenset() for key in model if key[0] == doc})
            else:
                index.delete_document(doc)
                model = {key: value for key, value in model.items() if key[0] != doc}

            for caller in callers:
                expected = {key for key, granted in model.items() if granted & set(caller)}
                found = index.search(probe(), caller, len(_DOCS) * _CHUNKS_PER_DOC)
                assert keys(found) == expected
            assert index.count() == len(model)
            assert index.document_ids() == {key[0] for key in model}
    finally:
        index.close()
