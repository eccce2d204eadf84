"""The default VectorIndex: a Qdrant Edge shard (the Qdrant engine in-process) in a directory."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from ingest.index import (
    CHUNK_NO,
    DOC_ID,
    PRINCIPALS,
    ChunkPoint,
    Hit,
    VectorIndexError,
    checked_doc_id,
    checked_k,
    checked_point,
    checked_principals,
    checked_vector,
    hidden_payload,
)
from ingest.keyed import RECORD_NAME, VectorTransform
from ingest.qdrant_common import QdrantDocumentWrites
from ingest.shard_files import finish_interrupted_swap, fresh_copy_dir, swap_in, write_synced

_UPSERT_BATCH = 512
PURGE_PENDING = "purge-pending"
"""A file in the shard directory: documents were deleted since the last rebuild."""
KEPT_FILES = (RECORD_NAME,)
"""Files of ours in the shard directory that a rebuild carries over to the new copy."""


@dataclass(frozen=True, slots=True)
class EdgeTuning:
    """HNSW, payload-index, search and optimizer parameters of an edge shard.

    Why the defaults (bench/retrieval.py, 384-d, callers reading ~3%, 2 busy cores):

    - ``exact_search_max_chunks=20_000``: when the principals index says the caller may read
      at most this many chunks, they are all scored exactly, found through that index: recall
      1.0 in ~3 ms at 100k chunks (3k readable) and ~11 ms at 300k (9k readable), where the
      graph took 19-30 ms for recall 0.93-0.96. Only larger sets go through the graph.
    - ``full_scan_threshold_kb=10_000`` (Qdrant's default, ~6,500 chunks): each principal
      granted to more chunks than this in a segment gets ``payload_m=16`` extra links among
      its own chunks, so a graph search filtered on big groups stays connected (recall 0.999
      at 100k with the links; 0.002 for the same filter without them).
    - ``acorn=True``: a filter uniting several principals that are each too small for links
      has none to follow; ACORN then explores neighbours of neighbours (filters matching
      < 40% of a segment only), lifting recall from ~0.01 to 0.84-0.96 for 5-10x the latency.
    - ``m=16, ef_construct=100``: Qdrant's defaults, good recall for 384-d text embeddings;
      ``hnsw_ef=128`` at search time buys filtered recall for little latency.
    - ``indexing_threshold_kb=10_000``: smaller segments stay plain (a scan is as fast as
      the graph there) and larger ones are indexed by ``flush``, which runs the optimizers.
    - ``max_indexing_threads=0`` means every CPU: the library's own choice builds with one
      thread on a 2-core server, twice as slow, and building holds the GIL regardless.
    """

    m: int = 16
    ef_construct: int = 100
    payload_m: int = 16
    full_scan_threshold_kb: int = 10_000
    indexing_threshold_kb: int = 10_000
    exact_search_max_chunks: int = 20_000
    hnsw_ef: int = 128
    acorn: bool = True
    max_indexing_threads: int = 0


class QdrantEdgeIndex(QdrantDocumentWrites):
    """A VectorIndex on a Qdrant Edge shard stored in ``path``, created on first use."""

    def __init__(self, path: Path, dimension: int, *, tuning: EdgeTuning | None = None) -> None:
        """Create the shard at ``path`` or reopen it (also after a crash); check the dimension."""
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be a positive int, got {dimension!r}")
        self.dimension = dimension
        self.path = Path(path)
        self._tuning = tuning or EdgeTuning()
        # One lock for every call: a filtered update touches each segment in turn, and the
        # lock is what makes publish/hide look instantaneous to a concurrent search; it also
        # keeps close() from pulling the shard out from under a running query.
        self._lock = threading.Lock()
        self._closed = False
        finish_interrupted_swap(self.path)
        try:
            # The shard holds plaintext vectors: readable by the service account only.
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise VectorIndexError(
                f"cannot create the vector index directory {self.path}: {exc}; check that the "
                "service account may write to its parent directory"
            ) from exc
        try:
            # load() with a config creates the shard in an empty directory, reopens an
            # existing one (replaying its write-ahead log after a crash) and refuses a
            # config whose vectors do not match the stored ones.
            self._shard = qe.EdgeShard.load(str(self.path), self._config())
        except Exception as exc:
            raise VectorIndexError(self._open_failure(exc)) from exc
        try:
            with self._engine("create the payload indexes"):
                _ensure_payload_indexes(self._shard)
        except VectorIndexError:
            self._shard.close()  # release the write-ahead log lock for the next attempt
            raise

    def upsert_hidden(self, points: Sequence[ChunkPoint]) -> None:
        """Write points with an empty principals list, so no search can return them."""
        batch: list[qe.Point] = []
        for point in points:
            pid, vector = checked_point(point, self.dimension)
            batch.append(qe.Point(pid, vector, hidden_payload(point)))
        with self._lock, self._engine("write chunks"):
            for start in range(0, len(batch), _UPSERT_BATCH):
                self._shard.update(
                    qe.UpdateOperation.upsert_points(batch[start : start + _UPSERT_BATCH])
                )

    def search(self, vector: Sequence[float], principals: Sequence[str], k: int) -> list[Hit]:
        """Return the k nearest visible chunks whose principals intersect the caller's."""
        query = checked_vector(vector, self.dimension)
        allowed = checked_principals(principals, allow_empty=False)
        limit = checked_k(k)
        acl = qe.Filter(must=[qe.FieldCondition(key=PRINCIPALS, match=qe.MatchAny(any=allowed))])
        with self._lock, self._engine("search"):
            # The principals index estimates the readable set without scoring anything.
            readable = self._shard.count(qe.CountRequest(exact=False, filter=acl))
            if readable <= self._tuning.exact_search_max_chunks:
                params = qe.SearchParams(exact=True)
            else:
                params = qe.SearchParams(
                    hnsw_ef=max(limit, self._tuning.hnsw_ef),
                    acorn=qe.AcornSearchParams(enable=self._tuning.acorn),
                )
            scored = self._shard.query(
                qe.QueryRequest(
                    limit=limit,
                    query=qe.Query.Nearest(query),
                    filter=acl,
                    params=params,
                    with_payload=qe.PayloadSelector.Include([DOC_ID, CHUNK_NO]),
                    with_vector=False,
                )
            )
        hits = [_hit(point) for point in scored]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits

    def document_ids(self) -> set[str]:
        """Return every doc_id with at least one point, visible or not."""
        with self._lock, self._engine("list documents"):
            total = self._shard.count(qe.CountRequest(exact=True))
            if total == 0:
                return set()
            # A facet on the keyword index lists each distinct doc_id once, without
            # reading every point's payload; there are never more values than points.
            facet = self._shard.facet(qe.FacetRequest(key=DOC_ID, limit=total, exact=True))
        # Deleted points can leave a value behind with a zero count until segments merge.
        return {str(hit.value) for hit in facet.hits if hit.count > 0}

    def count(self, doc_id: str | None = None) -> int:
        """Count the points of one document, or of the whole index."""
        request = qe.CountRequest(
            exact=True, filter=None if doc_id is None else _doc_filter(checked_doc_id(doc_id))
        )
        with self._lock, self._engine("count chunks"):
            return self._shard.count(request)

    def stats(self) -> dict[str, int]:
        """Return the shard's segment, point and HNSW-indexed vector counts."""
        with self._lock, self._engine("read statistics"):
            info = self._shard.info()
        return {
            "segments": info.segments_count,
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
        }

    def flush(self) -> None:
        """Build pending HNSW/payload indexes, then write everything to disk.

        Every update is already in the write-ahead log when it returns, so a killed process
        loses nothing; flushing persists the segments and indexes them. Indexing a large
        unindexed segment can take minutes and the library holds the GIL meanwhile, so call
        this from the ingestion worker after a batch, never on a request's path.
        """
        with self._lock, self._engine("flush the index to disk"):
            self._shard.optimize()
            self._shard.flush()

    def close(self) -> None:
        """Flush and release the shard; calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._shard.flush()
            except Exception as exc:
                raise VectorIndexError(
                    f"flushing the vector index at {self.path} on close failed: {exc}; its "
                    "write-ahead log is replayed on the next start"
                ) from exc
            finally:
                self._shard.close()

    def purge_deleted(self) -> bool:
        """Remove deleted documents' vectors and payloads from the files; False if none.

        Qdrant only marks a deleted point: its vector stays in the segment's mmap file until
        a vacuum rebuilds the segment, and in the write-ahead log until the log's 32 MB file
        is recycled. A copy of the index would still hold it. So, when a document was
        deleted since the last purge, the live points are copied into a fresh shard (new
        segments, new log) that replaces this one (``rebuild``). The cleanup job calls this;
        it blocks searches while it runs (about 1 s per 10,000 chunks; when the shard had an
        HNSW graph, rebuilding it too: minutes per 100,000 chunks).
        """
        if not (self.path / PURGE_PENDING).exists():
            return False
        self.rebuild()
        return True

    def rebuild(
        self,
        *,
        transform: VectorTransform | None = None,
        add_files: Mapping[str, bytes] | None = None,
    ) -> int:
        """Copy the live points (vectors turned by ``transform``) into a fresh shard; swap.

        The copy is built beside the shard (``<dir>.rebuild``) and flushed (and indexed, when
        the shard had a graph), marked complete, and only then renamed into place, so a crash
        at any point leaves either the old shard or the complete copy, never half of each
        (``ingest.shard_files.finish_interrupted_swap`` tidies up on the next open).
        ``add_files`` are written into the copy before the swap, so a record of the vectors'
        key changes together with the vectors. Returns the points copied.
        """
        with self._lock, self._engine("rebuild the vector index"):
            fresh = fresh_copy_dir(self.path)
            # The service never builds the HNSW graph on its own (see flush); the copy gets
            # one only when the shard had one, so an operator's `index optimize` survives.
            had_graph = self._shard.info().indexed_vectors_count > 0
            copy = qe.EdgeShard.load(str(fresh), self._config())
            try:
                copied = self._copy_points(copy, transform)
                _ensure_payload_indexes(copy)
                if had_graph:
                    copy.optimize()
                copy.flush()
            finally:
                copy.close()
            for name in KEPT_FILES:
                if (self.path / name).exists() and name not in (add_files or {}):
                    shutil.copy2(self.path / name, fresh / name)
            for name, body in (add_files or {}).items():
                write_synced(fresh / name, body)
            self._shard.close()
            try:
                swap_in(self.path, fresh)
            finally:
                # Reopen whichever shard is now in place, so the index stays usable.
                self._shard = qe.EdgeShard.load(str(self.path), self._config())
        return copied

    def rekey(self, transform: VectorTransform, record: Path, body: bytes) -> int:
        """Turn every stored vector once (a rebuild), writing the key's record with them."""
        if record.parent != self.path:
            raise ValueError(f"the key record of an edge shard lives in {self.path}")
        return self.rebuild(transform=transform, add_files={record.name: body})

    def _copy_points(self, target: qe.EdgeShard, transform: VectorTransform | None) -> int:
        copied = 0
        offset: qe.PointId | None = None
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(
                    offset=offset, limit=_UPSERT_BATCH, with_payload=True, with_vector=True
                )
            )
            if records:
                vectors = np.asarray([record.vector for record in records], dtype=np.float32)
                if transform is not None:
                    vectors = transform(vectors)
                target.update(
                    qe.UpdateOperation.upsert_points(
                        [
                            qe.Point(record.id, vector.tolist(), record.payload or {})
                            for record, vector in zip(records, vectors, strict=True)
                        ]
                    )
                )
                copied += len(records)
            if offset is None:
                return copied

    def _set_doc_principals(self, doc_id: str, principals: list[str]) -> None:
        self._shard.update(
            qe.UpdateOperation.set_payload_by_filter(_doc_filter(doc_id), {PRINCIPALS: principals})
        )

    def _delete_doc_points(self, doc_id: str) -> None:
        self._shard.update(qe.UpdateOperation.delete_points_by_filter(_doc_filter(doc_id)))
        # The vectors are only marked deleted: the next purge_deleted() removes them.
        pending = self.path / PURGE_PENDING
        if not pending.exists():
            write_synced(pending, b"")

    def _config(self) -> qe.EdgeConfig:
        tuning = self._tuning
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=self.dimension, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(
                m=tuning.m,
                ef_construct=tuning.ef_construct,
                full_scan_threshold=tuning.full_scan_threshold_kb,
                max_indexing_threads=tuning.max_indexing_threads or (os.cpu_count() or 1),
                payload_m=tuning.payload_m,
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=tuning.indexing_threshold_kb),
        )

    def _open_failure(self, exc: Exception) -> str:
        text = str(exc)
        if "incompatible" in text.lower():
            return (
                f"the vector index at {self.path} was built for other vectors than "
                f"{self.dimension}-d cosine ({text}); point the index at an empty directory "
                "and re-index the documents, or use the embedder it was built with"
            )
        if "WouldBlock" in text or "lock" in text.lower():
            return (
                f"the vector index at {self.path} is open in another process ({text}); "
                "stop the other appliance process, then start again"
            )
        return (
            f"cannot open the vector index at {self.path}: {text}; check free disk space and "
            "that the service account owns the directory; a damaged index can be moved away "
            "and rebuilt by re-indexing the documents"
        )

    @contextmanager
    def _engine(self, action: str) -> Iterator[None]:
        if self._closed:
            raise VectorIndexError(
                f"cannot {action}: the vector index at {self.path} is closed; open it again"
            )
        try:
            yield
        except VectorIndexError:
            raise
        except Exception as exc:  # qdrant_edge raises bare Exception for every engine error
            raise VectorIndexError(
                f"cannot {action} in the vector index at {self.path}: {exc}; check free disk "
                "space and the directory's permissions, then retry"
            ) from exc


def _ensure_payload_indexes(shard: qe.EdgeShard) -> None:
    existing = shard.info().payload_schema
    if PRINCIPALS not in existing:
        shard.update(
            qe.UpdateOperation.create_field_index(PRINCIPALS, qe.PayloadSchemaType.Keyword)
        )
    if DOC_ID not in existing:
        # doc_id filters only updates, deletes and counts, never a vector search, so it
        # gets no per-value HNSW links: they would cost build time and be unused.
        shard.update(
            qe.UpdateOperation.create_field_index(DOC_ID, qe.KeywordIndexParams(enable_hnsw=False))
        )


def _doc_filter(doc_id: str) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(key=DOC_ID, match=qe.MatchValue(doc_id))])


def _hit(point: qe.ScoredPoint) -> Hit:
    payload = point.payload or {}
    return Hit(doc_id=str(payload[DOC_ID]), chunk_no=int(payload[CHUNK_NO]), score=point.score)
