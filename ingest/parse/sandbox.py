"""Parser child processes with hard limits per file: wall time, CPU time and address space.

A ``ParserPool`` has ``size`` slots. Each slot is a thread here that owns one child
process (started once, then reused) and gives it one file at a time::

    slot thread (this process)                  child (its own process group)
    fork; wait for "ready" (deadline)   <-----  harden; load the language model; "ready"
    send the file and its limits        ----->  "started"; then, for this file only:
                                                RLIMIT_CPU = CPU used so far + cpu_seconds
    wait for the reply or the child's           RLIMIT_AS  = mapped now + memory_mb
      death, until the wall deadline            parse_file(...); limits lifted; reply
    deadline passed: SIGKILL the group          SIGXCPU (default action) ends it at the CPU
    died of SIGXCPU: the CPU reason               limit, even inside C code
    "memory" reply: the memory reason           MemoryError at the address-space limit:
                                                  reply "memory", then exit (start afresh)

A file over a limit fails with an ``IngestError`` that names the limit, its setting and
what to do; its child is replaced at once, and the other slots carry on meanwhile, so one
hostile file holds up at most one parser, for at most its limits. The wall-clock deadline
starts when a ready child has the file (a start-up has its own, fixed deadline); a child
that died while idle (the OOM killer) is noticed by the missing "started" and replaced
without blaming the file.

Children come from multiprocessing's fork server, which imports the parser libraries once
(4 s of CPU): a replacement for a killed child is a fork of that single-threaded process,
ready in about a second (mostly the language model), where a fresh interpreter would
import everything again. Forked children share those pages: about 0.15 GiB of their own.

Of the ``ingest.parse`` submodules only this one imports the package (it runs
``parse_file``); the package never imports it.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import resource
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path

from ingest.errors import IngestError
from ingest.parse import ParsedDocument, parse_file, warm_up
from ingest.parse.limits import MIB, ParseLimits, cpu_reason, memory_reason, timeout_reason

DEFAULT_PARSERS = 2
# Starting a parser is our own code, not the file's: a generous fixed deadline.
_START_TIMEOUT_S = 300.0
# What the fork server imports before it forks parsers (an import that fails is skipped,
# and the child then imports it itself). Not "__main__": the service's entry point is no
# business of a parser.
_PRELOAD = [
    "ingest.parse.sandbox",
    "pdfminer.high_level",
    "pdfminer.layout",
    "pypdfium2",
    "lxml.html",
    "charset_normalizer",
    "spacy",
    "unstructured.partition.docx",
    "unstructured.partition.pptx",
    "unstructured.partition.xlsx",
    "unstructured.partition.html",
    "unstructured.partition.md",
    "unstructured.partition.text",
    "unstructured.partition.email",
    "unstructured.partition.msg",
    "olefile",
    "striprtf.striprtf",
    "ingest.parse.odf",
    "ingest.parse.epub",
    "ingest.parse.libreoffice",
]
_context_lock = threading.Lock()
_context: ForkServerContext | None = None
_READY, _OK, _ERROR, _MEMORY, _FAILED = "ready", "ok", "error", "memory", "failed"
_STARTED = "started"  # the child's receipt for a file, before it applies the limits
_TIMED_OUT = object()
_DIED = object()


@dataclass
class _Job:
    path: Path
    filename: str
    limits: ParseLimits
    future: Future[ParsedDocument]


def _crash_reason(exitcode: int | None) -> str:
    how = "it stopped unexpectedly"
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            how = f"it was ended by {signal.Signals(-exitcode).name}"
    return (
        f"The parser crashed on this file ({how}). The file may be damaged or built to "
        "crash the parser, or the server ran out of memory. Open and re-save it, or convert "
        "it to PDF, then upload it again."
    )


class ParserPool:
    """Parses files in `size` child processes, each file under `ParseLimits`."""

    def __init__(self, *, max_bytes: int, ocr: bool, size: int = DEFAULT_PARSERS) -> None:
        if size < 1:
            raise ValueError("a parser pool needs at least one parser")
        self.max_bytes = max_bytes
        self.ocr = ocr
        self.size = size
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self.closed = False

    def submit(self, path: Path, filename: str, limits: ParseLimits) -> Future[ParsedDocument]:
        """Queue a file; the future holds its ParsedDocument or raises IngestError."""
        future: Future[ParsedDocument] = Future()
        if self.closed:
            future.set_exception(_stopped())
            return future
        self._start_slots(eager=False)
        self._jobs.put(_Job(path, filename, limits, future))
        return future

    def start(self) -> None:
        """Start every parser process now and wait until each is ready.

        Without this they start with the first files. Only before the first `submit`.
        """
        self._start_slots(eager=True)
        for slot in self._slots:
            slot.ready.wait(_START_TIMEOUT_S)

    def pids(self) -> list[int]:
        """Process ids of the running parser processes."""
        return [pid for slot in self._slots if (pid := slot.pid()) is not None]

    def close(self) -> None:
        """Stop every parser process now; queued files are cancelled, running ones fail."""
        with self._lock:
            self.closed = True
            slots = list(self._slots)
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._jobs.get_nowait()
                if job is not None:
                    job.future.cancel()
        for _ in slots:
            self._jobs.put(None)
        for slot in slots:
            slot.kill()
        for slot in slots:
            slot.thread.join(timeout=10)

    def _start_slots(self, *, eager: bool) -> None:
        with self._lock:
            if self.closed or self._slots:
                return
            self._slots = [_Slot(self, n, eager=eager) for n in range(self.size)]
            for slot in self._slots:
                slot.thread.start()


def _stopped() -> IngestError:
    return IngestError(
        "The parser was stopped (the service or command was shutting down) before it read "
        "this file. It is read again when ingestion restarts.",
        code="parser_stopped",
    )


class _Slot:
    """One parser: a thread here that owns one child process at a time."""

    def __init__(self, pool: ParserPool, number: int, *, eager: bool) -> None:
        self.pool = pool
        self.eager = eager
        self.ready = threading.Event()  # set once an eager slot's child is up (or failed)
        self.thread = threading.Thread(target=self._serve, name=f"parser-{number}", daemon=True)
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._kill_lock = threading.Lock()

    def pid(self) -> int | None:
        process = self._process  # reset to None as soon as the slot kills or loses it
        return process.pid if process is not None else None

    def _serve(self) -> None:
        try:
            if self.eager:
                with contextlib.suppress(IngestError):
                    self._child()
            self.ready.set()
            while (job := self.pool._jobs.get()) is not None:
                if not job.future.set_running_or_notify_cancel():
                    continue
                try:
                    job.future.set_result(self._parse(job))
                except Exception as exc:  # every outcome reaches the caller's future
                    job.future.set_exception(exc)
                if self._process is None and not self.pool.closed:
                    # Killed or lost with this file: its replacement starts now, not with
                    # the next file.
                    with contextlib.suppress(IngestError):
                        self._child()
        finally:
            self.ready.set()
            self.kill()

    def _parse(self, job: _Job) -> ParsedDocument:
        limits = job.limits
        reply: object = _DIED
        for _ in range(2):  # a child that died while idle (the OOM killer) is replaced once
            conn, process = self._child()
            deadline = time.monotonic() + limits.timeout_seconds  # the file's time only
            with contextlib.suppress(OSError, ValueError):
                conn.send((str(job.path), job.filename, self.pool.max_bytes, self.pool.ocr, limits))
                reply = _receive(conn, process, deadline)
            if reply is not _DIED:
                break
            self.kill()
            if self.pool.closed:
                raise _stopped()
        if reply == _STARTED:  # the child has the file: from here on, what happens is its
            reply = _receive(conn, process, deadline)
        if reply is _TIMED_OUT:
            self.kill()
            raise IngestError(timeout_reason(limits), code="parse_timeout")
        if reply is _DIED or not isinstance(reply, tuple):
            exitcode = process.exitcode
            self.kill()
            if self.pool.closed:
                raise _stopped()
            if exitcode == -signal.SIGXCPU:
                raise IngestError(cpu_reason(limits), code="parse_cpu_limit")
            raise IngestError(_crash_reason(exitcode), code="parser_crashed")
        kind, payload = reply
        if kind == _OK and isinstance(payload, ParsedDocument):
            return payload
        if kind == _ERROR and isinstance(payload, IngestError):
            raise payload
        if kind == _MEMORY:
            self.kill()  # the child exits after a MemoryError; the next file gets a fresh one
            raise IngestError(memory_reason(limits), code="parse_memory_limit")
        raise IngestError(
            f"The file could not be read ({payload}). Check that it opens on your computer; "
            "if it does, send it to your administrator.",
            code="parse_error",
        )

    def _child(self) -> tuple[Connection, BaseProcess]:
        """The running child, or a fresh one once it is ready."""
        process, conn = self._process, self._conn
        if process is not None and conn is not None and process.is_alive():
            return conn, process
        self.kill()
        if self.pool.closed:
            raise _stopped()
        context = _parser_context()
        conn, child_end = context.Pipe()
        process = context.Process(
            target=_child_main, args=(child_end,), name="appliance-parser", daemon=True
        )
        process.start()  # the first start also starts the fork server (seconds)
        child_end.close()
        self._process, self._conn = process, conn
        if self.pool.closed:  # closed meanwhile: close() may have missed this child
            self.kill()
            raise _stopped()
        reply = _receive(conn, process, time.monotonic() + _START_TIMEOUT_S)
        if not (isinstance(reply, tuple) and reply[0] == _READY):
            self.kill()
            raise (
                _stopped()
                if self.pool.closed
                else IngestError(
                    "The document parser could not start on this server. Check the server's "
                    "memory and log, then retry the file.",
                    code="parser_unavailable",
                )
            )
        return conn, process

    def kill(self) -> None:
        """End the child and everything it started (tesseract, LibreOffice), if one runs."""
        with self._kill_lock:
            process, conn = self._process, self._conn
            self._process = self._conn = None
            if process is not None and process.pid is not None:
                if process.exitcode is None:
                    # Its own group (setpgid in the child); not reported dead by the fork
                    # server, which reaps it, so the id is still its own.
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()  # in case it was killed before it made its group
                process.join(timeout=10)
            if conn is not None:
                conn.close()


def _parser_context() -> ForkServerContext:
    """The fork-server context, its preload set before the server first starts."""
    global _context
    with _context_lock:
        if _context is None:
            context = get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            _context = context
        return _context


def _receive(conn: Connection, process: BaseProcess, deadline: float) -> object:
    """The child's next message, _TIMED_OUT at the deadline, or _DIED if it ended first."""
    ready = wait([conn, process.sentinel], timeout=max(deadline - time.monotonic(), 0.0))
    if not ready:
        return _TIMED_OUT
    if conn in ready:
        try:
            return conn.recv()
        except Exception:  # EOF (it died), or a reply that does not unpickle
            process.join(timeout=1)
            return _DIED
    process.join(timeout=10)
    return _DIED


