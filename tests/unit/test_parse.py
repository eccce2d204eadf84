"""Parsing real files of every supported type into elements, and every way that can fail."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest import errors, parse
from ingest.errors import (
    CorruptDocument,
    EmptyDocument,
    IngestError,
    NeedsOCR,
    PasswordProtected,
    TooLarge,
    UnsupportedType,
)
from ingest.parse import (
    SUPPORTED_EXTENSIONS,
    Element,
    ParsedDocument,
    ParseLimits,
    detect_type,
    parse_file,
)
from ingest.parse.limits import check_unpacked_size
from tests.fixtures.documents import (
    SUPPORTED_SAMPLES,
    filler_pages,
    make_blank_pdf,
    make_docx,
    make_encrypted_pdf,
    make_mixed_pdf,
    make_pdf,
    make_scanned_pdf,
    make_stamped_scan_pdf,
    make_text,
    make_zip,
)
from tests.fixtures.formats import FORMAT_SAMPLES, fixture
from tests.fixtures.hostile import make_docx_bomb, make_zip_with_parts

MB = 1024 * 1024
LIMIT = 50 * MB
# The formats offices use (OpenDocument, RTF, Outlook, 97-2003 Office, EPUB) are real files
# in tests/fixtures/formats; more on them in tests/integration/test_formats.py.
ALL_SAMPLES = {**SUPPORTED_SAMPLES, **FORMAT_SAMPLES}
HAVE_TESSERACT = shutil.which("tesseract") is not None
INVISIBLE = (
    [chr(c) for c in range(0x200B, 0x2010)]
    + [chr(c) for c in range(0x2060, 0x2065)]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\ufeff", "\u00ad", "\x07", "\x1b"]
)


def all_text(doc: ParsedDocument) -> str:
    return "\n".join(element.text for element in doc.elements)


def pages_of(doc: ParsedDocument, phrase: str) -> set[int | None]:
    return {element.page for element in doc.elements if phrase in element.text}


# ------------------------------------------------------------------------------------------
# No network, ever
# ------------------------------------------------------------------------------------------


def test_network_guard_catches_a_real_attempt(network_attempts: list[str]) -> None:
    import urllib.request

    with pytest.raises(OSError, match="blocked"):
        urllib.request.urlopen("http://example.com/", timeout=1)  # noqa: S310
    assert network_attempts


NETWORK_CASES = sorted(ALL_SAMPLES) + (["scanned-pdf-ocr"] if HAVE_TESSERACT else [])


@pytest.mark.parametrize("case", NETWORK_CASES)
def test_parsing_never_touches_the_network(
    case: str, documents_dir: Path, network_attempts: list[str]
) -> None:
    if case == "scanned-pdf-ocr":
        path = make_scanned_pdf(documents_dir / "scan.pdf")
    else:
        sample = ALL_SAMPLES[case]
        path = sample.make(documents_dir / sample.filename)
    doc = parse_file(path, max_bytes=LIMIT)
    assert doc.elements
    assert network_attempts == []


_FRESH_PROCESS_SCRIPT = """
import ipaddress, json, socket, sys
attempts = []
def local(host):
    try:
        return host in (None, "", "localhost") or ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False
real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
def connect(self, address):
    if self.family == socket.AF_UNIX or local(address[0]):
        return real_connect(self, address)
    attempts.append(repr(address)); raise OSError("blocked")
