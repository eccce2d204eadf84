"""Keyed vectors and their physical purge (issue 16, hole 15; README "Vectors at rest").

Hole 15: deleted documents' vectors stayed in the index files, and a copy of the index alone
confirmed a guess of a chunk's text (1.0 against 0.91 for a near miss). Each claim the README
makes about keyed vectors has a test here, the limits included: a known-plaintext attack
recovers the key, and a rotation keeps the geometry among stored vectors.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient

from appliance.auth.bootstrap import InitReport
from appliance.core.config import Settings
from appliance.core.places import SYSTEM_KIND, VECTORS_OWNER
from appliance.core.runtime import Runtime, open_runtime
from appliance.documents import service as docs
from appliance.documents.tables import Document
from appliance.jobs.registry import run_job
from ingest.index import EVERYONE, ChunkPoint, Hit, VectorIndex, VectorIndexError
from ingest.keyed import RECORD_NAME, KeyedVectorIndex, VectorKey, open_keyed
from ingest.qdrant_edge import PURGE_PENDING, QdrantEdgeIndex
from ingest.qdrant_server import QdrantServerIndex
from ingest.shard_files import finish_interrupted_swap, fresh_copy_dir, write_synced
from models.protocols import Embedder
from tests.fixtures.app import add_user, inline_worker, submit
from tests.fixtures.documents import make_markdown
from tests.fixtures.index import unit_vectors

DIM = 384
SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))


def _points(vectors: npt.NDArray[np.float32], doc: str = "doc-a") -> list[ChunkPoint]:
    return [ChunkPoint(doc, i, v.tolist()) for i, v in enumerate(vectors)]


def _stored(index_dir: Path) -> dict[tuple[str, int], npt.NDArray[np.float32]]:
    """Every vector of an edge shard, read from a copy with the engine alone (no key)."""
    copy = Path(tempfile.mkdtemp(prefix="stolen-")) / "index"
    shutil.copytree(index_dir, copy)
    shard = qe.EdgeShard.load(str(copy))
    try:
        found: dict[tuple[str, int], npt.NDArray[np.float32]] = {}
        offset = None
        while True:
            records, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=256, with_payload=True, with_vector=True)
            )
            for r in records:
                payload = r.payload or {}
                key = (str(payload["doc_id"]), int(payload["chunk_no"]))
                found[key] = np.asarray(r.vector, dtype=np.float32)
            if offset is None:
                return found
    finally:
        shard.close()
        shutil.rmtree(copy.parent)


def _cos(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.fixture
def keyed_edge(tmp_path: Path) -> Iterator[KeyedVectorIndex]:
    inner = QdrantEdgeIndex(tmp_path / "index", DIM)
    index = open_keyed(inner, VectorKey(SECRET, DIM), tmp_path / "index" / RECORD_NAME)
    yield index
    index.close()


def test_keyed_search_ranks_and_scores_as_before(
    keyed_edge: KeyedVectorIndex, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    vectors = unit_vectors(rng, 300, DIM)
    plain = QdrantEdgeIndex(tmp_path / "plain", DIM)
    try:
        for index in (plain, keyed_edge):
            index.upsert_hidden(_points(vectors))
            index.publish("doc-a", [EVERYONE])
        for query in unit_vectors(rng, 5, DIM):
            want = plain.search(query.tolist(), [EVERYONE], 10)
            assert_same_hits(keyed_edge.search(query.tolist(), [EVERYONE], 10), want)
    finally:
        plain.close()


def test_a_cosine_of_zero_stays_zero_whatever_the_key(tmp_path: Path) -> None:
    """Turning both sides adds float noise; it must not push an orthogonal hit below 0.

    Found by test_audit_coverage, which failed about one run in two: its fake embedder
    gives exactly orthogonal vectors, and ``min_score = 0`` dropped a hit scored -1e-8.
    """
    first, second = np.eye(DIM, dtype=np.float32)[:2]
    for n in range(20):
        secret = bytes([n]) * 32
        inner = QdrantEdgeIndex(tmp_path / f"index-{n}", DIM)
        index = KeyedVectorIndex(inner, VectorKey(secret, DIM))
        index.upsert_hidden([ChunkPoint("doc-a", 0, second.tolist())])
        index.publish("doc-a", [EVERYONE])
        (hit,) = index.search(first.tolist(), [EVERYONE], 1)
        assert hit.score == 0.0
        assert str(hit.score) == "0.0"
        index.close()


@pytest.mark.slow
def test_a_copy_of_the_index_without_the_key_confirms_no_guess(
    settings: Settings, initialized: InitReport, real_embedder: Embedder, tmp_path: Path
) -> None:
    """The attack of hole 15, on a real document embedded by the bundled model."""
    rt = open_runtime(settings, embedder=real_embedder)
    try:
        src = tmp_path / "src"
        src.mkdir()
        secret = "The acquisition of Northwind closes on 14 March at a price of 41 million."
        path = make_markdown(src / "board.md", [("Board minutes", [secret])])
        doc_id = submit(rt, path, grants=("everyone",))
        assert inline_worker(rt).run_until_idle() == 1
        rt.index().flush()
        copy = tmp_path / "stolen-index"
        shutil.copytree(rt.settings.index_dir, copy)
        embedder = rt.embedder()
        exact = embedder.embed([secret])[0]
        near_miss = embedder.embed(
            ["The acquisition of Northwind closes on 14 May at a price of 41 million."]
        )[0]
        # With the key (the running appliance), the guess finds the chunk, as search must.
        hits = rt.index().search(exact.tolist(), [EVERYONE], 1)
        assert hits[0].doc_id == doc_id
        assert hits[0].score > 0.8
    finally:
        rt.close()

    stolen = _stored(copy)
    chunk = next(v for (d, _), v in stolen.items() if d == doc_id)
    # Without the key, the exact guess and the near miss both land at random angles.
    assert abs(_cos(exact, chunk)) < 0.3
    assert abs(_cos(near_miss, chunk)) < 0.3
    # The same vectors unkeyed (what the index stored before) confirm the guess at once.
    key = VectorKey(rt.crypto.data_key(SYSTEM_KIND, VECTORS_OWNER), DIM)
    unkeyed = key.matrix.T @ chunk
    assert _cos(exact, unkeyed) > 0.8
    assert _cos(exact, unkeyed) > _cos(near_miss, unkeyed)


def test_known_plaintext_recovers_the_key(keyed_edge: KeyedVectorIndex, tmp_path: Path) -> None:
    """The README's limit: knowing ~384 chunks' text gives the rotation back."""
    rng = np.random.default_rng(11)
    known = unit_vectors(rng, 420, DIM)
    secret_chunk = unit_vectors(rng, 1, DIM)
    keyed_edge.upsert_hidden(_points(known, "known"))
    keyed_edge.upsert_hidden(_points(secret_chunk, "secret"))
    keyed_edge.flush()
    stolen = _stored(keyed_edge.inner.path)  # type: ignore[attr-defined]

    def attack(n_known: int) -> float:
        plain = known[:n_known].astype(np.float64)
        turned = np.stack([stolen[("known", i)] for i in range(n_known)]).astype(np.float64)
        u, _, vt = np.linalg.svd(turned.T @ plain)  # orthogonal Procrustes
        estimate = u @ vt
        return _cos(estimate @ secret_chunk[0], stolen[("secret", 0)])

    assert attack(420) > 0.99  # enough known plaintexts: guesses are confirmed again
    assert attack(20) < 0.5  # a few are not enough


def test_the_rotation_keeps_the_geometry_among_stored_vectors(
    keyed_edge: KeyedVectorIndex,
) -> None:
    """The README's other limit: near-duplicates and clusters stay visible in a copy."""
    rng = np.random.default_rng(3)
    base = unit_vectors(rng, 1, DIM)[0]
    twin = base + 0.15 * unit_vectors(rng, 1, DIM)[0]
    keyed_edge.upsert_hidden(_points(np.stack([base, twin]).astype(np.float32)))
    keyed_edge.flush()
    stolen = _stored(keyed_edge.inner.path)  # type: ignore[attr-defined]
    assert _cos(stolen[("doc-a", 0)], stolen[("doc-a", 1)]) == pytest.approx(
        _cos(base, twin), abs=1e-4
    )


