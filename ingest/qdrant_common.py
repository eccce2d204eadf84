"""What both Qdrant backends do alike: publish, hide and delete a document by its doc_id filter."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from ingest.index import checked_doc_id, checked_principals


class QdrantDocumentWrites(ABC):
    """publish/hide/delete_document of a VectorIndex, on a backend's two filtered operations.

    A backend supplies ``_lock``, ``_engine`` (which turns engine errors into
    VectorIndexError) and the two engine calls below, each on every point whose ``doc_id``
    is the document's. Chunks are written invisible with an empty principals list and made
    visible in one step; a deletion hides the points first, then removes them.
    """

    _lock: AbstractContextManager[Any]

    @abstractmethod
    def _engine(self, action: str) -> AbstractContextManager[None]:
        """Translate the engine's errors while doing ``action``; refuse if closed."""

    @abstractmethod
    def _set_doc_principals(self, doc_id: str, principals: list[str]) -> None:
        """Set the principals payload of all the document's points in one engine call."""

    @abstractmethod
    def _delete_doc_points(self, doc_id: str) -> None:
        """Remove all the document's points in one engine call."""

    def publish(self, doc_id: str, principals: Sequence[str]) -> None:
        """Set the principals of all the document's points in one operation."""
        self._set_principals(
            checked_doc_id(doc_id), checked_principals(principals, allow_empty=True)
        )

    def hide(self, doc_id: str) -> None:
        """Empty the principals of all the document's points in one operation."""
        self._set_principals(checked_doc_id(doc_id), [])

    def delete_document(self, doc_id: str) -> None:
        """Hide all the document's points, then remove them."""
        checked_doc_id(doc_id)
        with self._lock, self._engine("delete a document"):
            # Hidden first: should the removal stop half-way, what is left is invisible and
            # still listed by document_ids() for the orphan cleanup.
            self._set_doc_principals(doc_id, [])
            self._delete_doc_points(doc_id)

    def _set_principals(self, doc_id: str, principals: list[str]) -> None:
        with self._lock, self._engine("change a document's permissions"):
            self._set_doc_principals(doc_id, principals)
