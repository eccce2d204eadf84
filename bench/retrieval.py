"""Benchmark ACL-filtered top-10 retrieval: Qdrant Edge shard vs qdrant-client local mode.

    python bench/retrieval.py --chunks 100000 [--queries 200] [--seed 0]

Data: ``--chunks`` random 384-d unit vectors drawn from a mixture of gaussians (clustered,
like text embeddings), 10 chunks per document. ACL design: 100 groups, each document is
granted to one group chosen at random; each query comes from a caller who is in 3 random
groups and also holds ``user:<id>`` and ``everyone``, which no document is granted to, so
the filter matches ~3% of the chunks. Each query is drawn from the same mixture.

Both engines run the same queries through the same ``VectorIndex`` code; recall@10 is
measured against an exact filtered scan in numpy. Prints one JSON object on stdout;
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qdrant_client import QdrantClient, models  # noqa: E402

from ingest.index import (  # noqa: E402
    CHUNK_NO,
    DOC_ID,
    EVERYONE,
    PRINCIPALS,
    ChunkPoint,
    VectorIndex,
    point_id,
)
from ingest.qdrant_edge import EdgeTuning, QdrantEdgeIndex  # noqa: E402
from ingest.qdrant_server import QdrantServerIndex  # noqa: E402

Matrix = npt.NDArray[np.float32]
TOP_K = 10
TARGET_P95_MS = 20.0
TARGET_RECALL = 0.95
TARGET_SPEEDUP = 50.0


def log(message: str) -> None:
    """Print a progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clustered_vectors(
    rng: np.random.Generator, count: int, centers: Matrix, spread: float
) -> Matrix:
    """Draw unit vectors around random cluster centres (a normalised gaussian mixture)."""
    dimension = centers.shape[1]
    out = np.empty((count, dimension), dtype=np.float32)
    step = 50_000
    for start in range(0, count, step):
        stop = min(count, start + step)
        which = rng.integers(0, len(centers), size=stop - start)
        noise = rng.standard_normal((stop - start, dimension), dtype=np.float32)
        block = centers[which] + noise * np.float32(spread / np.sqrt(dimension))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def percentile_ms(samples: Sequence[float], q: float) -> float:
    """Return the q-th percentile of latencies given in seconds, in milliseconds."""
    return round(float(np.percentile(np.asarray(samples), q)) * 1000.0, 3)