# -- the child process ---------------------------------------------------------------------


def _child_main(conn: Connection) -> None:
    """A parser process: harden, warm up, then parse one file at a time under its limits."""
    _harden()
    with contextlib.suppress(Exception):  # a missing library fails each file with its reason
        warm_up()
    conn.send((_READY, os.getpid()))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        path, filename, max_bytes, ocr, limits = message
        conn.send(_STARTED)
        reply = _parse_limited(Path(path), filename, max_bytes, ocr, limits)
        conn.send(reply)
        if reply is _OUT_OF_MEMORY:
            return  # the heap may be in a poor state: the next file gets a fresh process


_OUT_OF_MEMORY = (_MEMORY, None)  # made in advance: at the limit nothing new can be allocated


def _parse_limited(
    path: Path, filename: str, max_bytes: int, ocr: bool, limits: ParseLimits
) -> tuple[str, object]:
    saved = {kind: resource.getrlimit(kind) for kind in (resource.RLIMIT_CPU, resource.RLIMIT_AS)}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _lower(resource.RLIMIT_CPU, math.ceil(usage.ru_utime + usage.ru_stime) + limits.cpu_seconds)
    mapped = _mapped_bytes()
    if mapped is not None:
        _lower(resource.RLIMIT_AS, mapped + limits.memory_mb * MIB)
    reply: tuple[str, object]
    try:
        parsed = parse_file(path, max_bytes=max_bytes, ocr=ocr, filename=filename, limits=limits)
        reply = (_OK, parsed)
    except MemoryError:
        reply = _OUT_OF_MEMORY
    except IngestError as exc:
        reply = (_ERROR, exc)
    except Exception as exc:  # our bug rather than the file's: the parent says so
        reply = (_FAILED, type(exc).__name__)
    finally:
        for kind, limit in saved.items():
            resource.setrlimit(kind, limit)
    return reply


def _lower(kind: int, soft: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def _mapped_bytes() -> int | None:
    """This process's address space now (what RLIMIT_AS counts)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as stream:
            pages = int(stream.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _harden() -> None:
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    # Its own process group: at a deadline the parent kills it and whatever it started.
    os.setpgid(0, 0)
    # A parser killed at its CPU limit dumps no core: a core file would hold document text.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _prctl_hardening()


def _prctl_hardening() -> None:
    """Die with the parent (even if it is SIGKILLed), and never be dumped or traced.

    The parent is the fork server, which exits when the process that started it does
    (even by SIGKILL: its end of a pipe closes), so the parsers end with the service.
    """
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig, pr_set_dumpable = 1, 4
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        libc.prctl(pr_set_dumpable, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipe's EOF still ends the loop
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
