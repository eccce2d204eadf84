"""Keyed vectors and their erasure, measured: what a copy of the index confirms, what it costs.

    python bench/vectors.py [--chunks N] [--purge-sizes 10000,50000]

Guessing: sentences from the Python 3.11 documentation (python3.11-doc, see
``answers_corpus.sh``) are embedded with the bundled MiniLM and stored in an edge shard as
the appliance stores them (keyed) and as it did before (plain). For each sentence the
attacker's best guess is its exact text, and a near miss is the same sentence with one word
dropped; the figures are the cosine of each guess with the stored vector, read from a copy
of the shard's files with the engine alone (no key). Costs: search latency with and without
the key, and the time of ``purge_deleted`` (the cleanup job's rebuild) after one deletion,
for shards of the given sizes. Prints JSON.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import qdrant_edge as qe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.index import EVERYONE, ChunkPoint  # noqa: E402
from ingest.keyed import KeyedVectorIndex, VectorKey  # noqa: E402
from ingest.qdrant_edge import QdrantEdgeIndex  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html/library")
DIM = 384


def sentences(limit: int) -> list[str]:
    """Plain sentences of 8-40 words from the library reference pages."""
    found: list[str] = []
    for page in sorted(DOCS.glob("*.html")):
        text = html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(errors="replace")))
        for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
            if 8 <= len(sentence.split()) <= 40 and sentence not in found:
                found.append(sentence)
                if len(found) == limit:
                    return found
    return found


def median_abs_cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return round(float(np.median(np.abs(np.sum(a * b, axis=1)))), 4)


def guessing(chunks: int, root: Path) -> dict[str, object]:
    from models.embedder import SentenceTransformerEmbedder
    from models.manifest import bundled_models

    entry = next(e for e in bundled_models() if "minilm" in e.name.lower())
    embedder = SentenceTransformerEmbedder(entry, device="cpu")
    texts = sentences(chunks)
    exact = embedder.embed(texts)
    near = embedder.embed([" ".join(t.split()[:-2] + t.split()[-1:]) for t in texts])
    key = VectorKey(np.random.default_rng().bytes(32), DIM)
    stored = {}
    for name, turn in (("plain", False), ("keyed", True)):
        inner = QdrantEdgeIndex(root / name, DIM)
        index = KeyedVectorIndex(inner, key) if turn else inner
        index.upsert_hidden([ChunkPoint("d", i, v.tolist()) for i, v in enumerate(exact)])
        index.publish("d", [EVERYONE])
        index.close()
        reopened = QdrantEdgeIndex(root / name, DIM)  # the copy, opened without the key
        records, _ = reopened._shard.scroll(
            qe.ScrollRequest(limit=chunks, with_payload=True, with_vector=True)
        )
        by_no = {int((r.payload or {})["chunk_no"]): np.asarray(r.vector) for r in records}
        stored[name] = np.stack([by_no[i] for i in range(len(texts))])
        reopened.close()
    return {
        "sentences": len(texts),
        "exact_guess_cosine_median": {
            n: median_abs_cos(exact, stored[n]) for n in ("plain", "keyed")
        },
        "near_miss_cosine_median": {n: median_abs_cos(near, stored[n]) for n in ("plain", "keyed")},
    }


def costs(sizes: list[int], root: Path) -> dict[str, object]:
    rng = np.random.default_rng(1)
    key = VectorKey(rng.bytes(32), DIM)
    result: dict[str, object] = {}
    for size in sizes:
        index = KeyedVectorIndex(QdrantEdgeIndex(root / f"purge-{size}", DIM), key)
        vectors = rng.standard_normal((size, DIM)).astype(np.float32)
        for start in range(0, size, 1000):
            batch = vectors[start : start + 1000]
            doc = f"doc-{start // 1000}"
            index.upsert_hidden([ChunkPoint(doc, i, v.tolist()) for i, v in enumerate(batch)])
            index.publish(doc, [EVERYONE])
        index.flush()  # builds the HNSW graph, as `appliance index optimize` does
        queries = rng.standard_normal((50, DIM)).astype(np.float32)
        t0 = time.perf_counter()
        for q in queries:
            index.search(q.tolist(), [EVERYONE], 10)
        keyed_ms = (time.perf_counter() - t0) / len(queries) * 1000
        t0 = time.perf_counter()
        for q in queries:
            index.inner.search(q.tolist(), [EVERYONE], 10)
        plain_ms = (time.perf_counter() - t0) / len(queries) * 1000
        index.delete_document("doc-0")
        t0 = time.perf_counter()
        purged = index.inner.purge_deleted()  # type: ignore[attr-defined]
        purge_s = time.perf_counter() - t0
        index.close()
        result[str(size)] = {
            "search_ms_keyed": round(keyed_ms, 2),
            "search_ms_plain": round(plain_ms, 2),
            "purge_seconds": round(purge_s, 1),
            "purged": purged,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=300, help="sentences to embed (300)")
    parser.add_argument(
        "--purge-sizes", default="10000,50000", help="shard sizes for the purge timing"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = {
            "guessing": guessing(args.chunks, root),
            "costs": costs([int(s) for s in args.purge_sizes.split(",")], root),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
