"""Uploads are parsed as a stream: refused as soon as they pass the limit, never spooled to /tmp.

Starlette's form parser would write any file part over 1 MiB, in plaintext, to the system
temp directory, and with chunked transfer (no Content-Length) would read a 2 GB body in
full before the route could refuse it.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from appliance.core.config import Settings
from appliance.core.errors import PayloadTooLarge
from appliance.core.runtime import Runtime
from appliance.documents import upload
from appliance.documents.tables import Document
from tests.fixtures.auth import Account, Browser, signed_in

BOUNDARY = "----appliance-test-boundary"
MIB = 1024 * 1024


def _multipart(file_chunks: Iterator[bytes], sent: list[int]) -> Iterator[bytes]:
    """A multipart body with one grant and one file, yielded piece by piece (chunked)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="grants"\r\n\r\neveryone\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="notes.txt"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    yield head
    for chunk in file_chunks:
        sent[0] += len(chunk)
        yield chunk
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _text(total: int) -> Iterator[bytes]:
    line = b"Quarterly figures are reviewed by the finance team every month.\n"
    block = line * (64 * 1024 // len(line))
    sent = 0
    while sent < total:
        piece = block[: total - sent]
        sent += len(piece)
        yield piece


def _post_chunked(b: Browser, body: Iterator[bytes]) -> Any:
    return b.post(
        "/api/documents",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )


def test_the_parser_stops_reading_soon_after_the_limit(tmp_path: Path) -> None:
    # (TestClient buffers a request body before the app sees it, so this is checked on
    # the parser that the route feeds with request.stream().)
    sent = [0]

    async def body() -> AsyncIterator[bytes]:
        for piece in _multipart(_text(64 * MIB), sent):
            yield piece

    too_large = PayloadTooLarge("too large")

    async def parse() -> None:
        await upload.receive(
            f"multipart/form-data; boundary={BOUNDARY}",
            body(),
            dest=tmp_path,
            limit=MIB,
            max_fields=5,
            too_large=too_large,
        )

    # In a thread of its own: another test's Playwright may own this thread's event loop.
    with ThreadPoolExecutor(1) as pool, pytest.raises(PayloadTooLarge):
        pool.submit(asyncio.run, parse()).result()
    assert MIB < sent[0] < MIB + 128 * 1024


def test_a_chunked_upload_over_the_limit_is_refused_and_stores_nothing(
    settings: Settings, runtime: Runtime, browser_factory: Any, alice: Account
) -> None:
    settings.ingest.max_upload_mb = 1
    as_alice = signed_in(browser_factory, alice)
    sent = [0]
    r = _post_chunked(as_alice, _multipart(_text(8 * MIB), sent))
    assert r.status_code == 413
    assert "ingest.max_upload_mb" in r.json()["message"]
    with runtime.sessions() as s:
        assert s.execute(select(Document)).first() is None
    assert runtime.blobs.ids() == set()


def test_a_large_upload_never_touches_the_temp_directory(
    settings: Settings,
    runtime: Runtime,
    browser_factory: Any,
    alice: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.ingest.max_upload_mb = 16

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("plaintext upload spooled to the temp directory")

    # Where a spooled upload would roll over to disk.
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    as_alice = signed_in(browser_factory, alice)
    sent = [0]
    r = _post_chunked(as_alice, _multipart(_text(3 * MIB), sent))
    assert r.status_code == 202, r.text
    assert r.json()["filename"] == "notes.txt"
    assert sent[0] == 3 * MIB
    # And the same through an ordinary client-built multipart request with Content-Length.
    r = as_alice.post(
        "/api/documents",
        files={"file": ("other.txt", b"Budget review. " * (200 * 1024), "text/plain")},
        data={"grants": ["everyone"], "classification": "internal"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["classification"] == "internal"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"file": "x"}', "multipart/form-data"),
        (f"multipart/form-data; boundary={BOUNDARY}", b"no parts here at all", "multipart"),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="grants"\r\n\r\n'
            f"everyone\r\n--{BOUNDARY}--\r\n".encode(),
            "field 'file'",
        ),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"'
            "\r\n\r\nThe body stops in the middle of the fi".encode(),
            "cut off",
        ),
    ],
)
def test_a_malformed_upload_gets_a_clear_error(
    browser_factory: Any, alice: Account, content_type: str, body: bytes, expected: str
) -> None:
    as_alice = signed_in(browser_factory, alice)
    r = as_alice.post("/api/documents", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 422
    assert expected in r.json()["message"]
