"""The formats offices use: OpenDocument, RTF, Outlook .msg, EPUB and Office 97-2003.

Each real file (tests/fixtures/formats, made by LibreOffice; the .msg by Outlook) is read
by the real ``parse_file`` and by a real sandboxed parser process, with its text on the
right pages; a damaged file of each kind fails with a reason a person can act on; a server
without LibreOffice says what to install; LibreOffice runs under the file's limits and dies
with a parser that is killed; and an uploaded .odt becomes searchable on its page.
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.chat.operator import search_as
from appliance.core.runtime import Runtime
from appliance.documents.tables import Document
from ingest.errors import CorruptDocument, EmptyDocument, IngestError, PasswordProtected, TooLarge
from ingest.parse import ParsedDocument, ParseLimits, parse_file
from ingest.parse.sandbox import ParserPool
from tests.fixtures.app import inline_worker
from tests.fixtures.auth import Account, signed_in
from tests.fixtures.formats import (
    FORMAT_SAMPLES,
    HARBOUR_HEADINGS,
    HARBOUR_PAGES,
    SLIDE_HEADINGS,
    fixture,
    make_ppt,
)
from tests.fixtures.hostile import make_zip_with_parts

LIMIT = 50 * 1024 * 1024


def _file(name: str, tmp_path: Path) -> Path:
    """A fresh copy of the fixture `name` (the .ppt is made from review.odp)."""
    path = tmp_path / name
    if name == "review.ppt":
        return make_ppt(path)
    shutil.copyfile(fixture(name), path)
    return path


def _page_of(doc: ParsedDocument, phrase: str) -> int | None:
    (element,) = [e for e in doc.elements if phrase in e.text]
    return element.page


def _element(doc: ParsedDocument, phrase: str) -> Any:
    return next(e for e in doc.elements if phrase in e.text)


# ------------------------------------------------------------------------------------------
# What each format yields
# ------------------------------------------------------------------------------------------


def _check_harbour(doc: ParsedDocument, *, pages: tuple[int, ...]) -> None:
    assert doc.title == "Harbour Office Procedures"
    assert [_page_of(doc, phrase) for phrase, _ in HARBOUR_PAGES] == list(pages)
    assert doc.pages == pages[-1]
    titles = [e.text for e in doc.elements if e.category == "Title"]
    assert titles == list(HARBOUR_HEADINGS)
    assert _element(doc, "Pelican Quay are settled").heading == "Mooring Fees"
    assert _element(doc, "Storm warnings").heading == "Tide Log"
    table = _element(doc, "Berth")
    assert table.category == "Table"
    assert table.text == "Berth | Fee\nPelican Quay | 38 euros"
    assert sum("Log entry" in e.text for e in doc.elements) == 40


def _check_slides(doc: ParsedDocument) -> None:
    assert doc.title == "Ferry Service Review"
    assert doc.pages == 2
    assert [e.text for e in doc.elements if e.category == "Title"] == list(SLIDE_HEADINGS)
    passengers = _element(doc, "Ferry passengers to the outer islands rose by twelve percent")
    assert (passengers.page, passengers.heading) == (1, "Quarterly Review")
    cormorant = _element(doc, "cormorant survey on the breakwater starts in April")
    assert (cormorant.page, cormorant.heading) == (2, "Next Steps")
    # Speaker notes stay with their slide, after its text.
    texts = [e.text for e in doc.elements]
    notes = texts.index("Mention the new timetable when presenting.")
    assert texts.index(passengers.text) < notes < texts.index(cormorant.text)
    assert doc.elements[notes].page == 1
    assert not any("<number>" in text for text in texts)


def _check_ledger(doc: ParsedDocument) -> None:
    assert doc.title == "Lighthouse Ledger"
    assert doc.pages == 2
    budget, staff = doc.elements
    assert (budget.page, budget.heading, budget.category) == (1, "Budget", "Table")
    assert budget.text == "Department | Amount | Owner\nLighthouse | 4200 | Ingrid"
    assert (staff.page, staff.heading) == (2, "Staff")
    assert "Ingrid Halvorsen | Keeper of the north light" in staff.text


def _check_rtf(doc: ParsedDocument) -> None:
    # RTF keeps no layout: its pages are the hard page breaks, so the log that runs over
    # to a fourth page in Word or LibreOffice is all on page 3 here.
    _check_harbour(doc, pages=(1, 2, 3, 3))


def _check_epub(doc: ParsedDocument) -> None:
    assert doc.title == "Harbour Office Procedures"
    texts = [e.text for e in doc.elements]
    order = [next(i for i, t in enumerate(texts) if p in t) for p, _ in HARBOUR_PAGES]
    assert order == sorted(order)  # the chapters in spine order
    assert {e.page for e in doc.elements} == {None}  # an e-book has no pages
    assert _element(doc, "Berth").text == "Berth | Fee\nPelican Quay | 38 euros"


def _check_msg(doc: ParsedDocument) -> None:
    assert doc.title == "outer subject"
    assert [e.text for e in doc.elements] == ["Outer body"]  # the attachment is not read


CASES = {
    "harbour.odt": lambda doc: _check_harbour(doc, pages=(1, 2, 3, 4)),
    "harbour.doc": lambda doc: _check_harbour(doc, pages=(1, 2, 3, 4)),
    "harbour.rtf": _check_rtf,
    "harbour.epub": _check_epub,
    "review.odp": _check_slides,
    "review.ppt": _check_slides,
    "ledger.ods": _check_ledger,
    "ledger.xls": _check_ledger,
    "outer.msg": _check_msg,
}


def test_every_new_format_has_a_case() -> None:
    assert {sample.filename for sample in FORMAT_SAMPLES.values()} == set(CASES)


# LibreOffice is a test dependency like tesseract (.ci/run installs it): no case is skipped.
@pytest.mark.parametrize("name", list(CASES))
def test_format_parses_with_its_text_and_pages(name: str, tmp_path: Path) -> None:
    path = _file(name, tmp_path)
    doc = parse_file(path, max_bytes=LIMIT)
    sample = next(s for s in FORMAT_SAMPLES.values() if s.filename == name)
    assert doc.mime_type == sample.mime_type
    CASES[name](doc)


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    """One real parser process, with the fork server's preloads, for the whole module."""
    parsers = ParserPool(max_bytes=LIMIT, ocr=False, size=1)
    parsers.start()
    yield parsers
    parsers.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_format_parses_in_the_sandboxed_parser(name: str, tmp_path: Path, pool: ParserPool) -> None:
    path = _file(name, tmp_path)
    upload = path.rename(tmp_path / "upload-7c1e")  # as the service stores it: no extension
    doc = pool.submit(upload, name, ParseLimits()).result(timeout=300)
    CASES[name](doc)
    assert doc == parse_file(upload, max_bytes=LIMIT, filename=name)


