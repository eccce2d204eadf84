"""Canary: a unique marker ingested and chatted about never lands on disk in a readable form.

The marker goes into document text, headings, titles and filenames, through real parsing,
chunking, encryption, the Qdrant Edge shard and the question path; then every byte under
the data dir and the key store (database with -wal/-shm, blobs, index, anything else), and
the ingestion temp dirs, is scanned for it in UTF-8, UTF-16 (LE/BE) and base64 at every
alignment. DESIGN invariant 5.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.auth import service as users
from appliance.chat import conversations, pipeline
from appliance.chat.tables import Conversation, Message
from appliance.core.places import CHAT_KEY
from appliance.core.runtime import Runtime
from appliance.documents import service as docs
from appliance.documents.tables import Chunk, Document
from models.fakes import FakeGenerator
from tests.fixtures.app import inline_worker, submit
from tests.fixtures.documents import make_docx, make_pdf


def _b64_middles(data: bytes) -> set[bytes]:
    """Base64 text that any encoding of `data` contains, whatever bytes precede it.

    A 3-byte group maps to 4 characters, so inside "x"*i + data only the groups made of
    data's bytes alone are stable; i = 0, 1, 2 covers every alignment.
    """
    out = set()
    for i in range(3):
        start, end = -(-i // 3) * 4, (i + len(data)) // 3 * 4
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            out.add(encode(b"x" * i + data)[start:end])
    return out


def needles(marker: str) -> dict[str, bytes]:
    """Every form of the marker to look for, named."""
    forms: dict[str, bytes] = {}
    for case, text in (("", marker), ("lower ", marker.lower()), ("upper ", marker.upper())):
        forms[case + "utf-8"] = text.encode("utf-8")
        forms[case + "utf-16-le"] = text.encode("utf-16-le")
        forms[case + "utf-16-be"] = text.encode("utf-16-be")
        for n, middle in enumerate(sorted(_b64_middles(text.encode("utf-8")))):
            forms[f"{case}base64 #{n}"] = middle
    forms["hex"] = marker.encode().hex().encode()
    return forms


def _files(roots: list[Path]) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in root.rglob("*") if p.is_file())


def scan(roots: list[Path], marker: str) -> list[str]:
    """Every (file, form) where the marker shows up."""
    forms = needles(marker)
    hits: list[str] = []
    count = 0
    for path in _files(roots):
        count += 1
        data = path.read_bytes()
        hits.extend(f"{path} ({name})" for name, needle in forms.items() if needle in data)
    assert count > 0, roots
    return hits


def test_scan_finds_every_form_it_claims_to(tmp_path: Path) -> None:
    marker = "Canary" + secrets.token_hex(4)
    for i, (name, data) in enumerate(
        [
            ("utf8", f"pre {marker} post".encode()),
            ("utf16", f"pre {marker} post".encode("utf-16")),
            ("utf16be", f"ab{marker}".encode("utf-16-be")),
            ("b64-0", base64.b64encode(marker.encode())),
            ("b64-1", base64.b64encode(b"a" + marker.encode() + b"z")),
            ("b64-2", b"{" + base64.b64encode(b"ab" + marker.encode()) + b"}"),
            ("lower", marker.lower().encode()),
        ]
    ):
        (tmp_path / f"{i}-{name}").write_bytes(data)
        assert scan([tmp_path / f"{i}-{name}"], marker), name


def _ingest_and_chat(rt: Runtime, tmp_path: Path, marker: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / f"memo-{marker}.md").write_text(
        f"# Project {marker}\n\nThe {marker} budget is approved for the travel portal. "
        "Employees book flights through the portal.\n\n"
        f"# Risks\n\nNobody outside the board may learn about {marker} before March.\n"
    )
    make_pdf(
        src / f"plan-{marker}.pdf",
        [
            (f"Plan {marker}", [f"The {marker} plan moves the travel portal to a new vendor."]),
            ("Budget", ["Forty euros per day for meals, as before."]),
        ],
        title=f"Plan {marker}",
    )
    make_docx(
        src / "handbook.docx",
        [("Handbook", [f"Ask the office about {marker} and the travel portal."])],
        title=f"Handbook {marker}",
    )
    ids = [submit(rt, p, grants=("everyone",)) for p in sorted(src.iterdir())]
    assert inline_worker(rt).run_until_idle() == len(ids)

    # The marker really went everywhere: text, headings, titles, filenames (decrypted).
    with rt.sessions() as s:
        found: set[str] = set()
        for doc in s.execute(select(Document)).scalars():
            assert doc.state == "indexed", doc.error_reason
            if marker in docs.filename_of(rt.crypto, doc):
                found.add("filename")
            if marker in (docs.title_of(rt.crypto, doc) or ""):
                found.add("title")
        for c in s.execute(select(Chunk)).scalars():
            place = f"chunk:{c.chunk_no}"
            if marker in rt.crypto.decrypt_text("doc", c.doc_id, place + ":text", c.text_ct):
                found.add("text")
            if c.heading_ct and marker in rt.crypto.decrypt_text(
                "doc", c.doc_id, place + ":heading", c.heading_ct
            ):
                found.add("heading")
        assert found == {"filename", "title", "text", "heading"}

    rt.settings.chat.min_score = 0.0
    rt._generator = FakeGenerator(f"The {marker} budget is approved [1].")
    with rt.sessions() as s:
        uid = users.get_user_by_name(s, "admin").id
    question = f"What is the status of the {marker} budget for the travel portal?"
    events = list(pipeline.answer(rt=rt, scheduler=rt.scheduler, user_id=uid, question=question))
    answer = "".join(e.data["text"] for e in events if e.kind == "token")
    sources = next(e.data["sources"] for e in events if e.kind == "sources")
    assert marker in answer
    assert sources
    assert marker in str(sources)  # filename, title or snippet: stored with the answer
    conv_id = next(e.data["id"] for e in events if e.kind == "conversation")
    with rt.sessions() as s:
        conv = s.get_one(Conversation, conv_id)
        title = conversations.decrypt_for(rt, uid, f"conversation:{conv_id}:title", conv.title_ct)
        assert marker in title
        assert len(s.execute(select(Message)).scalars().all()) == 2
    assert rt.crypto.has_data_key(CHAT_KEY, uid)
    rt.index().flush()


def _temp_dirs() -> list[Path]:
    roots = [Path(tempfile.gettempdir()), Path("/dev/shm")]  # noqa: S108 - scanned, not used
    return [p for r in roots if r.is_dir() for p in r.glob("appliance-ingest-*")]


@pytest.mark.parametrize(
    "embedder", ["fake", pytest.param("real", marks=pytest.mark.slow)], ids=str
)
def test_no_byte_on_disk_carries_the_marker(
    runtime: Runtime,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    embedder: str,
) -> None:
    rt = runtime
    if embedder == "real":
        rt._embedder = request.getfixturevalue("real_embedder")
    marker = "Canary" + secrets.token_hex(6) + "Zq"
    caplog.set_level(logging.INFO)  # what `appliance serve` logs
    _ingest_and_chat(rt, tmp_path, marker)

    roots = [rt.settings.data_dir, rt.settings.keystore_path, *_temp_dirs()]
    db = Path(str(rt.settings.database_url).removeprefix("sqlite:///"))
    assert db.is_file()
    assert db.parent == rt.settings.data_dir
    on_disk = {p.name for p in _files(roots)}
    assert db.name + "-wal" in on_disk  # the live WAL is part of the scan
    assert scan(roots, marker) == []
    assert marker not in caplog.text

    rt.close()  # checkpoints the WAL into the database file: scan again
    assert scan(roots, marker) == []
    assert not any(marker in p.name for p in _files(roots))
    assert os.listdir(rt.settings.blob_dir)
