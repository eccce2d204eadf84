"""VectorIndex on a Qdrant server or cluster (or qdrant-client's local mode, for tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

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
from ingest.keyed import VectorTransform
from ingest.qdrant_common import QdrantDocumentWrites
from ingest.shard_files import write_synced

_UPSERT_BATCH = 256
_SCROLL_PAGE = 1024
# The edge shard's graph parameters (see ingest.qdrant_edge.EdgeTuning for why); the server's
# own planner picks exact scoring below the full-scan threshold, and ACORN (set per search)
# covers filters uniting principals too small to have payload links.
_HNSW = models.HnswConfigDiff(m=16, ef_construct=100, payload_m=16, full_scan_threshold=10_000)
_HNSW_EF = 128
_REKEYED = "rekeyed"
"""Payload flag of a point whose vector ``rekey`` has turned (see there)."""


class QdrantServerIndex(QdrantDocumentWrites):
    """A VectorIndex on one collection of a Qdrant server, created with its indexes if missing."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dimension: int,
        *,
        owns_client: bool = False,
    ) -> None:
        """Use ``collection`` through ``client``, creating it and its payload indexes if missing."""
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be a positive int, got {dimension!r}")
        if not collection:
            raise ValueError("collection must be a non-empty name")
        self.dimension = dimension
        self.collection = collection
        self._client = client
        self._owns_client = owns_client
        options = client.init_options
        # Local mode is plain Python over shared dicts and lists: not safe for concurrent
        # use, and it ignores payload indexes and search parameters (it warns about both).
        # The HTTP/gRPC client is thread-safe, so a remote index takes no lock.
        self._local = options.get("location") == ":memory:" or options.get("path") is not None
        self._lock: AbstractContextManager[Any] = threading.Lock() if self._local else nullcontext()
        self._closed = False
        with self._lock, self._engine("prepare the collection"):
            self._ensure_collection()

    @classmethod
    def connect(
        cls,
        url: str,
        collection: str,
        dimension: int,
        *,
        api_key: str | None = None,
        timeout: int = 10,
    ) -> QdrantServerIndex:
        """Connect to the Qdrant server at ``url``; the index closes the client it made."""
        try:
            client = QdrantClient(url=url, api_key=api_key, timeout=timeout)
        except Exception as exc:
            raise VectorIndexError(
                f"cannot connect to the Qdrant server at {url}: {exc}; check the URL, the "
                "TLS certificate and the API key in the appliance settings"
            ) from exc
        return cls(client, collection, dimension, owns_client=True)

    def upsert_hidden(self, points: Sequence[ChunkPoint]) -> None:
        """Write points with an empty principals list, so no search can return them."""
        structs: list[models.PointStruct] = []
        for point in points:
            pid, vector = checked_point(point, self.dimension)
            structs.append(
                models.PointStruct(id=str(pid), vector=vector, payload=hidden_payload(point))
            )
        with self._lock, self._engine("write chunks"):
            for start in range(0, len(structs), _UPSERT_BATCH):
                self._client.upsert(
                    self.collection, points=structs[start : start + _UPSERT_BATCH], wait=True
                )

    def search(self, vector: Sequence[float], principals: Sequence[str], k: int) -> list[Hit]:
        """Return the k nearest visible chunks whose principals intersect the caller's."""
        query = checked_vector(vector, self.dimension)
        allowed = checked_principals(principals, allow_empty=False)
        limit = checked_k(k)
        acl = models.Filter(
            must=[models.FieldCondition(key=PRINCIPALS, match=models.MatchAny(any=allowed))]
        )
        params = (
            None
            if self._local
            else models.SearchParams(
                hnsw_ef=max(limit, _HNSW_EF), acorn=models.AcornSearchParams(enable=True)
            )
        )
        with self._lock, self._engine("search"):
            response = self._client.query_points(
                self.collection,
                query=query,
                query_filter=acl,
                search_params=params,
                limit=limit,
                with_payload=[DOC_ID, CHUNK_NO],
                with_vectors=False,
            )
        hits = [_hit(point) for point in response.points]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits

    def document_ids(self) -> set[str]:
        """Return every doc_id with at least one point, visible or not."""
        found: set[str] = set()
        offset: models.ExtendedPointId | None = None
        # A scroll rather than a facet: facets report UUID-shaped keywords re-formatted
        # with hyphens, and the orphan cleanup must get back the exact ids it stored.
        with self._lock, self._engine("list documents"):
            while True:
                records, offset = self._client.scroll(
                    self.collection,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=[DOC_ID],
                    with_vectors=False,
                )
                found.update(str((record.payload or {})[DOC_ID]) for record in records)
                if offset is None:
                    return found

    def count(self, doc_id: str | None = None) -> int:
        """Count the points of one document, or of the whole index."""
        selector = None if doc_id is None else _doc_filter(checked_doc_id(doc_id))
        with self._lock, self._engine("count chunks"):
            return self._client.count(self.collection, count_filter=selector, exact=True).count

    def flush(self) -> None:
        """Do nothing: every write waited for the server to apply and log it."""
        with self._lock, self._engine("flush"):
            pass

    def close(self) -> None:
        """Stop using the index; close the client only if this index created it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._owns_client:
                self._client.close()

    def rekey(self, transform: VectorTransform, record: Path, body: bytes) -> int:
        """Turn every stored vector once, in place; write the key's record when all are done.

        A server collection cannot be swapped like a shard directory, so each rewritten point
        carries the ``rekeyed`` flag in its payload until the record is
        written: an interrupted run resumes with the points not yet turned, never turning one
        twice.
        """
        turned = 0
        offset: models.ExtendedPointId | None = None
        with self._lock, self._engine("turn the stored vectors by the vector key"):
            while True:
                records, offset = self._client.scroll(
                    self.collection,
                    limit=_UPSERT_BATCH,
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
                todo = [r for r in records if not (r.payload or {}).get(_REKEYED)]
                if todo:
                    vectors = transform(np.asarray([r.vector for r in todo], dtype=np.float32))
                    self._client.upsert(
                        self.collection,
                        points=[
                            models.PointStruct(
                                id=r.id,
                                vector=v.tolist(),
                                payload={**(r.payload or {}), _REKEYED: True},
                            )
                            for r, v in zip(todo, vectors, strict=True)
                        ],
                        wait=True,
                    )
                    turned += len(todo)
                if offset is None:
                    break
            write_synced(record, body)
        return turned

    def _set_doc_principals(self, doc_id: str, principals: list[str]) -> None:
        self._client.set_payload(
            self.collection, payload={PRINCIPALS: principals}, points=_doc_filter(doc_id), wait=True
        )

    def _delete_doc_points(self, doc_id: str) -> None:
        self._client.delete(self.collection, points_selector=_doc_filter(doc_id), wait=True)

    def _ensure_collection(self) -> None:
        if not self._client.collection_exists(self.collection):
            try:
                self._client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(
                        size=self.dimension, distance=models.Distance.COSINE
                    ),
                    hnsw_config=_HNSW,
                )
            except Exception:
                # Another replica may have created it between the check and the create.
                if not self._client.collection_exists(self.collection):
                    raise
        info = self._client.get_collection(self.collection)
        vectors = info.config.params.vectors
        if (
            not isinstance(vectors, models.VectorParams)
            or vectors.size != self.dimension
            or vectors.distance != models.Distance.COSINE
        ):
            raise VectorIndexError(
                f"the Qdrant collection {self.collection!r} holds other vectors ({vectors}) "
                f"than {self.dimension}-d cosine; configure another collection name and "
                "re-index the documents, or use the embedder it was built with"
            )
        if self._local:
            return
        schema = info.payload_schema
        if PRINCIPALS not in schema:
            self._client.create_payload_index(
                self.collection,
                PRINCIPALS,
                field_schema=models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD),
                wait=True,
            )
        if DOC_ID not in schema:
            # doc_id filters only updates, deletes and counts, never a vector search, so it
            # gets no per-value HNSW links.
            self._client.create_payload_index(
                self.collection,
                DOC_ID,
                field_schema=models.KeywordIndexParams(
                    type=models.KeywordIndexType.KEYWORD, enable_hnsw=False
                ),
                wait=True,
            )

    @contextmanager
    def _engine(self, action: str) -> Iterator[None]:
        if self._closed:
            raise VectorIndexError(
                f"cannot {action}: the index on collection {self.collection!r} is closed"
            )
        try:
            yield
        except VectorIndexError:
            raise
        except Exception as exc:  # transport, HTTP, gRPC and local-mode errors alike
            raise VectorIndexError(
                f"cannot {action} in the Qdrant collection {self.collection!r}: {exc}; check "
                "that the Qdrant server is running and reachable and that the API key is "
                "valid, then retry"
            ) from exc


def _doc_filter(doc_id: str) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key=DOC_ID, match=models.MatchValue(value=doc_id))]
    )


def _hit(point: models.ScoredPoint) -> Hit:
    payload = point.payload or {}
    return Hit(doc_id=str(payload[DOC_ID]), chunk_no=int(payload[CHUNK_NO]), score=point.score)
