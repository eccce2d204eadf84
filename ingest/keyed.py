"""Keyed vectors: the index stores every embedding turned by a secret rotation.

Without it, a copy of the index files alone (a backup, a disk, a snapshot) confirms guesses:
embed a guessed sentence with the public embedding model, search the copy, and the exact
chunk scores 1.0 against about 0.9 for a near miss. No key is needed for that.

``VectorKey`` is a random orthogonal matrix Q (a rotation, possibly with a reflection) drawn
from a 256-bit secret. The index stores ``Q v`` and is searched with ``Q q``. Because Q is
orthogonal, ``cos(Q q, Q v) == cos(q, v)``: the search ranks and scores exactly as before, and
the engine's filters, graph and quantisation are untouched. A guess embedded without Q lands
at a random direction relative to the stored vectors (|cosine| around 0.05 in 384
dimensions), so the copy no longer confirms it.

What this does not protect against (the README says so, and tests show each):

- anyone who has the secret (the key store entry and the key file that wraps it), or the
  memory of the running service;
- a known-plaintext attack: whoever knows the text of enough stored chunks (about as many as
  the vector has dimensions, 384 for the bundled embedder) and holds a copy of the index can
  embed those texts, solve for Q (orthogonal Procrustes) and then confirm guesses again;
- the geometry among stored vectors: which chunks are near each other, duplicates, clusters
  and how many chunks each document has stay visible, because a rotation keeps them.

The secret generates Q through NumPy's PCG64DXSM generator. The generator need not be
cryptographic: its only output is Q, and Q is as secret as the seed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ingest.index import ChunkPoint, Hit, VectorIndex, VectorIndexError, checked_vector
from ingest.shard_files import write_synced

SCHEME = "orthogonal-v1"
"""The name of the transform, recorded next to the index; a new scheme needs a re-keying."""

SECRET_BYTES = 32
VectorTransform = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


class VectorKey:
    """A secret orthogonal transform of ``dimension``-d vectors, drawn from ``secret``."""

    def __init__(self, secret: bytes, dimension: int) -> None:
        """Draw the Haar-random orthogonal matrix for this secret and dimension."""
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"a vector key needs at least {SECRET_BYTES} secret bytes")
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be a positive int, got {dimension!r}")
        self.dimension = dimension
        seed = hashlib.sha256(b"appliance-vector-key\x00" + SCHEME.encode() + b"\x00" + secret)
        rng = np.random.Generator(np.random.PCG64DXSM(int.from_bytes(seed.digest(), "big")))
        gaussian = rng.standard_normal((dimension, dimension))
        q, r = np.linalg.qr(gaussian)
        # Multiplying each column by the sign of R's diagonal makes the draw uniform over the
        # orthogonal group (QR alone favours some orientations).
        self.matrix: npt.NDArray[np.float64] = q * np.sign(np.diag(r))
        self.fingerprint = hmac.new(
            secret, f"fingerprint:{SCHEME}:{dimension}".encode(), hashlib.sha256
        ).hexdigest()[:32]
        """Names the key without revealing it: recorded next to the index to catch a mismatch."""

    def apply(self, vector: Sequence[float]) -> list[float]:
        """Return ``Q v`` for a checked vector (ValueError when it cannot be searched)."""
        checked = np.asarray(checked_vector(vector, self.dimension), dtype=np.float64)
        turned: list[float] = (self.matrix @ checked).astype(np.float32).tolist()
        return turned

    def apply_many(self, vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Return the rows of ``vectors`` turned by Q."""
        rows = np.asarray(vectors, dtype=np.float64)
        turned: npt.NDArray[np.float32] = (rows @ self.matrix.T).astype(np.float32)
        return turned