def _holds(data: bytes, vector: npt.NDArray[np.float32]) -> str | None:
    """Where a stored vector shows in a file's bytes: ``mmap`` (f32 little-endian, as the
    segments keep it) or ``cbor`` (0xfa + big-endian f32 per value, as the write-ahead log
    keeps the vector it was sent, which differs from the stored one in the last bits)."""
    head = vector[:6]
    if head.astype("<f4").tobytes() in data:
        return "mmap"
    raw = np.frombuffer(data, dtype=np.uint8)
    starts = np.flatnonzero(raw[: len(raw) - 30] == 0xFA)
    if starts.size == 0:
        return None
    first = np.frombuffer(raw[(starts[:, None] + np.arange(1, 5)).ravel()].tobytes(), dtype=">f4")
    with np.errstate(invalid="ignore", over="ignore"):  # random bytes decode to NaN and inf
        near = np.abs(first - head[0]) < 1e-6
    for start in starts[near]:
        run = bytes(raw[start : start + 30])
        if run[::5] == b"\xfa" * 6:
            values = np.frombuffer(b"".join(run[k + 1 : k + 5] for k in range(0, 30, 5)), ">f4")
            if np.allclose(values, head, atol=1e-6):
                return "cbor"
    return None


def _files_holding(root: Path, vectors: list[npt.NDArray[np.float32]]) -> set[str]:
    """Every file of the shard at root, and of any copy beside it, holding a vector."""
    found: set[str] = set()
    for path in _index_files(root):
        data = path.read_bytes()
        for vector in vectors:
            where = _holds(data, vector)
            if where:
                found.add(f"{path.relative_to(root.parent)}#{where}")
    return found