class Workload:
    """The vectors, the ACL of every chunk, and the queries with their callers' principals."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Generate everything from the seed."""
        rng = np.random.default_rng(args.seed)
        self.dimension: int = args.dimension
        self.chunks_per_doc: int = args.chunks_per_doc
        n_docs = -(-args.chunks // args.chunks_per_doc)
        self.n_clusters = max(16, args.chunks // 500)
        centers = rng.standard_normal((self.n_clusters, args.dimension), dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        self.vectors = clustered_vectors(rng, args.chunks, centers, args.spread)
        self.doc_ids = [uuid.UUID(bytes=rng.bytes(16), version=4).hex for _ in range(n_docs)]
        self.doc_row: dict[str, int] = {
            d: i * self.chunks_per_doc for i, d in enumerate(self.doc_ids)
        }
        self.doc_group = rng.integers(0, args.groups, size=n_docs)
        self.chunk_group = np.repeat(self.doc_group, args.chunks_per_doc)[: args.chunks]
        self.members: list[npt.NDArray[np.int64]] = [
            np.flatnonzero(self.chunk_group == g) for g in range(args.groups)
        ]
        # The first ``warmup`` queries only warm the engine's caches and are not measured.
        total_queries = args.warmup + args.queries
        self.queries = clustered_vectors(rng, total_queries, centers, args.spread)
        self.caller_groups = [
            rng.choice(args.groups, size=args.caller_groups, replace=False)
            for _ in range(total_queries)
        ]
        self.principals = [
            [f"group:{g}" for g in groups] + [f"user:{n}", EVERYONE]
            for n, groups in enumerate(self.caller_groups)
        ]

    def point(self, row: int) -> ChunkPoint:
        """Return chunk ``row`` as the ingestion pipeline would hand it to the index."""
        doc, chunk_no = divmod(row, self.chunks_per_doc)
        return ChunkPoint(self.doc_ids[doc], chunk_no, self.vectors[row])

    def key(self, doc_id: str, chunk_no: int) -> int:
        """Map a hit back to its row in ``vectors``."""
        return self.doc_row[doc_id] + chunk_no

    def exact_top(self, query: int) -> list[int]:
        """Return the rows of the exact filtered top-k for query ``query`` (numpy scan)."""
        rows = np.concatenate([self.members[g] for g in self.caller_groups[query]])
        scores = self.vectors[rows] @ self.queries[query]
        best = np.argsort(-scores, kind="stable")[:TOP_K]
        return [int(r) for r in rows[best]]

    def allowed_fraction(self) -> float:
        """Return the mean fraction of chunks a query's caller may read."""
        total = len(self.vectors)
        sizes = [sum(len(self.members[g]) for g in groups) for groups in self.caller_groups]
        return float(np.mean(sizes)) / total


def ingest_published(index: VectorIndex, work: Workload, batch: int) -> float:
    """Write every chunk hidden, then publish each document, as the ingestion worker does."""
    started = time.perf_counter()
    total = len(work.vectors)
    per_doc = work.chunks_per_doc
    batch = max(per_doc, batch - batch % per_doc)
    next_report = 0.0
    for start in range(0, total, batch):
        stop = min(total, start + batch)
        index.upsert_hidden([work.point(row) for row in range(start, stop)])
        for doc in range(start // per_doc, -(-stop // per_doc)):
            index.publish(work.doc_ids[doc], [f"group:{work.doc_group[doc]}"])
        if stop / total >= next_report:
            log(f"ingested {stop:,}/{total:,} chunks ({time.perf_counter() - started:.1f} s)")
            next_report += 0.1
    return time.perf_counter() - started


def ingest_local_mode(client: QdrantClient, collection: str, work: Workload, batch: int) -> float:
    """Write every chunk with its final principals straight through qdrant-client.

    Local mode answers a publish (set_payload by filter) by scanning every point in Python,
    which would make ingesting 100k chunks take hours; only its search is measured here.
    """
    started = time.perf_counter()
    total = len(work.vectors)
    for start in range(0, total, batch):
        stop = min(total, start + batch)
        structs = []
        for row in range(start, stop):
            doc, chunk_no = divmod(row, work.chunks_per_doc)
            doc_id = work.doc_ids[doc]
            structs.append(
                models.PointStruct(
                    id=str(point_id(doc_id, chunk_no)),
                    vector=work.vectors[row].tolist(),
                    payload={
                        DOC_ID: doc_id,
                        CHUNK_NO: chunk_no,
                        PRINCIPALS: [f"group:{work.doc_group[doc]}"],
                    },
                )
            )
        client.upsert(collection, points=structs, wait=True)
    log(f"local mode: ingested {total:,} chunks ({time.perf_counter() - started:.1f} s)")
    return time.perf_counter() - started


def run_queries(
    index: VectorIndex, work: Workload, first: int, count: int
) -> tuple[list[float], float]:
    """Run ``count`` queries from number ``first`` on; return latencies (s) and mean recall@10."""
    latencies: list[float] = []
    recalls: list[float] = []
    for q in range(first, first + count):
        started = time.perf_counter()
        hits = index.search(work.queries[q], work.principals[q], TOP_K)
        latencies.append(time.perf_counter() - started)
        found = {work.key(hit.doc_id, hit.chunk_no) for hit in hits}
        exact = work.exact_top(q)
        recalls.append(len(found & set(exact)) / len(exact))
    return latencies, float(np.mean(recalls))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, required=True)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--warmup", type=int, default=200, help="unmeasured queries run first on each engine"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--chunks-per-doc", type=int, default=10)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--caller-groups", type=int, default=3)
    parser.add_argument("--spread", type=float, default=1.0, help="cluster noise norm")
    parser.add_argument("--batch", type=int, default=2000, help="chunks per upsert batch")
    parser.add_argument("--local-mode-max", type=int, default=100_000)
    parser.add_argument("--local-mode-queries", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=None)
    defaults = EdgeTuning()
    parser.add_argument("--m", type=int, default=defaults.m)
    parser.add_argument("--ef-construct", type=int, default=defaults.ef_construct)
    parser.add_argument("--payload-m", type=int, default=defaults.payload_m)
    parser.add_argument("--hnsw-ef", type=int, default=defaults.hnsw_ef)
    parser.add_argument(
        "--full-scan-threshold-kb", type=int, default=defaults.full_scan_threshold_kb
    )
    parser.add_argument("--indexing-threshold-kb", type=int, default=defaults.indexing_threshold_kb)
    parser.add_argument(
        "--exact-search-max-chunks", type=int, default=defaults.exact_search_max_chunks
    )
    parser.add_argument("--no-acorn", dest="acorn", action="store_false")
    args = parser.parse_args(argv)

    tuning = EdgeTuning(
        m=args.m,
        ef_construct=args.ef_construct,
        payload_m=args.payload_m,
        full_scan_threshold_kb=args.full_scan_threshold_kb,
        indexing_threshold_kb=args.indexing_threshold_kb,
        hnsw_ef=args.hnsw_ef,
        exact_search_max_chunks=args.exact_search_max_chunks,
        acorn=args.acorn,
    )
    log(f"generating {args.chunks:,} clustered {args.dimension}-d vectors")
    work = Workload(args)
    result: dict[str, Any] = {
        "chunks": args.chunks,
        "queries": args.queries,
        "seed": args.seed,
        "dimension": args.dimension,
        "data": f"mixture of {work.n_clusters} gaussians, unit-normalised, "
        f"{args.chunks_per_doc} chunks per document",
        "selectivity": {
            "design": f"{args.groups} groups, each document granted to 1 random group; caller "
            f"in {args.caller_groups} random groups plus user:<id> and everyone (no grants)",
            "expected_fraction": round(args.caller_groups / args.groups, 4),
            "measured_fraction": round(work.allowed_fraction(), 4),
        },
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "edge_tuning": asdict(tuning),
    }

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-retrieval-") as tmp:
        edge = QdrantEdgeIndex(Path(tmp) / "edge", args.dimension, tuning=tuning)
        result["ingest_s"] = round(ingest_published(edge, work, args.batch), 2)
        log("flush: building the HNSW graph and payload indexes")
        started = time.perf_counter()
        edge.flush()
        result["index_build_s"] = round(time.perf_counter() - started, 2)
        result["edge_shard"] = edge.stats()
        log(f"indexed in {result['index_build_s']} s: {result['edge_shard']}")
        if args.warmup:
            cold, _ = run_queries(edge, work, 0, args.warmup)
            result["cold_p95_ms"] = percentile_ms(cold, 95)
        latencies, recall = run_queries(edge, work, args.warmup, args.queries)
        edge.close()
        result.update(
            warmup_queries=args.warmup,
            p50_ms=percentile_ms(latencies, 50),
            p95_ms=percentile_ms(latencies, 95),
            p99_ms=percentile_ms(latencies, 99),
            recall_at_10=round(recall, 4),
        )
        log(f"edge: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, recall {recall:.4f}")

    if args.chunks > args.local_mode_max:
        result["local_mode_p95_ms"] = None
        result["speedup"] = None
        result["local_mode_skipped_reason"] = (
            f"{args.chunks:,} chunks > --local-mode-max {args.local_mode_max:,}: local mode is "
            "a pure-Python scan (about 2 s per query at 100k), too slow to ingest and query here"
        )
    else:
        local_queries = min(args.queries, args.local_mode_queries)
        log(f"local mode: ingesting, then {local_queries} queries")
        with warnings.catch_warnings():
            # Local mode warns that it is not meant for this many points: that is the point.
            warnings.simplefilter("ignore")
            client = QdrantClient(":memory:")
            local = QdrantServerIndex(client, "bench", args.dimension, owns_client=True)
            result["local_mode_ingest_s"] = round(
                ingest_local_mode(client, "bench", work, args.batch), 2
            )
            run_queries(local, work, 0, 1)
            latencies, recall = run_queries(local, work, args.warmup, local_queries)
            local.close()
        result.update(
            local_mode="qdrant-client QdrantClient(':memory:') (same search as path=...)",
            local_mode_queries=local_queries,
            local_mode_p50_ms=percentile_ms(latencies, 50),
            local_mode_p95_ms=percentile_ms(latencies, 95),
            local_mode_recall_at_10=round(recall, 4),
        )
        if local_queries < args.queries:
            result["local_mode_note"] = (
                f"local mode ran the first {local_queries} of the {args.queries} queries"
            )
        result["speedup"] = round(result["local_mode_p95_ms"] / result["p95_ms"], 1)
        log(f"local mode: p95 {result['local_mode_p95_ms']} ms, speedup {result['speedup']}x")

    result["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["targets_met"] = {
        "p95_ms<=20": result["p95_ms"] <= TARGET_P95_MS,
        "recall_at_10>=0.95": result["recall_at_10"] >= TARGET_RECALL,
        "speedup>=50": None if result["speedup"] is None else result["speedup"] >= TARGET_SPEEDUP,
    }
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