class KeyedVectorIndex:
    """A VectorIndex that stores and searches vectors turned by a VectorKey.

    Everything but the vectors passes through unchanged, so both backends, their filters
    and their tests keep working; attributes it does not define (``stats``, ``path``, ...)
    are the inner index's.
    """

    def __init__(self, inner: VectorIndex, key: VectorKey) -> None:
        """Wrap ``inner``; the key's dimension must be the index's."""
        if key.dimension != inner.dimension:
            raise ValueError(
                f"the vector key is for {key.dimension}-d vectors, the index holds "
                f"{inner.dimension}-d ones"
            )
        self.inner = inner
        self.key = key
        self.dimension = inner.dimension

    def upsert_hidden(self, points: Sequence[ChunkPoint]) -> None:
        """Write the turned points, invisible until published."""
        self.inner.upsert_hidden(
            [ChunkPoint(p.doc_id, p.chunk_no, self.key.apply(p.vector)) for p in points]
        )

    def search(self, vector: Sequence[float], principals: Sequence[str], k: int) -> list[Hit]:
        """Search with the turned query: the same hits and scores as without the key.

        Turning both sides adds float32 noise of about 1e-7 to each cosine; scores are
        rounded to 6 places so that it cannot move a score across a threshold (a cosine of
        exactly 0 must not come back as -1e-8 and fall below ``min_score = 0``).
        """
        hits = self.inner.search(self.key.apply(vector), principals, k)
        # "+ 0.0" turns a rounded -0.0 into 0.0.
        return [Hit(h.doc_id, h.chunk_no, round(h.score, 6) + 0.0) for h in hits]

    def publish(self, doc_id: str, principals: Sequence[str]) -> None:
        """Set the principals of all the document's points in one operation."""
        self.inner.publish(doc_id, principals)

    def hide(self, doc_id: str) -> None:
        """Empty the principals of all the document's points in one operation."""
        self.inner.hide(doc_id)

    def delete_document(self, doc_id: str) -> None:
        """Remove all the document's points (hiding them first)."""
        self.inner.delete_document(doc_id)

    def document_ids(self) -> set[str]:
        """Return every doc_id with at least one point, visible or not."""
        return self.inner.document_ids()

    def count(self, doc_id: str | None = None) -> int:
        """Count the points of one document, or of the whole index."""
        return self.inner.count(doc_id)

    def flush(self) -> None:
        """Make every write so far durable on disk."""
        self.inner.flush()

    def close(self) -> None:
        """Release the engine."""
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        """The inner index's other attributes (``stats``, ``purge_deleted``, ``path``)."""
        if name in {"inner", "key"}:  # not set yet: avoid recursing during __init__
            raise AttributeError(name)
        return getattr(self.inner, name)


RECORD_NAME = "vector-key.json"
"""The record of the key, next to the vectors it turned (in the edge shard's directory)."""


@runtime_checkable
class Rekeyable(Protocol):
    """A backend that can turn every stored vector once and record the key atomically."""

    def rekey(self, transform: VectorTransform, record: Path, body: bytes) -> int:
        """Turn every point's vector by ``transform``; write ``body`` to ``record``."""
        ...


def open_keyed(inner: VectorIndex, key: VectorKey, record: Path) -> KeyedVectorIndex:
    """Wrap ``inner`` in the key, after checking (or creating) the record of the key.

    An index with points but no record was written before vectors were keyed: its vectors
    are turned once, through the backend's ``rekey``, which writes the record only when
    every vector is turned. An index keyed with another key is refused: its searches would
    return noise.
    """
    body = json.dumps(
        {"scheme": SCHEME, "fingerprint": key.fingerprint, "dimension": key.dimension}
    ).encode()
    try:
        found = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        found = None
    except (OSError, ValueError) as exc:
        raise VectorIndexError(
            f"the vector key record {record} is unreadable ({exc}); restore it from the "
            "backup taken with the index"
        ) from exc
    if found is None:
        if inner.count() == 0:
            write_synced(record, body)
        elif isinstance(inner, Rekeyable):
            inner.rekey(key.apply_many, record, body)
        else:
            raise VectorIndexError(
                "the vector index holds vectors written before they were keyed, and its "
                "backend cannot turn them; re-index the documents into an empty index"
            )
    elif not isinstance(found, dict) or found.get("scheme") != SCHEME:
        raise VectorIndexError(
            f"the vector key record {record} names an unknown scheme; restore the index and "
            "its record from the same backup"
        )
    elif found.get("fingerprint") != key.fingerprint:
        raise VectorIndexError(
            f"the vector index was keyed with another vector key than the key store holds "
            f"(record {record}); restore the key store and key file backed up with the "
            "index, or move the index and its record away and re-index the documents"
        )
    return KeyedVectorIndex(inner, key)
