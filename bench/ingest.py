"""Ingestion throughput: pages/s and chunks/s, split into parse, embed and index time.

Generates a mixed corpus (text PDFs, DOCX, PPTX, Markdown, HTML), then measures
1. each stage alone, sequentially: parse (unstructured), chunk+embed (the real bundled
   embedder), index (Qdrant Edge upserts + publish);
2. the real pipeline end to end: `IngestionWorker` with the parser in its child process,
   encryption, database writes and atomic publication, as `appliance ingest` runs it.
Prints one JSON object. Usage: python bench/ingest.py [--pdfs N] [--pages-per-pdf P]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _distinct(pages: list[tuple[str, Sequence[str]]], n: int) -> list[tuple[str, Sequence[str]]]:
    """The same prose with a per-file heading and sentence, so files are not duplicates."""
    return [(f"{h} (file {n})", [*paras, f"This is file number {n}."]) for h, paras in pages]


def build_corpus(root: Path, pdfs: int, pages_per_pdf: int) -> list[Path]:
    """Mixed formats, mostly PDF pages, deterministic."""
    from tests.fixtures.documents import (
        filler_pages,
        make_docx,
        make_html,
        make_markdown,
        make_pdf,
        make_pptx,
    )

    files = [
        make_pdf(root / f"report-{i}.pdf", _distinct(filler_pages(pages_per_pdf), i))
        for i in range(pdfs)
    ]
    files.append(make_docx(root / "handbook.docx", _distinct(filler_pages(3), 101)))
    files.append(make_pptx(root / "deck.pptx", _distinct(filler_pages(3), 102)))
    files.append(make_markdown(root / "notes.md", _distinct(filler_pages(3), 103)))
    files.append(make_html(root / "page.html", _distinct(filler_pages(3), 104)))
    return files


def main() -> None:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdfs", type=int, default=6, help="number of text PDFs")
    parser.add_argument("--pages-per-pdf", type=int, default=10, help="pages in each PDF")
    args = parser.parse_args()

    from appliance.auth.bootstrap import init
    from appliance.core.runtime import open_runtime
    from appliance.documents.ingestion import IngestionWorker, embed_text
    from ingest.chunk import chunk_elements
    from ingest.index import ChunkPoint
    from ingest.parse import parse_file
    from ingest.qdrant_edge import QdrantEdgeIndex
    from tests.fixtures.app import make_settings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = root / "corpus"
        corpus.mkdir()
        files = build_corpus(corpus, args.pdfs, args.pages_per_pdf)
        settings = make_settings(root / "instance")
        init(settings)
        rt = open_runtime(settings)
        embedder = rt.embedder()
        print(f"corpus: {len(files)} files", file=sys.stderr)

        # 1. Stages alone.
        t = time.perf_counter()
        parsed = [
            parse_file(f, max_bytes=settings.max_upload_bytes, ocr=False, filename=f.name)
            for f in files
        ]
        parse_s = time.perf_counter() - t
        pages = sum(p.pages for p in parsed)
        t = time.perf_counter()
        chunk_lists = [
            chunk_elements(
                p.elements,
                count_tokens=embedder.count_tokens,
                max_tokens=settings.ingest.chunk_max_tokens,
                overlap_tokens=settings.ingest.chunk_overlap_tokens,
            )
            for p in parsed
        ]
        chunk_s = time.perf_counter() - t
        n_chunks = sum(len(c) for c in chunk_lists)
        t = time.perf_counter()
        vectors = [embedder.embed([embed_text(c) for c in cl]) for cl in chunk_lists]
        embed_s = time.perf_counter() - t
        index = QdrantEdgeIndex(root / "bench-index", 384)
        t = time.perf_counter()
        for i, (cl, vs) in enumerate(zip(chunk_lists, vectors, strict=True)):
            doc_id = f"{i:032x}"
            index.upsert_hidden(
                [ChunkPoint(doc_id, c.chunk_no, v) for c, v in zip(cl, vs, strict=True)]
            )
            index.publish(doc_id, ["everyone"])
        index.flush()
        index_s = time.perf_counter() - t
        index.close()
        print("stages measured; running the pipeline", file=sys.stderr)

        # 2. The real pipeline.
        from appliance.auth import service as users
        from appliance.documents import service as docs

        with rt.sessions() as s:
            owner = users.first_admin(s)
            assert owner is not None
            for f in files:
                docs.submit_file(
                    session=s,
                    crypto=rt.crypto,
                    blobs=rt.blobs,
                    path=f,
                    filename=f.name,
                    owner=owner,
                    grants=["everyone"],
                    classification="internal",
                    max_bytes=settings.max_upload_bytes,
                    actor="bench",
                )
            s.commit()
        worker = IngestionWorker(rt)
        t = time.perf_counter()
        worker.run_until_idle()
        pipeline_s = time.perf_counter() - t
        worker.close()
        rt.close()

    stage_total = parse_s + chunk_s + embed_s + index_s
    print(
        json.dumps(
            {
                "files": len(files),
                "pages": pages,
                "chunks": n_chunks,
                "parse_s": round(parse_s, 2),
                "chunk_s": round(chunk_s, 2),
                "embed_s": round(embed_s, 2),
                "index_s": round(index_s, 2),
                "parse_pages_per_s": round(pages / parse_s, 2),
                "embed_chunks_per_s": round(n_chunks / embed_s, 2),
                "index_chunks_per_s": round(n_chunks / index_s, 2),
                "sequential_pages_per_s": round(pages / stage_total, 2),
                "pipeline_s": round(pipeline_s, 2),
                "pipeline_pages_per_s": round(pages / pipeline_s, 2),
                "pipeline_chunks_per_s": round(n_chunks / pipeline_s, 2),
                "note": "pipeline = IngestionWorker: parser child process overlapping embedding, "
                "plus encryption, SQLite writes and atomic publish; includes parser start-up",
            }
        )
    )


if __name__ == "__main__":
    main()
