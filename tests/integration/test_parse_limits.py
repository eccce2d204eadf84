"""Hard limits on reading one file, on real parser processes with hostile files made here.

Each hostile file fails with a reason that names the limit and its setting, the parser
process that held it is killed and replaced, and the files behind it are not held up:
with two parsers the next file is indexed while the bad one still runs; with one, the
bad one is cut at its deadline. Real SQLite, real Qdrant Edge shard, fake embedder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.core.config import IngestSettings
from appliance.core.runtime import Runtime
from appliance.documents.ingestion import IngestionWorker, Parser, parse_limits
from appliance.documents.tables import Document
from ingest.parse import ParseLimits
from tests.fixtures.app import submit
from tests.fixtures.hostile import make_docx_bomb, make_greedy_csv, make_paragraph_flood_docx

Events = dict[tuple[str, str], float]


def _note(doc_id: str, prefix: str = "Leave policy") -> str:
    return f"# {prefix}\n\nStaff take leave after telling their manager ({doc_id}).\n"


def _small_text(tmp_path: Path, name: str = "note.txt") -> Path:
    path = tmp_path / name
    path.write_text(_note(name))
    return path


@contextmanager
def _worker(rt: Runtime, events: Events, **ingest: object) -> Iterator[IngestionWorker]:
    """A worker with the configured parser (as the service builds it), started and warm."""
    for name, value in ingest.items():
        setattr(rt.settings.ingest, name, value)

    def note(doc_id: str, state: str, _done: int, _total: int) -> None:
        events.setdefault((doc_id, state), time.monotonic())

    worker = IngestionWorker(rt, on_progress=note)
    worker.parser.start()
    try:
        yield worker
    finally:
        worker.close()


def _eventually(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _doc(rt: Runtime, doc_id: str) -> Document:
    with rt.sessions() as s:
        return s.get_one(Document, doc_id)


def test_settings_defaults_are_the_parse_limits_defaults() -> None:
    assert parse_limits(IngestSettings()) == ParseLimits()  # type: ignore[call-arg]
    assert IngestSettings().parsers == 2  # type: ignore[call-arg]


@pytest.mark.slow
def test_zip_bomb_fails_fast_with_the_unpack_reason(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    bomb = submit(rt, make_docx_bomb(tmp_path / "bomb.docx", unpacked_mb=30))
    events: Events = {}
    with _worker(rt, events) as worker:
        started = time.monotonic()
        worker.run_until_idle()
        assert events[(bomb, "failed")] - started < 3.0
    doc = _doc(rt, bomb)
    assert (doc.state, doc.error_code) == ("failed", "too_large")
    assert "unpacks to 29 MiB" in (doc.error_reason or "")
    assert "`ingest.max_unpack_ratio`" in (doc.error_reason or "")


@pytest.mark.slow
def test_cpu_limit_stops_a_file_and_the_next_one_does_not_wait(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    # Within the unpack limits (~45 KiB, ~3 MB unpacked), but ~20 s of CPU to read.
    flood = submit(rt, make_paragraph_flood_docx(tmp_path / "flood.docx"))
    note = submit(rt, _small_text(tmp_path))
    events: Events = {}
    with _worker(rt, events, parsers=2, parse_cpu_seconds=2, parse_timeout_seconds=60) as worker:
        pids = set(worker.parser.pids())
        assert len(pids) == 2
        started = time.monotonic()
        assert worker.run_until_idle() == 2
        # The small file was read by the other parser and indexed while the flood ran.
        assert events[(note, "indexed")] < events[(flood, "failed")]
        assert events[(note, "indexed")] - started < 5.0
        assert events[(flood, "failed")] - started < 20.0  # 2 s of CPU on a busy machine
        assert len(set(worker.parser.pids()) & pids) == 1  # the flood's parser was killed...
        assert _eventually(lambda: len(worker.parser.pids()) == 2)  # ...and is replaced
    doc = _doc(rt, flood)
    assert (doc.state, doc.error_code) == ("failed", "parse_cpu_limit")
    assert "more than 2 seconds of processor time" in (doc.error_reason or "")
    assert "`ingest.parse_cpu_seconds`" in (doc.error_reason or "")
    assert _doc(rt, note).state == "indexed"
    assert rt.index().count(flood) == 0


@pytest.mark.slow
def test_wall_deadline_kills_the_parser_and_a_fresh_one_takes_the_next_file(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    flood = submit(rt, make_paragraph_flood_docx(tmp_path / "flood.docx"))
    note = submit(rt, _small_text(tmp_path))
    events: Events = {}
    # One parser: the worker still waits on no file past its deadline.
    with _worker(rt, events, parsers=1, parse_cpu_seconds=600, parse_timeout_seconds=2) as worker:
        (first,) = worker.parser.pids()
        started = time.monotonic()
        assert worker.run_until_idle() == 2
        assert 2.0 <= events[(flood, "failed")] - started < 5.0
        assert events[(note, "indexed")] - events[(flood, "failed")] < 5.0
        assert first not in worker.parser.pids()
    doc = _doc(rt, flood)
    assert (doc.state, doc.error_code) == ("failed", "parse_timeout")
    assert "took longer than 2 seconds" in (doc.error_reason or "")
    assert "`ingest.parse_timeout_seconds`" in (doc.error_reason or "")
    assert _doc(rt, note).state == "indexed"


@pytest.mark.slow
def test_memory_limit_fails_the_file_and_the_worker_carries_on(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    greedy = submit(rt, make_greedy_csv(tmp_path / "greedy.csv"))
    note = submit(rt, _small_text(tmp_path))
    events: Events = {}
    with _worker(rt, events, parsers=1, parse_memory_mb=64) as worker:
        (first,) = worker.parser.pids()
        started = time.monotonic()
        assert worker.run_until_idle() == 2
        assert events[(note, "indexed")] - started < 10.0
        assert first not in worker.parser.pids()  # a parser that hit the limit is replaced
    doc = _doc(rt, greedy)
    assert (doc.state, doc.error_code) == ("failed", "parse_memory_limit")
    assert "more than 64 MiB of memory" in (doc.error_reason or "")
    assert "`ingest.parse_memory_mb`" in (doc.error_reason or "")
    assert _doc(rt, note).state == "indexed"


def test_a_parser_made_by_the_cli_takes_the_configured_limits(runtime: Runtime) -> None:
    rt = runtime
    rt.settings.ingest.parse_cpu_seconds = 7
    rt.settings.ingest.parsers = 3
    parser = Parser(max_bytes=rt.settings.max_upload_bytes, ocr=False, isolated=True)
    worker = IngestionWorker(rt, parser=parser)
    assert parser.limits is not None
    assert parser.limits.cpu_seconds == 7
    assert parser.parallel == 3
    worker.close()
    explicit = ParseLimits(cpu_seconds=1)
    parser = Parser(max_bytes=1, ocr=False, limits=explicit, parsers=1)
    IngestionWorker(rt, parser=parser).close()
    assert (parser.limits, parser.parallel) == (explicit, 1)