def getaddrinfo(host, *args, **kwargs):
    if local(host):
        return real_getaddrinfo(host, *args, **kwargs)
    attempts.append(repr(host)); raise socket.gaierror("blocked")
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
from pathlib import Path
from ingest.parse import parse_file
counts = {p: len(parse_file(Path(p), max_bytes=1 << 30).elements) for p in sys.argv[1:]}
print(json.dumps({"attempts": attempts, "counts": counts}))
"""


@pytest.mark.slow
def test_a_fresh_process_without_do_not_track_stays_offline(documents_dir: Path) -> None:
    """Telemetry on import and the first spaCy load happen once per process: check one."""
    paths = [str(s.make(documents_dir / s.filename)) for s in SUPPORTED_SAMPLES.values()]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS", "UNSTRUCTURED_DISABLE_NOTICE")
    }
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_SCRIPT, *paths],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert all(count > 0 for count in report["counts"].values()), report


def test_missing_language_model_fails_clearly_without_downloading(
    documents_dir: Path, network_attempts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from unstructured.nlp import tokenize

    monkeypatch.setattr(tokenize, "_SPACY_MODEL_NAME", "en_core_web_absent_for_test")
    monkeypatch.setattr("ingest.parse.office._nlp_checked", False)
    path = make_docx(documents_dir / "policy.docx")
    with pytest.raises(IngestError) as caught:
        parse_file(path, max_bytes=LIMIT)
    assert caught.value.code == "parser_unavailable"
    assert "en_core_web_absent_for_test" in caught.value.reason
    # unstructured's own loader would download the model; ours has disabled that path.
    with pytest.raises(RuntimeError, match="offline"):
        tokenize._load_spacy_model()
    assert network_attempts == []


# ------------------------------------------------------------------------------------------
# Every supported format
# ------------------------------------------------------------------------------------------


def test_every_supported_extension_has_a_sample() -> None:
    assert set(ALL_SAMPLES) == set(SUPPORTED_EXTENSIONS)


@pytest.mark.parametrize("extension", sorted(ALL_SAMPLES))
def test_supported_format_parses(extension: str, documents_dir: Path) -> None:
    sample = ALL_SAMPLES[extension]
    path = sample.make(documents_dir / sample.filename)

    assert detect_type(path) == sample.mime_type
    doc = parse_file(path, max_bytes=LIMIT)

    assert doc.mime_type == sample.mime_type
    assert sample.phrase in all_text(doc)
    assert all(element.text.strip() for element in doc.elements)
    assert doc.pages >= 1
    titles = [e.text for e in doc.elements if e.category == "Title"]
    for heading in sample.headings:
        assert heading in titles
        under = [e for e in doc.elements if e.heading == heading and e.category != "Title"]
        assert under, f"no element filed under {heading!r}"


@pytest.mark.parametrize("extension", sorted(ALL_SAMPLES))
def test_temp_file_without_extension_uses_the_upload_name(
    extension: str, documents_dir: Path
) -> None:
    sample = ALL_SAMPLES[extension]
    made = sample.make(documents_dir / sample.filename)
    upload = made.rename(documents_dir / "upload-3f9a")

    doc = parse_file(upload, max_bytes=LIMIT, filename=sample.filename)

    assert doc.mime_type == sample.mime_type
    assert sample.phrase in all_text(doc)


# ------------------------------------------------------------------------------------------
# PDFs
# ------------------------------------------------------------------------------------------


def test_text_pdf_yields_its_words_on_the_right_pages(text_pdf: Path) -> None:
    doc = parse_file(text_pdf, max_bytes=LIMIT)

    assert doc.pages == 3
    assert doc.title == "Company Handbook"
    assert pages_of(doc, "approved travel portal") == {1}
    assert pages_of(doc, "phishing awareness course") == {2}
    assert pages_of(doc, "forty euros per day") == {3}
    headings = [(e.text, e.page) for e in doc.elements if e.category == "Title"]
    assert headings == [("Travel Policy", 1), ("Security Training", 2), ("Expense Limits", 3)]
    laptops = next(e for e in doc.elements if "Laptops are encrypted" in e.text)
    assert laptops.heading == "Security Training"
    assert laptops.category == "NarrativeText"


def test_long_text_pdf_keeps_every_page(documents_dir: Path) -> None:
    path = make_pdf(documents_dir / "long.pdf", filler_pages(30))

    doc = parse_file(path, max_bytes=LIMIT)

    assert doc.pages == 30
    for number in range(1, 31):
        heading = f"Section {number} Overview"
        on_page = [e for e in doc.elements if e.page == number]
        assert [e.text for e in on_page if e.category == "Title"] == [heading]
        assert sum(len(e.text.split()) for e in on_page if e.heading == heading) > 300


def test_text_pdf_parses_fast_enough(documents_dir: Path) -> None:
    """The target is 7 text-PDF pages per second on the 2-core appliance."""
    path = make_pdf(documents_dir / "long.pdf", filler_pages(30))
    best = min(_timed(lambda: parse_file(path, max_bytes=LIMIT)) for _ in range(2))
    assert 30 / best >= 7, f"{30 / best:.1f} pages/s"


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def test_running_headers_and_page_numbers_are_dropped(documents_dir: Path) -> None:
    path = make_pdf(documents_dir / "handbook.pdf", running_header="ACME Handbook - Internal")

    doc = parse_file(path, max_bytes=LIMIT)

    text = all_text(doc)
    assert "ACME Handbook" not in text
    assert "Page 2" not in text
    assert pages_of(doc, "phishing awareness course") == {2}


def test_pdf_title_falls_back_to_first_heading(documents_dir: Path) -> None:
    doc = parse_file(make_pdf(documents_dir / "untitled.pdf"), max_bytes=LIMIT)
    assert doc.title == "Travel Policy"


def test_password_protected_pdf(encrypted_pdf: Path) -> None:
    with pytest.raises(PasswordProtected) as caught:
        parse_file(encrypted_pdf, max_bytes=LIMIT)
    assert caught.value.code == "password_protected"
    assert "Remove the password" in caught.value.reason


def test_pdf_with_only_an_owner_password_is_read(documents_dir: Path) -> None:
    path = make_encrypted_pdf(documents_dir / "restricted.pdf", user_password="")
    doc = parse_file(path, max_bytes=LIMIT)
    assert pages_of(doc, "phishing awareness course") == {2}


def test_corrupt_pdf(corrupt_pdf: Path) -> None:
    with pytest.raises(CorruptDocument) as caught:
        parse_file(corrupt_pdf, max_bytes=LIMIT)
    assert caught.value.code == "corrupt"
    assert "damaged" in caught.value.reason


def test_truncated_pdf_is_corrupt_or_partial_never_a_crash(text_pdf: Path) -> None:
    data = text_pdf.read_bytes()
    text_pdf.write_bytes(data[: len(data) // 3])
    try:
        doc = parse_file(text_pdf, max_bytes=LIMIT)
    except (CorruptDocument, EmptyDocument):
        return
    assert doc.elements


def test_pdf_with_only_blank_pages_is_empty(documents_dir: Path) -> None:
    with pytest.raises(EmptyDocument) as caught:
        parse_file(make_blank_pdf(documents_dir / "blank.pdf"), max_bytes=LIMIT)
    assert caught.value.code == "empty"


# ------------------------------------------------------------------------------------------
# Scanned PDFs and OCR
# ------------------------------------------------------------------------------------------


@pytest.fixture
def path_without_tesseract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point PATH at an empty directory, as on a server without tesseract-ocr."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("tesseract") is None


@pytest.mark.usefixtures("path_without_tesseract")
def test_scanned_pdf_without_tesseract_needs_ocr(scanned_pdf: Path) -> None:
    with pytest.raises(NeedsOCR) as caught:
        parse_file(scanned_pdf, max_bytes=LIMIT)
    assert caught.value.code == "needs_ocr"
    assert "tesseract-ocr" in caught.value.reason
    assert "install" in caught.value.reason.lower()


def test_scanned_pdf_with_ocr_switched_off_needs_ocr(scanned_pdf: Path) -> None:
    with pytest.raises(NeedsOCR) as caught:
        parse_file(scanned_pdf, max_bytes=LIMIT, ocr=False)
    assert "`ingest.ocr`" in caught.value.reason


@pytest.mark.usefixtures("path_without_tesseract")
def test_mixed_pdf_without_tesseract_keeps_its_text_pages(documents_dir: Path) -> None:
    doc = parse_file(make_mixed_pdf(documents_dir / "mixed.pdf"), max_bytes=LIMIT)

    assert doc.pages == 3
    assert pages_of(doc, "approved travel portal") == {1}
    assert pages_of(doc, "phishing awareness course") == {3}
    assert not pages_of(doc, "Forklifts")


@pytest.mark.usefixtures("path_without_tesseract")
def test_scan_with_a_stamped_text_line_still_needs_ocr(documents_dir: Path) -> None:
    with pytest.raises(NeedsOCR):
        parse_file(make_stamped_scan_pdf(documents_dir / "stamped.pdf"), max_bytes=LIMIT)


# OCR tests exist only where tesseract does: a skipped OCR test would look like a pass.
if HAVE_TESSERACT:

    def test_ocr_replaces_a_sparse_text_layer(documents_dir: Path) -> None:
        doc = parse_file(make_stamped_scan_pdf(documents_dir / "stamped.pdf"), max_bytes=LIMIT)

        text = all_text(doc)
        assert "Payment is due within thirty days" in text
        assert text.count("records office") <= 1

    def test_scanned_pdf_is_read_with_ocr(scanned_pdf: Path) -> None:
        doc = parse_file(scanned_pdf, max_bytes=LIMIT)

        text = all_text(doc)
        assert "Payment is due within thirty days" in text
        assert {e.page for e in doc.elements} == {1}
        assert [e.text for e in doc.elements if e.category == "Title"] == ["Scanned Invoice"]
        payment = next(e for e in doc.elements if "Payment" in e.text)
        assert payment.heading == "Scanned Invoice"

    def test_mixed_pdf_ocrs_only_the_scanned_page_in_order(documents_dir: Path) -> None:
        doc = parse_file(make_mixed_pdf(documents_dir / "mixed.pdf"), max_bytes=LIMIT)

        assert pages_of(doc, "approved travel portal") == {1}
        assert pages_of(doc, "Forklifts are inspected every morning") == {2}
        assert pages_of(doc, "phishing awareness course") == {3}
        assert [e.page for e in doc.elements] == sorted(e.page or 0 for e in doc.elements)


# ------------------------------------------------------------------------------------------
# Other formats in detail
# ------------------------------------------------------------------------------------------


def test_docx_pages_headings_and_title(documents_dir: Path) -> None:
    doc = parse_file(make_docx(documents_dir / "p.docx", title="Staff Rules"), max_bytes=LIMIT)

    assert doc.title == "Staff Rules"
    assert doc.pages == 3
    assert pages_of(doc, "phishing awareness course") == {2}
    assert pages_of(doc, "forty euros per day") == {3}


def test_pptx_slides_are_pages_and_notes_stay_with_their_slide(documents_dir: Path) -> None:
    sample = SUPPORTED_SAMPLES[".pptx"]
    doc = parse_file(sample.make(documents_dir / sample.filename), max_bytes=LIMIT)

    assert doc.pages == 3
    note = next(e for e in doc.elements if e.text == "Speaker note for slide 2.")
    assert (note.page, note.heading) == (2, "Security Training")
    assert pages_of(doc, "phishing awareness course") == {2}


def test_xlsx_sheets_are_pages_with_rows_as_lines(documents_dir: Path) -> None:
    sample = SUPPORTED_SAMPLES[".xlsx"]
    doc = parse_file(sample.make(documents_dir / sample.filename), max_bytes=LIMIT)

    assert doc.pages == 2
    budget, holidays = doc.elements
    assert (budget.page, budget.heading, budget.category) == (1, "Budget", "Table")
    assert "Engineering | 120000 | Alice\nMarketing | 45000 | Bob" in budget.text
    assert (holidays.page, holidays.heading) == (2, "Holidays")


def test_email_subject_is_title_and_heading(documents_dir: Path) -> None:
    sample = SUPPORTED_SAMPLES[".eml"]
    doc = parse_file(sample.make(documents_dir / sample.filename), max_bytes=LIMIT)

    assert doc.title == "Quarterly planning meeting"
    moved = next(e for e in doc.elements if "moves to Thursday" in e.text)
    assert moved.heading == "Quarterly planning meeting"
    assert moved.page is None


def test_html_title_and_no_markup(documents_dir: Path) -> None:
    sample = SUPPORTED_SAMPLES[".html"]
    doc = parse_file(sample.make(documents_dir / sample.filename), max_bytes=LIMIT)

    assert doc.title == "Handbook"
    assert "<" not in all_text(doc)
    assert "tracker.js" not in all_text(doc)


def test_text_file_without_any_extension_is_sniffed(documents_dir: Path) -> None:
    path = make_text(documents_dir / "README")
    assert detect_type(path) == "text/plain"
    assert "approved travel portal" in all_text(parse_file(path, max_bytes=LIMIT))


def test_html_without_extension_is_sniffed(documents_dir: Path) -> None:
    sample = SUPPORTED_SAMPLES[".html"]
    path = sample.make(documents_dir / "page")
    assert detect_type(path) == "text/html"


def test_content_wins_over_a_wrong_office_extension(documents_dir: Path) -> None:
    path = make_docx(documents_dir / "really-a-docx.pdf")
    doc = parse_file(path, max_bytes=LIMIT)
    assert doc.mime_type == SUPPORTED_SAMPLES[".docx"].mime_type


@pytest.mark.parametrize(
    ("fixture_name", "wrong_name", "extension"),
    [
        ("harbour.odt", "notes.docx", ".odt"),
        ("ledger.ods", "ledger.xlsx", ".ods"),
        ("outer.msg", "mail.doc", ".msg"),
        ("harbour.doc", "harbour.xls", ".doc"),
        ("ledger.xls", "ledger.ppt", ".xls"),
        ("harbour.rtf", "harbour.txt", ".rtf"),
        ("harbour.epub", "book.zip", ".epub"),
    ],
)
def test_new_formats_are_known_by_their_content_not_their_name(
    fixture_name: str, wrong_name: str, extension: str, documents_dir: Path
) -> None:
    path = documents_dir / wrong_name
    shutil.copyfile(fixture(fixture_name), path)
    assert detect_type(path) == FORMAT_SAMPLES[extension].mime_type


def test_other_opendocument_kinds_say_what_to_save_them_as(documents_dir: Path) -> None:
    drawing = make_zip_with_parts(
        documents_dir / "plan.odg",
        {"mimetype": b"application/vnd.oasis.opendocument.graphics", "content.xml": b"<x/>"},
    )
    with pytest.raises(UnsupportedType, match="OpenDocument drawing") as caught:
        detect_type(drawing)
    assert "save it as .odt, .ods or .odp" in caught.value.reason


def test_text_named_pdf_is_corrupt(documents_dir: Path) -> None:
    path = documents_dir / "fake.pdf"
    path.write_text("this is not a PDF at all\n", encoding="utf-8")
    with pytest.raises(CorruptDocument, match="not a PDF"):
        parse_file(path, max_bytes=LIMIT)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Die Größe der Räume wird geprüft, déjà vu im Büro.", "cp1252"),
        ("Привет, мир. Это документ о правилах поездок сотрудников.", "cp1251"),
        ("Zweiter Absatz über Ämter und Behörden.", "utf-16"),
        ("Zweiter Absatz über Ämter und Behörden.", "utf-8-sig"),
    ],
)
def test_text_in_legacy_encodings_is_decoded(text: str, encoding: str, documents_dir: Path) -> None:
    path = documents_dir / "legacy.txt"
    path.write_bytes(text.encode(encoding))
    assert all_text(parse_file(path, max_bytes=LIMIT)) == text


def test_ragged_and_semicolon_csv(documents_dir: Path) -> None:
    ragged = documents_dir / "ragged.csv"
    ragged.write_text("name,value\nalpha,1,extra\nbeta\n", encoding="utf-8")
    semicolons = documents_dir / "semi.csv"
    semicolons.write_text("Name;Wert\nAlpha;1,5\nBeta;2,25\n", encoding="utf-8")

    assert all_text(parse_file(ragged, max_bytes=LIMIT)) == "name | value\nalpha | 1 | extra\nbeta"
    assert (
        all_text(parse_file(semicolons, max_bytes=LIMIT)) == "Name | Wert\nAlpha | 1,5\nBeta | 2,25"
    )


# ------------------------------------------------------------------------------------------
# Invisible characters
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", [".txt", ".html", ".md"])
def test_invisible_characters_are_stripped(extension: str, documents_dir: Path) -> None:
    hidden = "".join(INVISIBLE)
    body = f"Pass{hidden}word rotation happens every nine{hidden}ty days for all staff."
    path = documents_dir / f"hidden{extension}"
    if extension == ".html":
        path.write_text(f"<html><body><p>{body}</p></body></html>", encoding="utf-8")
    else:
        path.write_text(f"Rules\n\n{body}\n", encoding="utf-8")

    doc = parse_file(path, max_bytes=LIMIT)

    text = all_text(doc)
    assert "Password rotation happens every ninety days" in text
    assert not set(text) & set(INVISIBLE)


def test_clean_text_keeps_visible_text_and_newlines() -> None:
    assert parse.clean_text(" a\u200b b\t\tc \r\n\r\n d\u202e\ufb01ne ") == "a b c\ndfine"


# ------------------------------------------------------------------------------------------
# Files that cannot be parsed
# ------------------------------------------------------------------------------------------


def test_empty_file(empty_file: Path) -> None:
    with pytest.raises(EmptyDocument) as caught:
        parse_file(empty_file, max_bytes=LIMIT)
    assert caught.value.code == "empty"


def test_whitespace_only_text_is_empty(documents_dir: Path) -> None:
    path = documents_dir / "blank.txt"
    path.write_text(" \n\n\t \u200b\n", encoding="utf-8")
    with pytest.raises(EmptyDocument):
        parse_file(path, max_bytes=LIMIT)


def test_unsupported_binary_names_the_supported_types(unsupported_file: Path) -> None:
    with pytest.raises(UnsupportedType) as caught:
        parse_file(unsupported_file, max_bytes=LIMIT)
    assert caught.value.code == "unsupported_type"
    assert "PNG image" in caught.value.reason
    assert "PDF" in caught.value.reason
    assert "Word (.docx)" in caught.value.reason


def test_zip_archive_is_unsupported(documents_dir: Path) -> None:
    with pytest.raises(UnsupportedType, match="ZIP archive"):
        detect_type(make_zip(documents_dir / "bundle.zip"))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("script.py", b"print('hello')\n"),
        ("data.bin", bytes(range(256)) * 4),
        ("legacy.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)),
    ],
)
def test_other_types_are_unsupported(name: str, content: bytes, documents_dir: Path) -> None:
    path = documents_dir / name
    path.write_bytes(content)
    with pytest.raises(UnsupportedType):
        parse_file(path, max_bytes=LIMIT)


def test_too_large_names_the_limit_and_setting(text_pdf: Path) -> None:
    with pytest.raises(TooLarge) as caught:
        parse_file(text_pdf, max_bytes=1024)
    assert caught.value.code == "too_large"
    assert "`ingest.max_upload_mb`" in caught.value.reason
    assert "limit of 1 KiB" in caught.value.reason


def test_office_file_that_unpacks_to_far_more_than_its_size(documents_dir: Path) -> None:
    path = make_docx(documents_dir / "bomb.docx")
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("word/media/padding.bin", "w") as stream,
    ):
        for _ in range(64):
            stream.write(bytes(MB))
    with pytest.raises(TooLarge, match="unpacks to"):
        parse_file(path, max_bytes=LIMIT)


def test_zip_bomb_docx_fails_fast_with_the_unpack_reason(documents_dir: Path) -> None:
    # The security review's file: ~100 KiB that unpacks to 30 MB of one-letter paragraphs
    # (161 s and 1.6 GB of parser time before this check, which allowed 20x the upload limit).
    path = make_docx_bomb(documents_dir / "bomb.docx", unpacked_mb=30)
    assert path.stat().st_size < 200 * 1024
    started = time.perf_counter()
    with pytest.raises(TooLarge) as caught:
        parse_file(path, max_bytes=LIMIT)
    assert time.perf_counter() - started < 1.0
    reason = caught.value.reason
    assert "unpacks to 29 MiB" in reason
    assert "100 times its size" in reason
    assert "`ingest.max_unpack_ratio`" in reason
    assert "save it again" in reason


@pytest.mark.parametrize(
    ("zeros_mb", "allowed"),
    [
        (10, True),  # ~1000x, but under the 16 MiB every file may unpack to
        (20, True),  # ~60x a file of ~330 KiB: over the floor, within 100x its size
        (40, False),  # ~120x: over 100x its size
    ],
)
def test_unpack_limit_is_relative_to_the_file_size(
    zeros_mb: int, allowed: bool, documents_dir: Path
) -> None:
    # Incompressible bytes make the file's own size (as a scanned image in a DOCX would).
    image = os.urandom(320 * 1024)
    parts: dict[str, bytes | int] = {"word/media/image1.png": image, "pad.xml": zeros_mb * MB}
    path = make_zip_with_parts(documents_dir / "mixed.docx", parts)
    if allowed:
        check_unpacked_size(path, ParseLimits())
    else:
        with pytest.raises(TooLarge, match="unpacks to"):
            check_unpacked_size(path, ParseLimits())
    with pytest.raises(TooLarge):  # and the admin's settings are what counts
        check_unpacked_size(path, ParseLimits(max_unpack_ratio=2, unpack_floor_mb=1))


def test_a_part_that_understates_its_size_is_not_inflated(documents_dir: Path) -> None:
    # The unpack check trusts the sizes the archive declares; Python's zipfile (under
    # python-docx, python-pptx and openpyxl) never inflates a part past its declared size.
    path = make_docx(documents_dir / "liar.docx")
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    parts["word/document.xml"] = parts["word/document.xml"].replace(
        b"</w:body>", b"<w:p><w:r><w:t>" + b"a" * (4 * MB) + b"</w:t></w:r></w:p></w:body>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06"))
    while data[entry + 46 : entry + 46 + 17] != b"word/document.xml":
        entry = data.rfind(b"PK\x01\x02", 0, entry)
    struct.pack_into("<I", data, entry + 24, 1000)  # central directory: 1000 bytes unpacked
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDocument) as caught:
        parse_file(path, max_bytes=LIMIT)
    assert isinstance(caught.value.__cause__, zipfile.BadZipFile)  # "Bad CRC-32": read 1000


def test_library_failures_become_corrupt_document(documents_dir: Path) -> None:
    path = make_docx(documents_dir / "broken.docx")
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    parts["word/document.xml"] = b"<w:document><unclosed>"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    with pytest.raises(CorruptDocument) as caught:
        parse_file(path, max_bytes=LIMIT)
    assert "Word document" in caught.value.reason
    assert caught.value.__cause__ is not None


# ------------------------------------------------------------------------------------------
# The error tree and the data types
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.UnsupportedType, "unsupported_type"),
        (errors.EmptyDocument, "empty"),
        (errors.CorruptDocument, "corrupt"),
        (errors.PasswordProtected, "password_protected"),
        (errors.TooLarge, "too_large"),
        (errors.NeedsOCR, "needs_ocr"),
    ],
)
def test_error_tree(cls: type[IngestError], code: str) -> None:
    error = cls("what happened and what to do")
    assert isinstance(error, IngestError)
    assert error.code == code
    assert error.reason == str(error) == "what happened and what to do"


def test_errors_survive_the_trip_from_a_parser_process() -> None:
    for error in (TooLarge("big"), IngestError("no model", code="parser_unavailable")):
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
        assert (type(copy), copy.code, copy.reason) == (type(error), error.code, error.reason)


def test_elements_are_frozen() -> None:
    element = Element(text="x", page=1, heading=None, category="NarrativeText")
    with pytest.raises(AttributeError):
        element.text = "y"  # type: ignore[misc]
