"""The VectorIndex interface every vector backend implements, and its data types.

A point is one chunk of one document: its id is derived from ``(doc_id, chunk_no)``, its
payload is ``doc_id`` (keyword, indexed), ``chunk_no`` (integer) and ``principals`` (keyword
list, indexed). Chunk text never enters the index. A point is visible to a search only when
its ``principals`` intersect the caller's, so points written with an empty list are
invisible until ``publish`` sets the document's principals in one operation.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

EVERYONE = "everyone"
"""The principal every signed-in user holds; others look like ``user:<id>`` or ``group:<id>``."""

PRINCIPAL_PREFIXES = ("user:", "group:")

POINT_NAMESPACE = uuid.UUID("68b3dcc4-4c23-5bdd-8282-de2a0d41c467")
"""Namespace of point ids; changing it would orphan every point of every existing index."""

# Payload field names, shared by every backend so that indexes stay interchangeable.
DOC_ID = "doc_id"
CHUNK_NO = "chunk_no"
PRINCIPALS = "principals"


class VectorIndexError(Exception):
    """The vector engine failed; the message says what to do about it."""


@dataclass(frozen=True, slots=True)
class ChunkPoint:
    """One chunk's embedding, ready to be written to the index."""

    doc_id: str
    chunk_no: int
    vector: Sequence[float]


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: which chunk, and its cosine similarity (higher is better)."""

    doc_id: str
    chunk_no: int
    score: float


@runtime_checkable
class VectorIndex(Protocol):
    """A vector store whose every search is filtered by the caller's principals in the engine."""

    dimension: int

    def upsert_hidden(self, points: Sequence[ChunkPoint]) -> None:
        """Write points with an empty principals list, so no search can return them."""
        ...

    def publish(self, doc_id: str, principals: Sequence[str]) -> None:
        """Set the principals of all the document's points in one operation."""
        ...

    def hide(self, doc_id: str) -> None:
        """Empty the principals of all the document's points in one operation."""
        ...

    def delete_document(self, doc_id: str) -> None:
        """Remove all the document's points (hiding them first)."""
        ...

    def search(self, vector: Sequence[float], principals: Sequence[str], k: int) -> list[Hit]:
        """Return the k nearest visible chunks whose principals intersect the caller's."""
        ...

    def document_ids(self) -> set[str]:
        """Return every doc_id with at least one point, visible or not."""
        ...

    def count(self, doc_id: str | None = None) -> int:
        """Count the points of one document, or of the whole index."""
        ...

    def flush(self) -> None:
        """Make every write so far durable on disk."""
        ...

    def close(self) -> None:
        """Release the engine; the index cannot be used afterwards."""
        ...


def point_id(doc_id: str, chunk_no: int) -> uuid.UUID:
    """Return the stable point id of a chunk, so that writing it again overwrites it."""
    return uuid.uuid5(POINT_NAMESPACE, f"{doc_id}:{chunk_no}")


def checked_doc_id(doc_id: str) -> str:
    """Return doc_id, or raise ValueError when it is not a non-empty string."""
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError(f"doc_id must be a non-empty string, got {doc_id!r}")
    return doc_id


def checked_principals(principals: Sequence[str], *, allow_empty: bool) -> list[str]:
    """Return the principals sorted and de-duplicated, or raise ValueError on a bad one."""
    if isinstance(principals, str):
        raise ValueError("principals must be a sequence of strings, not one string")
    for principal in principals:
        valid = principal == EVERYONE or (
            isinstance(principal, str)
            and principal.startswith(PRINCIPAL_PREFIXES)
            and principal.partition(":")[2] != ""
        )
        if not valid:
            raise ValueError(
                f"invalid principal {principal!r}: expected 'user:<id>', 'group:<id>' "
                f"or {EVERYONE!r}"
            )
    result = sorted(set(principals))
    if not result and not allow_empty:
        # An empty filter would either match nothing or, worse, be dropped and match everything.
        raise ValueError("a search needs at least one principal; refusing an unfiltered search")
    return result


def checked_vector(vector: Sequence[float], dimension: int) -> list[float]:
    """Return the vector as a list of floats, or raise ValueError if it cannot be searched."""
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dimension,):
        raise ValueError(f"vector must have shape ({dimension},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("vector contains NaN or infinity")
    norm = float(np.linalg.norm(array))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("vector has zero length, so its cosine similarity is undefined")
    values: list[float] = array.tolist()
    return values


def checked_point(point: ChunkPoint, dimension: int) -> tuple[uuid.UUID, list[float]]:
    """Return a point's id and vector, or raise ValueError if the point cannot be stored."""
    checked_doc_id(point.doc_id)
    if isinstance(point.chunk_no, bool) or not isinstance(point.chunk_no, int):
        raise ValueError(f"chunk_no must be an int, got {point.chunk_no!r}")
    if point.chunk_no < 0:
        raise ValueError(f"chunk_no must be >= 0, got {point.chunk_no}")
    return point_id(point.doc_id, point.chunk_no), checked_vector(point.vector, dimension)


def checked_k(k: int) -> int:
    """Return k, or raise ValueError when it is not a positive int."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return k


def hidden_payload(point: ChunkPoint) -> dict[str, object]:
    """Return the payload of a freshly written, invisible point."""
    return {DOC_ID: point.doc_id, CHUNK_NO: point.chunk_no, PRINCIPALS: []}