def _files_with_text(root: Path, needles: list[bytes]) -> set[str]:
    return {
        str(path.relative_to(root.parent))
        for path in _index_files(root)
        if any(n in path.read_bytes() for n in needles)
    }


def _index_files(root: Path) -> list[Path]:
    """The files of the shard at root and of any rebuild or old copy beside it."""
    dirs = [d for d in root.parent.iterdir() if d.is_dir() and d.name.startswith(root.name)]
    return [path for d in dirs for path in d.rglob("*") if path.is_file()]


def test_deleting_a_document_erases_its_vectors_from_the_index_files(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    reader = add_user(rt, "reader")
    src = tmp_path / "src"
    src.mkdir()
    gone_path = make_markdown(src / "gone.md", [("Salaries", ["Alice earns 91,000 a year."])])
    kept_path = make_markdown(src / "kept.md", [("Canteen", ["Lunch is served from noon."])])
    gone = submit(rt, gone_path, grants=("user:reader",))
    kept = submit(rt, kept_path, grants=("everyone",))
    assert inline_worker(rt).run_until_idle() == 2
    rt.index().flush()
    index_dir = rt.settings.index_dir
    stored = _stored_live(rt)
    gone_needles = [v for k, v in stored.items() if k[0] == gone]
    kept_needles = [v for k, v in stored.items() if k[0] == kept]
    secrets_in_payload = [gone.encode(), f"user:{reader}".encode()]
    before = _files_holding(index_dir, gone_needles)
    assert any(name.endswith("#mmap") for name in before), "the segments hold the vectors"
    assert any("wal" in name for name in before), "the write-ahead log holds them too"
    assert _files_with_text(index_dir, secrets_in_payload)

    with rt.sessions() as s:
        docs.begin_delete(session=s, index=rt.index(), doc=s.get_one(Document, gone), actor="t")
    with rt.sessions() as s:
        docs.finish_delete(
            session=s, index=rt.index(), crypto=rt.crypto, blobs=rt.blobs, doc_id=gone
        )
    rt.index().flush()
    # Qdrant only marks the points deleted: the bytes are still there (the hole).
    assert _files_holding(index_dir, gone_needles)
    assert (index_dir / PURGE_PENDING).exists()

    result = run_job(rt, "cleanup")
    assert result.outcome == "ok"
    assert result.counts["deleted_vectors_purged"] is True
    assert _files_holding(index_dir, gone_needles) == set()
    assert _files_with_text(index_dir, secrets_in_payload) == set()
    assert _files_holding(index_dir, kept_needles), "the kept document's vectors stay"
    hits = rt.index().search(stored[(kept, 0)].tolist(), [EVERYONE], 1)
    assert hits == [] or hits[0].doc_id == kept  # the key still turns queries: search works
    assert rt.index().count(kept) >= 1
    assert rt.index().count(gone) == 0
    assert sorted(p.name for p in index_dir.parent.iterdir() if p.name.startswith("index")) == [
        "index"
    ]
    # Nothing deleted since: the next run leaves the index alone.
    assert run_job(rt, "cleanup").counts["deleted_vectors_purged"] is False


def _stored_live(rt: Runtime) -> dict[tuple[str, int], npt.NDArray[np.float32]]:
    index = rt.index()
    assert isinstance(index, KeyedVectorIndex)
    inner = index.inner
    assert isinstance(inner, QdrantEdgeIndex)
    found: dict[tuple[str, int], npt.NDArray[np.float32]] = {}
    records, _ = inner._shard.scroll(
        qe.ScrollRequest(limit=10_000, with_payload=True, with_vector=True)
    )
    for r in records:
        payload = r.payload or {}
        found[(str(payload["doc_id"]), int(payload["chunk_no"]))] = np.asarray(r.vector, "f4")
    return found


def assert_same_hits(got: list[Hit], want: list[Hit]) -> None:
    """The same chunks in the same order, scores equal but for float noise."""
    assert [h.chunk_no for h in got] == [h.chunk_no for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)


def test_an_index_written_before_keying_is_turned_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vectors = unit_vectors(rng, 50, DIM)
    query = unit_vectors(rng, 1, DIM)[0].tolist()
    path = tmp_path / "index"
    plain = QdrantEdgeIndex(path, DIM)
    plain.upsert_hidden(_points(vectors))
    plain.publish("doc-a", [EVERYONE])
    want_hits = plain.search(query, [EVERYONE], 5)
    plain.close()
    raw = _stored(path)

    key = VectorKey(SECRET, DIM)
    keyed = open_keyed(QdrantEdgeIndex(path, DIM), key, path / RECORD_NAME)
    assert_same_hits(keyed.search(query, [EVERYONE], 5), want_hits)
    keyed.close()
    turned = _stored(path)
    assert _cos(turned[("doc-a", 0)], raw[("doc-a", 0)]) < 0.3
    assert _cos(turned[("doc-a", 0)], key.apply(raw[("doc-a", 0)].tolist())) > 0.9999

    again = open_keyed(QdrantEdgeIndex(path, DIM), key, path / RECORD_NAME)  # not turned twice
    assert_same_hits(again.search(query, [EVERYONE], 5), want_hits)
    again.close()
    inner = QdrantEdgeIndex(path, DIM)
    with pytest.raises(VectorIndexError, match="another vector key"):
        open_keyed(inner, VectorKey(OTHER_SECRET, DIM), path / RECORD_NAME)
    inner.close()


def test_a_server_collection_written_before_keying_is_turned_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    vectors = unit_vectors(rng, 40, DIM)
    query = unit_vectors(rng, 1, DIM)[0].tolist()
    client = QdrantClient(":memory:")
    plain: VectorIndex = QdrantServerIndex(client, "chunks", DIM)
    plain.upsert_hidden(_points(vectors))
    plain.publish("doc-a", [EVERYONE])
    want = [h.chunk_no for h in plain.search(query, [EVERYONE], 5)]
    record = tmp_path / "index-chunks-vector-key.json"
    key = VectorKey(SECRET, DIM)
    keyed = open_keyed(QdrantServerIndex(client, "chunks", DIM), key, record)
    assert [h.chunk_no for h in keyed.search(query, [EVERYONE], 5)] == want
    assert record.exists()
    again = open_keyed(QdrantServerIndex(client, "chunks", DIM), key, record)
    assert [h.chunk_no for h in again.search(query, [EVERYONE], 5)] == want
    client.close()


def test_an_interrupted_rebuild_leaves_one_whole_index(tmp_path: Path) -> None:
    path = tmp_path / "index"
    path.mkdir()
    write_synced(path / "old-marker", b"old")
    # Crashed while copying: the incomplete copy goes, the shard stays.
    fresh = fresh_copy_dir(path)
    write_synced(fresh / "new-marker", b"new")
    finish_interrupted_swap(path)
    assert not fresh.exists()
    assert (path / "old-marker").exists()
    # Crashed between the renames: the complete copy takes the shard's place.
    fresh = fresh_copy_dir(path)
    write_synced(fresh / "new-marker", b"new")
    write_synced(fresh / "rebuilt", b"")
    path.rename(tmp_path / "index.old")
    finish_interrupted_swap(path)
    assert (path / "new-marker").exists()
    assert not (path / "rebuilt").exists()
    assert not (tmp_path / "index.old").exists(), "the old copy holds deleted vectors"