# ------------------------------------------------------------------------------------------
# Damaged, protected and hostile files
# ------------------------------------------------------------------------------------------


def _truncated(name: str, tmp_path: Path, keep: float = 0.5) -> Path:
    data = _file(name, tmp_path).read_bytes()
    path = tmp_path / f"cut-{name}"
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("harbour.odt", "OpenDocument text"),
        ("ledger.ods", "OpenDocument spreadsheet"),
        ("review.odp", "OpenDocument presentation"),
        ("harbour.epub", "EPUB e-book"),
    ],
)
def test_a_cut_off_zip_based_file_is_corrupt(name: str, label: str, tmp_path: Path) -> None:
    with pytest.raises(CorruptDocument) as caught:
        parse_file(_truncated(name, tmp_path), max_bytes=LIMIT, filename=name)
    assert f"its content is not a {label}" in caught.value.reason
    assert "save it again" in caught.value.reason


@pytest.mark.parametrize(
    ("name", "label"),
    [("harbour.odt", "OpenDocument text"), ("harbour.epub", "EPUB e-book")],
)
def test_an_archive_with_a_broken_part_is_corrupt(name: str, label: str, tmp_path: Path) -> None:
    source = _file(name, tmp_path)
    broken = tmp_path / f"broken-{name}"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(broken, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename.endswith((".xml", ".opf", ".xhtml")):
                data = data[: len(data) // 2]  # XML that stops in the middle
            out.writestr(info, data)
    with pytest.raises(CorruptDocument) as caught:
        parse_file(broken, max_bytes=LIMIT)
    assert f"could not be read as a {label}" in caught.value.reason


@pytest.mark.parametrize("name", ["outer.msg", "harbour.doc", "ledger.xls", "review.ppt"])
def test_a_cut_off_ole_file_fails_clearly(name: str, tmp_path: Path) -> None:
    path = _truncated(name, tmp_path, keep=0.3)
    with pytest.raises(IngestError) as caught:
        parse_file(path, max_bytes=LIMIT, filename=name)
    assert "damaged" in caught.value.reason
    assert "save it again" in caught.value.reason or "saved copy" in caught.value.reason


def test_a_cut_off_rtf_file_has_no_text(tmp_path: Path) -> None:
    path = tmp_path / "cut.rtf"
    path.write_bytes(fixture("harbour.rtf").read_bytes()[:700])  # the font and colour tables
    with pytest.raises(EmptyDocument, match="No text was found in this RTF document"):
        parse_file(path, max_bytes=LIMIT)


def test_text_with_an_odf_name_is_not_taken_for_one(tmp_path: Path) -> None:
    path = tmp_path / "minutes.odt"
    path.write_text("Minutes of the harbour board.\n")
    with pytest.raises(CorruptDocument, match="named .odt but its content is not"):
        parse_file(path, max_bytes=LIMIT)


def test_an_odf_zip_bomb_fails_on_its_unpacked_size(tmp_path: Path) -> None:
    bomb = make_zip_with_parts(
        tmp_path / "bomb.odt",
        {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": 40 << 20},
    )
    started = time.monotonic()
    with pytest.raises(TooLarge, match="unpacks to 40 MiB"):
        parse_file(bomb, max_bytes=LIMIT)
    assert time.monotonic() - started < 2.0


def test_repeated_cells_do_not_expand_without_end(tmp_path: Path) -> None:
    """ODF writes a repeated cell once with a count: 2,000 rows of 1,000,000 x 1,024 cells."""
    row = (
        b'<table:table-row table:number-rows-repeated="1000000"><table:table-cell '
        b'table:number-columns-repeated="1024" office:value-type="string"><text:p>x</text:p>'
        b"</table:table-cell></table:table-row>"
    )
    content = (
        b'<?xml version="1.0" encoding="UTF-8"?><office:document-content '
        b'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        b'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        b'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body>'
        b'<office:spreadsheet><table:table table:name="Flood">'
        + row * 2000
        + b"</table:table></office:spreadsheet></office:body></office:document-content>"
    )
    path = make_zip_with_parts(
        tmp_path / "flood.ods",
        {"mimetype": b"application/vnd.oasis.opendocument.spreadsheet", "content.xml": content},
    )
    started = time.monotonic()
    doc = parse_file(path, max_bytes=LIMIT)
    assert time.monotonic() - started < 20.0
    (sheet,) = doc.elements
    assert sheet.heading == "Flood"
    assert sheet.text.count("x") <= 1_000_000 + 2000 * 1024  # not 2,000,000,000


def test_a_password_protected_odt_is_refused_as_such(tmp_path: Path) -> None:
    source = _file("harbour.odt", tmp_path)
    locked = tmp_path / "locked.odt"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(locked, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == "META-INF/manifest.xml":
                data = data.replace(
                    b'manifest:full-path="content.xml"',
                    b'manifest:full-path="content.xml"><manifest:encryption-data '
                    b'manifest:checksum="x"/></manifest:file-entry><manifest:file-entry '
                    b'manifest:media-type="" manifest:full-path="x"',
                    1,
                )
            out.writestr(info, data)
    with pytest.raises(PasswordProtected, match="protected with a password"):
        parse_file(locked, max_bytes=LIMIT)


def _rename_root_streams(path: Path, names: dict[str, str]) -> None:
    """Rename streams at the root of an OLE file in place, in its directory (MS-CFB 2.6)."""
    import olefile

    with olefile.OleFileIO(str(path)) as ole:
        size = ole.sectorsize
        chain, sector = [], ole.first_dir_sector
        while sector >= 0 and sector < len(ole.fat) and len(chain) < 10_000:
            chain.append(sector)
            sector = ole.fat[sector]
        sids = {kid.name: kid.sid for kid in ole.root.kids if kid.name in names}
    data = bytearray(path.read_bytes())
    for old, sid in sids.items():
        at = (chain[sid * 128 // size] + 1) * size + sid * 128 % size
        encoded = names[old].encode("utf-16-le") + b"\x00\x00"
        data[at : at + 64] = encoded.ljust(64, b"\x00")
        data[at + 64 : at + 66] = len(encoded).to_bytes(2, "little")
    assert len(sids) == len(names)
    path.write_bytes(bytes(data))


def test_an_encrypted_office_file_is_refused_as_such(tmp_path: Path) -> None:
    """A password-protected .docx is an OLE file holding EncryptionInfo and the package."""
    path = _file("outer.msg", tmp_path).rename(tmp_path / "locked.docx")
    _rename_root_streams(
        path,
        {
            "__substg1.0_1000001F": "EncryptionInfo",
            "__substg1.0_0037001F": "EncryptedPackage",
            "__properties_version1.0": "__properties_renamed10",
        },
    )
    with pytest.raises(PasswordProtected, match="protected with a password"):
        parse_file(path, max_bytes=LIMIT)


# ------------------------------------------------------------------------------------------
# LibreOffice: missing, limited, killed with its parser
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "save_as"),
    [("harbour.doc", ".docx"), ("ledger.xls", ".xlsx")],
)
def test_without_libreoffice_the_reason_says_what_to_install(
    name: str, save_as: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    with pytest.raises(IngestError) as caught:
        parse_file(_file(name, tmp_path), max_bytes=LIMIT)
    assert caught.value.code == "converter_unavailable"
    assert "LibreOffice, which is not installed on this server" in caught.value.reason
    assert "apt-get install --no-install-recommends libreoffice-writer-nogui" in (
        caught.value.reason
    )
    assert f"Save the file as {save_as}" in caught.value.reason


def _soffice_processes() -> dict[int, str]:
    """LibreOffice processes started by our converter (its temporary profile in the command)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode()
        except OSError:
            continue
        if "appliance-soffice-" in command and "soffice" in command:
            found[int(entry.name)] = command
    return found


def _wait_for_soffice(seconds: float = 20.0) -> dict[int, str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if running := _soffice_processes():
            return running
        time.sleep(0.02)
    return {}


def _gone(pids: set[int] | None = None, seconds: float = 10.0) -> bool:
    """True once none of `pids` (or no LibreOffice of ours at all) runs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        running = set(_soffice_processes())
        if not (running if pids is None else pids & running):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_libreoffice_runs_under_the_limits_and_dies_with_a_killed_parser(
    tmp_path: Path,
) -> None:
    assert not _soffice_processes()
    # LibreOffice needs over a second to start with a fresh profile: it is still converting.
    limits = ParseLimits(timeout_seconds=0.8, cpu_seconds=30, memory_mb=512)
    pool = ParserPool(max_bytes=LIMIT, ocr=False, size=1)
    pool.start()
    try:
        (parser,) = pool.pids()
        future = pool.submit(_file("harbour.doc", tmp_path), "harbour.doc", limits)
        running = _wait_for_soffice()
        assert running, "LibreOffice did not start"
        for pid in running:
            text = Path(f"/proc/{pid}/limits").read_text()
            cpu = next(line for line in text.splitlines() if line.startswith("Max cpu time"))
            memory = next(line for line in text.splitlines() if "address space" in line)
            assert int(cpu.split()[3]) <= 30
            assert int(memory.split()[3]) <= (1024 + 512) * 1024 * 1024
            assert os.getpgid(pid) == parser  # in the parser's group: killed with it
        with pytest.raises(IngestError) as caught:
            future.result(timeout=60)
        assert caught.value.code == "parse_timeout"
        assert _gone(set(running)), "LibreOffice outlived its parser"
    finally:
        pool.close()


@pytest.mark.slow
def test_libreoffice_past_the_deadline_is_killed_outside_the_sandbox_too(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with pytest.raises(IngestError) as caught:
        parse_file(
            _file("harbour.doc", tmp_path),
            max_bytes=LIMIT,
            limits=ParseLimits(timeout_seconds=0.3),
        )
    assert caught.value.code == "parse_timeout"
    assert "`ingest.parse_timeout_seconds`" in caught.value.reason
    assert time.monotonic() - started < 5.0
    assert _gone(seconds=5.0), "LibreOffice outlived its deadline"


_LINKED_FODT = """<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
 xmlns:xlink="http://www.w3.org/1999/xlink"
 xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"
 office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.text">
 <office:body><office:text>
  <text:p>The lantern room key hangs behind the logbook.</text:p>
  <text:p><draw:frame svg:width="2cm" svg:height="2cm"><draw:image xlink:href="{url}"
   xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/></draw:frame></text:p>
 </office:text></office:body>
</office:document>
"""


@pytest.mark.slow
def test_libreoffice_fetches_nothing_a_document_links_to(tmp_path: Path) -> None:
    """A .doc's linked picture (INCLUDEPICTURE) is a URL LibreOffice would otherwise fetch."""
    import socket

    from tests.fixtures.formats import convert

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    source = tmp_path / "linked.fodt"
    source.write_text(_LINKED_FODT.format(url=f"http://127.0.0.1:{port}/pixel.png"))
    linked = convert(source, "doc", tmp_path / "linked.doc")  # nothing listens yet
    assert f"127.0.0.1:{port}/pixel.png".encode() in linked.read_bytes()
    listener.listen(4)
    listener.settimeout(0.5)
    doc = parse_file(linked, max_bytes=LIMIT)
    assert "lantern room key hangs behind the logbook" in doc.elements[0].text
    try:
        connection, _ = listener.accept()
        fetched = connection.recv(200)
        connection.close()
    except TimeoutError:
        fetched = b""
    finally:
        listener.close()
    assert fetched == b"", f"LibreOffice fetched a linked URL: {fetched!r}"


# ------------------------------------------------------------------------------------------
# End to end: an uploaded .odt becomes searchable, on its page
# ------------------------------------------------------------------------------------------


def test_an_uploaded_odt_is_searchable_on_its_page(
    runtime: Runtime, browser_factory: Any, alice: Account, bob: Account
) -> None:
    as_alice = signed_in(browser_factory, alice)
    r = as_alice.post(
        "/api/documents",
        files={
            "file": (
                "harbour.odt",
                fixture("harbour.odt").read_bytes(),
                "application/vnd.oasis.opendocument.text",
            )
        },
        data={"grants": ["user:bob"]},
    )
    assert r.status_code == 202, r.text
    doc_id = r.json()["id"]
    assert inline_worker(runtime).run_until_idle() == 1
    with runtime.sessions() as s:
        doc = s.get_one(Document, doc_id)
        assert doc.state == "indexed", doc.error_reason

    sources = search_as(
        rt=runtime,
        as_user="bob",
        question="Where are mooring fees for the Pelican Quay settled?",
        k=3,
        operator="operator:test",
    )
    assert sources, "nothing found"
    best = sources[0]
    assert best.doc_id == doc_id
    assert "Mooring fees for the Pelican Quay are settled every Friday" in best.text
    assert (best.page, best.heading) == (2, "Mooring Fees")
    assert best.title == "Harbour Office Procedures"
