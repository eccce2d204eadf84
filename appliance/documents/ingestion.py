"""The ingestion worker: queued -> parsing -> embedding -> indexed (or failed, with a reason).

Parsing runs in child processes (``ingest.parse.sandbox``: started once and reused), under
hard limits per file: wall time, CPU time, address space, and how far an Office file may
unpack. It is CPU-heavy pure Python, so in-process it would hold the GIL against the API
and against embedding; and a hostile file stopped at its limits fails with the reason
while the other parsers carry on. While one document is embedded, the next ones are
already being parsed, which keeps the cores busy.

Publishing is atomic (DESIGN invariant 3): chunks are written with an empty ACL, and once
all of them are in, one index operation sets the document's principals. Recovery after a
crash resets work whose process is gone, finishes interrupted deletions and removes index
points that belong to no visible document.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from sqlalchemy import delete, select, update

from appliance.admin import service as switches
from appliance.audit import service as audit
from appliance.core import places
from appliance.core.config import IngestSettings, Settings
from appliance.core.crypto import Crypto
from appliance.core.db import utcnow
from appliance.core.errors import ApplianceError
from appliance.core.places import DOC_KEY
from appliance.core.runtime import Runtime
from appliance.documents import service as docs
from appliance.documents.tables import (
    DELETING,
    EMBEDDING,
    FAILED,
    IN_PROGRESS,
    INDEXED,
    PARSING,
    QUEUED,
    Chunk,
    Document,
)
from ingest.chunk import Chunk as TextChunk
from ingest.chunk import chunk_elements
from ingest.errors import EmptyDocument, IngestError
from ingest.index import ChunkPoint
from ingest.parse import ParsedDocument, ParseLimits, parse_file
from ingest.parse.sandbox import DEFAULT_PARSERS, ParserPool
from ingest.sentences import pack_vectors, split_sentences

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
ORPHAN_BLOB_GRACE_SECONDS = 3600  # an upload writes its blob just before its row
SYSTEM_ACTOR = "system:ingest"
ProgressFn = Callable[[str, str, int, int], None]  # doc_id, state, done, total


def worker_identity() -> str:
    """This process, as recorded on the documents it claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_alive(claimed_by: str | None) -> bool:
    """Whether the claiming process still runs (only knowable for this host)."""
    if not claimed_by:
        return False
    host, _, pid_text = claimed_by.rpartition(":")
    if host != socket.gethostname():
        return True  # another host's worker: leave it alone
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parse_limits(s: IngestSettings) -> ParseLimits:
    """The `ingest` settings' limits on reading one file."""
    return ParseLimits(
        timeout_seconds=s.parse_timeout_seconds,
        cpu_seconds=s.parse_cpu_seconds,
        memory_mb=s.parse_memory_mb,
        max_unpack_ratio=s.max_unpack_ratio,
        unpack_floor_mb=s.unpack_floor_mb,
    )


class Parser:
    """Reads files in parser processes under hard limits per file (isolated), or inline.

    Inline (tests, and tools that trust their files) applies the size limits only: no
    time or memory limit can stop a parse in this process.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        ocr: bool,
        isolated: bool = True,
        limits: ParseLimits | None = None,
        parsers: int | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.ocr = ocr
        self.isolated = isolated
        self.limits = limits
        self.parsers = parsers
        self._pool: ParserPool | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, isolated: bool = True) -> Parser:
        """A parser with the configured upload limit, OCR switch, limits and parsers."""
        parser = cls(
            max_bytes=settings.max_upload_bytes, ocr=settings.ingest.ocr, isolated=isolated
        )
        parser.configure(settings.ingest)
        return parser

    def configure(self, s: IngestSettings) -> None:
        """Take the limits and the number of parsers from settings where none were given.

        The worker does this, so a Parser made only to choose isolation (the CLI's) honours
        the configured limits too.
        """
        if self.limits is None:
            self.limits = parse_limits(s)
        if self.parsers is None:
            self.parsers = s.parsers

    @property
    def parallel(self) -> int:
        """How many files are read at once."""
        return (self.parsers or DEFAULT_PARSERS) if self.isolated else 1

    def _get_pool(self) -> ParserPool:
        if self._pool is None:
            self._pool = ParserPool(max_bytes=self.max_bytes, ocr=self.ocr, size=self.parallel)
        return self._pool

    def start(self) -> None:
        """Start the parser processes now rather than with the first file."""
        if self.isolated:
            self._get_pool().start()

    def pids(self) -> list[int]:
        """Process ids of the running parser processes."""
        return self._pool.pids() if self._pool is not None else []

    def submit(self, path: Path, filename: str) -> Future[ParsedDocument]:
        """Start parsing; the future raises IngestError for bad input or a limit reached."""
        limits = self.limits or ParseLimits()
        if self.isolated:
            return self._get_pool().submit(path, filename, limits)
        fut: Future[ParsedDocument] = Future()
        try:
            fut.set_result(
                parse_file(
                    path, max_bytes=self.max_bytes, ocr=self.ocr, filename=filename, limits=limits
                )
            )
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def close(self) -> None:
        """Stop the parser processes."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


@dataclass
class _Pending:
    doc_id: str
    future: Future[ParsedDocument]
    tmp_dir: Path


@dataclass
class RecoveryReport:
    """What recovery found and fixed."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deletions_finished: list[str] = field(default_factory=list)
    orphan_points_removed: list[str] = field(default_factory=list)
    orphan_blobs_removed: int = 0
    orphan_chunk_rows_removed: int = 0


def _tmp_root() -> str | None:
    # Plaintext of a file being parsed lives only in a private directory in memory-backed
    # /dev/shm when the host has it, and is removed as soon as parsing ends.
    shm = Path("/dev/shm")  # noqa: S108 - a private 0700 directory is created inside
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def embed_text(chunk: TextChunk) -> str:
    """What the embedder sees: the section heading gives a passage its context."""
    return f"{chunk.heading}\n{chunk.text}" if chunk.heading else chunk.text


class IngestionWorker:
    """Processes queued documents; safe to run in several processes at once."""

    def __init__(
        self, rt: Runtime, *, parser: Parser | None = None, on_progress: ProgressFn | None = None
    ) -> None:
        self.rt = rt
        s = rt.settings.ingest
        self.parser = parser or Parser.from_settings(rt.settings)
        self.parser.configure(s)
        self.on_progress = on_progress
        self.identity = worker_identity()

    # -- recovery -------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Undo interrupted work, finish interrupted deletions, remove orphans."""
        rt, report = self.rt, RecoveryReport()
        index = rt.index()
        with rt.sessions() as session:
            stuck = session.execute(
                select(Document).where(Document.state.in_(IN_PROGRESS))
            ).scalars()
            for doc in list(stuck):
                if _process_alive(doc.claimed_by):
                    continue
                index.delete_document(doc.id)
                session.execute(delete(Chunk).where(Chunk.doc_id == doc.id))
                doc.chunks_done = 0
                doc.claimed_by = None
                if doc.attempts >= MAX_ATTEMPTS:
                    doc.state, doc.error_code = FAILED, "interrupted"
                    doc.error_reason = (
                        f"Ingestion was interrupted {doc.attempts} times (the process stopped "
                        "while working on this file). Check the server's memory and logs, "
                        "then upload the file again."
                    )
                    report.failed.append(doc.id)
                else:
                    doc.state = QUEUED
                    report.requeued.append(doc.id)
            session.commit()
            deleting = list(
                session.execute(select(Document.id).where(Document.state == DELETING)).scalars()
            )
        for doc_id in deleting:
            with rt.sessions() as session:
                docs.finish_delete(
                    session=session, index=index, crypto=rt.crypto, blobs=rt.blobs, doc_id=doc_id
                )
            report.deletions_finished.append(doc_id)
        self._remove_orphans(report)
        if any(
            (
                report.requeued,
                report.failed,
                report.deletions_finished,
                report.orphan_points_removed,
                report.orphan_blobs_removed,
            )
        ):
            with rt.sessions() as session:
                audit.record(
                    session,
                    actor=SYSTEM_ACTOR,
                    action="ingest.recover",
                    details={
                        "requeued": len(report.requeued),
                        "failed": len(report.failed),
                        "deletions_finished": len(report.deletions_finished),
                        "orphan_points_removed": len(report.orphan_points_removed),
                        "orphan_blobs_removed": report.orphan_blobs_removed,
                    },
                )
                session.commit()
        return report

    def _remove_orphans(self, report: RecoveryReport) -> None:
        # Runs beside a live worker (the periodic cleanup), so it only touches what no
        # worker can be using: points of documents that are gone or FAILED (re-read just
        # before deleting), chunk rows of FAILED documents, and blobs with no row that are
        # older than any upload in flight.
        rt = self.rt
        index = rt.index()
        with rt.sessions() as session:
            for doc_id in sorted(index.document_ids()):
                state = session.execute(
                    select(Document.state).where(Document.id == doc_id)
                ).scalar_one_or_none()
                if state is None or state == FAILED:
                    index.delete_document(doc_id)
                    report.orphan_points_removed.append(doc_id)
            result = session.execute(
                delete(Chunk).where(
                    Chunk.doc_id.in_(select(Document.id).where(Document.state == FAILED))
                )
            )
            report.orphan_chunk_rows_removed = int(result.rowcount or 0)  # type: ignore[attr-defined]
            session.commit()
            known = set(session.execute(select(Document.id)).scalars())
        cutoff = time.time() - ORPHAN_BLOB_GRACE_SECONDS
        for blob_id in rt.blobs.ids() - known:
            if rt.blobs.mtime(blob_id) < cutoff:
                rt.blobs.delete(blob_id)
                report.orphan_blobs_removed += 1
        rt.blobs.remove_stale_temp(older_than=cutoff)

    # -- the work loop --------------------------------------------------------------

    def _claim_next(self, only: set[str] | None) -> str | None:
        with self.rt.sessions() as session:
            if switches.ingestion_paused(session):  # kill switch: queued documents wait
                return None
            query = select(Document.id).where(Document.state == QUEUED)
            if only is not None:
                query = query.where(Document.id.in_(only))
            for doc_id in session.execute(query.order_by(Document.created_at).limit(5)).scalars():
                claimed = session.execute(
                    update(Document)
                    .where(Document.id == doc_id, Document.state == QUEUED)
                    .values(
                        state=PARSING,
                        claimed_by=self.identity,
                        attempts=Document.attempts + 1,
                        updated_at=utcnow(),
                    )
                )
                session.commit()
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    return str(doc_id)
        return None

    def _start_next(self, only: set[str] | None) -> _Pending | None:
        while (doc_id := self._claim_next(only)) is not None:
            self._progress(doc_id, PARSING, 0, 0)
            rt = self.rt
            tmp_dir = Path(tempfile.mkdtemp(prefix="appliance-ingest-", dir=_tmp_root()))
            try:
                with rt.sessions() as session:
                    doc = session.get_one(Document, doc_id)
                    filename = docs.filename_of(rt.crypto, doc)
                plain = rt.crypto.decrypt(DOC_KEY, doc_id, places.DOC_BLOB, rt.blobs.get(doc_id))
                # Only the extension of the original name is reused: never a path from input.
                suffix = PurePath(filename).suffix[:16]
                path = tmp_dir / f"upload{suffix}"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(plain)
                del plain
                return _Pending(doc_id, self.parser.submit(path, filename), tmp_dir)
            except (ApplianceError, OSError) as exc:
                shutil.rmtree(tmp_dir, ignore_errors=True)
                self._fail(
                    doc_id,
                    "unreadable",
                    f"The stored file could not be prepared for parsing ({exc}). If the "
                    "server's disk or /dev/shm is full, free space and upload it again.",
                )
        return None

    def run_until_idle(self, *, only: set[str] | None = None) -> int:
        """Process queued documents (optionally only these ids) until none is left."""
        return self._loop(stop=None, only=only)

    def run_forever(self, stop: threading.Event) -> None:
        """Process documents until `stop` is set; sleeps when idle."""
        self._loop(stop=stop, only=None)

    def _loop(self, *, stop: threading.Event | None, only: set[str] | None) -> int:
        processed = 0
        pending: list[_Pending] = []
        try:
            while stop is None or not stop.is_set():
                self._fill(pending, only)
                if not pending:
                    if stop is None:
                        return processed
                    stop.wait(self.rt.settings.ingest.poll_seconds)
                    continue
                current = self._first_parsed(pending, stop)
                if current is None:  # nothing finished yet: look at `stop` again
                    continue
                pending.remove(current)
                parsed = self._await_parse(current)
                # The freed parser starts the next file while this one is embedded here.
                self._fill(pending, only)
                if parsed is not None:
                    self._embed_and_publish(current.doc_id, parsed)
                processed += 1
            return processed
        finally:
            for left in pending:
                left.future.cancel()
                shutil.rmtree(left.tmp_dir, ignore_errors=True)

    def _fill(self, pending: list[_Pending], only: set[str] | None) -> None:
        """Claim documents until every parser has one."""
        while len(pending) < self.parser.parallel:
            started = self._start_next(only)
            if started is None:
                return
            pending.append(started)

    @staticmethod
    def _first_parsed(pending: list[_Pending], stop: threading.Event | None) -> _Pending | None:
        """The earliest-claimed document whose parse has ended (a parse always ends: each
        file has a wall-clock deadline); None after a short wait when `stop` may be set."""
        futures = [p.future for p in pending]
        done, _ = wait(futures, timeout=None if stop is None else 0.5, return_when=FIRST_COMPLETED)
        return next((p for p in pending if p.future in done), None)

    def _await_parse(self, pending: _Pending) -> ParsedDocument | None:
        try:
            return pending.future.result()
        except IngestError as exc:
            self._fail(pending.doc_id, exc.code, exc.reason)
        except Exception as exc:
            log.exception("parsing %s failed", pending.doc_id)
            self._fail(
                pending.doc_id,
                "parse_error",
                f"The file could not be read ({type(exc).__name__}). Check that it opens on "
                "your computer; if it does, send it to your administrator.",
            )
        finally:
            shutil.rmtree(pending.tmp_dir, ignore_errors=True)
        return None

    def _embed_and_publish(self, doc_id: str, parsed: ParsedDocument) -> None:
        rt = self.rt
        try:
            embedder, index = rt.embedder(), rt.index()
            s = rt.settings.ingest
            chunks = chunk_elements(
                parsed.elements,
                count_tokens=embedder.count_tokens,
                max_tokens=s.chunk_max_tokens,
                overlap_tokens=s.chunk_overlap_tokens,
            )
            if not chunks:
                raise EmptyDocument("No text was found in this file.")
            crypto: Crypto = rt.crypto
            with rt.sessions() as session:
                doc = session.get_one(Document, doc_id)
                doc.state = EMBEDDING
                doc.pages = parsed.pages
                doc.mime_type = parsed.mime_type[:128]
                doc.chunks_total = len(chunks)
                doc.chunks_done = 0
                if parsed.title:
                    doc.title_ct = crypto.encrypt_text(
                        DOC_KEY, doc_id, places.DOC_TITLE, parsed.title
                    )
                session.commit()
            self._progress(doc_id, EMBEDDING, 0, len(chunks))
            batch = rt.settings.models.embed_batch_size
            for start in range(0, len(chunks), batch):
                part = chunks[start : start + batch]
                # The sentences' vectors too, in the same call: evidence is then scored at
                # question time without embedding (appliance.chat.evidence).
                sentences = [split_sentences(c.text) for c in part]
                flat = [x for group in sentences for x in group]
                embedded = embedder.embed([embed_text(c) for c in part] + flat)
                vectors, sentence_vectors = embedded[: len(part)], embedded[len(part) :]
                packed: list[bytes] = []
                for group in sentences:
                    packed.append(pack_vectors(sentence_vectors[: len(group)]))
                    sentence_vectors = sentence_vectors[len(group) :]
                with rt.sessions() as session:
                    for c, sentence_blob in zip(part, packed, strict=True):
                        session.add(
                            Chunk(
                                doc_id=doc_id,
                                chunk_no=c.chunk_no,
                                page=c.page,
                                text_ct=crypto.encrypt_text(
                                    DOC_KEY, doc_id, places.chunk_text(c.chunk_no), c.text
                                ),
                                sentence_vectors_ct=crypto.encrypt(
                                    DOC_KEY,
                                    doc_id,
                                    places.chunk_sentence_vectors(c.chunk_no),
                                    sentence_blob,
                                ),
                                heading_ct=crypto.encrypt_text(
                                    DOC_KEY, doc_id, places.chunk_heading(c.chunk_no), c.heading
                                )
                                if c.heading
                                else None,
                            )
                        )
                    session.flush()
                    index.upsert_hidden(
                        [
                            ChunkPoint(doc_id=doc_id, chunk_no=c.chunk_no, vector=v)
                            for c, v in zip(part, vectors, strict=True)
                        ]
                    )
                    session.execute(
                        update(Document)
                        .where(Document.id == doc_id)
                        .values(chunks_done=start + len(part), updated_at=utcnow())
                    )
                    session.commit()
                self._progress(doc_id, EMBEDDING, start + len(part), len(chunks))
            # No index.flush() here: every update is durable in the shard's WAL when it
            # returns, and a flush builds HNSW while holding the GIL (seconds at 100k
            # chunks), which would stall the API in the one-process default.
            self._publish(doc_id, len(chunks))
        except IngestError as exc:
            self._fail(doc_id, exc.code, exc.reason)
        except ApplianceError as exc:
            self._fail(doc_id, exc.code, exc.message)
        except Exception as exc:
            log.exception("ingesting %s failed", doc_id)
            self._fail(
                doc_id,
                "internal_error",
                f"Indexing failed ({type(exc).__name__}). The file is kept; an administrator "
                "can retry it after checking the server log.",
            )

    def _publish(self, doc_id: str, n_chunks: int) -> None:
        rt = self.rt
        index = rt.index()
        with rt.sessions() as session:
            doc = session.get_one(Document, doc_id)
            if doc.state != EMBEDDING:  # deleted meanwhile: leave it to the deletion path
                return
            principals = docs.doc_principals(session, doc_id)
            index.publish(doc_id, principals)
            doc.state = INDEXED
            doc.indexed_at = utcnow()
            doc.claimed_by = None
            doc.error_code = doc.error_reason = None
            audit.record(
                session,
                actor=SYSTEM_ACTOR,
                action="document.indexed",
                target=f"doc:{doc_id}",
                details={"chunks": n_chunks, "pages": doc.pages},
            )
            session.commit()
            # A grant changed between reading the principals and publishing: publish again.
            latest = docs.doc_principals(session, doc_id)
            if latest != principals:
                index.publish(doc_id, latest)
        self._progress(doc_id, INDEXED, n_chunks, n_chunks)

    def _fail(self, doc_id: str, code: str, reason: str) -> None:
        rt = self.rt
        rt.index().delete_document(doc_id)
        with rt.sessions() as session:
            session.execute(delete(Chunk).where(Chunk.doc_id == doc_id))
            doc = session.get(Document, doc_id)
            if doc is not None and doc.state != DELETING:
                doc.state = FAILED
                doc.error_code = code[:32]
                doc.error_reason = reason
                doc.claimed_by = None
                audit.record(
                    session,
                    actor=SYSTEM_ACTOR,
                    action="document.ingest_failed",
                    target=f"doc:{doc_id}",
                    outcome="failed",
                    details={"code": code},
                )
            session.commit()
        self._progress(doc_id, FAILED, 0, 0)

    def _progress(self, doc_id: str, state: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(doc_id, state, done, total)

    def close(self) -> None:
        """Stop the parser processes."""
        self.parser.close()
