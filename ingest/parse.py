"""Turn an uploaded file into text elements with page numbers and section headings."""

from __future__ import annotations

import codecs
import contextlib
import csv
import email.parser
import email.policy
import html
import importlib
import io
import itertools
import math
import os
import re
import shutil
import subprocess
import threading
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.errors import (
    CorruptDocument,
    EmptyDocument,
    IngestError,
    NeedsOCR,
    PasswordProtected,
    TooLarge,
    UnsupportedType,
)

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HTML = "text/html"
MARKDOWN = "text/markdown"
TEXT = "text/plain"
CSV = "text/csv"
TSV = "text/tab-separated-values"
EMAIL = "message/rfc822"

_MIME_BY_EXTENSION: dict[str, str] = {
    ".pdf": PDF,
    ".docx": DOCX,
    ".pptx": PPTX,
    ".xlsx": XLSX,
    ".html": HTML,
    ".htm": HTML,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".txt": TEXT,
    ".csv": CSV,
    ".tsv": TSV,
    ".eml": EMAIL,
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_MIME_BY_EXTENSION)

_SUPPORTED_TEXT = (
    "PDF, Word (.docx), PowerPoint (.pptx), Excel (.xlsx), HTML, Markdown, plain text, "
    "CSV/TSV and email (.eml)"
)
_LABELS = {
    PDF: "PDF",
    DOCX: "Word document",
    PPTX: "PowerPoint presentation",
    XLSX: "Excel workbook",
    HTML: "HTML page",
    MARKDOWN: "Markdown file",
    TEXT: "text file",
    CSV: "CSV file",
    TSV: "TSV file",
    EMAIL: "email",
}
_BINARY_TYPES = frozenset({PDF, DOCX, PPTX, XLSX})
_OOXML_PARTS = {"word/document.xml": DOCX, "ppt/presentation.xml": PPTX, "xl/workbook.xml": XLSX}
_SNIFF_BYTES = 8192
# Office files are ZIP archives; this bounds what one may unpack to (zip bombs).
_MAX_UNPACK_RATIO = 20

# (signature, offset, what it is, what to do) for binaries users upload by mistake.
_SAVE_AS_OFFICE = "; save it as .docx, .xlsx or .pptx and upload that"
_KNOWN_BINARIES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image", ""),
    (b"\xff\xd8\xff", 0, "a JPEG image", ""),
    (b"GIF8", 0, "a GIF image", ""),
    (b"II*\x00", 0, "a TIFF image", ""),
    (b"MM\x00*", 0, "a TIFF image", ""),
    (b"BM", 0, "a BMP image", ""),
    (b"WEBP", 8, "a WebP image", ""),
    (b"ftyp", 4, "an audio or video file", ""),
    (b"ID3", 0, "an MP3 file", ""),
    (b"OggS", 0, "an Ogg file", ""),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        0,
        "an old-format Office file (.doc, .xls, .ppt) or an Outlook .msg",
        "; save it as .docx, .xlsx or .pptx (an email as .eml) and upload that",
    ),
    (b"{\\rtf", 0, "an RTF document", "; save it as .docx and upload that"),
    (b"\x7fELF", 0, "a program", ""),
    (b"MZ", 0, "a program", ""),
    (b"\x1f\x8b", 0, "a gzip archive", ""),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive", ""),
    (b"Rar!", 0, "a RAR archive", ""),
    (b"BZh", 0, "a bzip2 archive", ""),
    (b"\xfd7zXZ\x00", 0, "an xz archive", ""),
    (b"SQLite format 3\x00", 0, "an SQLite database", ""),
)

# Invisible characters that carry no text but can hide or reorder it (prompt smuggling).
_INVISIBLE: dict[int, None] = {
    **dict.fromkeys(range(0x00, 0x09)),
    **dict.fromkeys(range(0x0E, 0x20)),
    **dict.fromkeys(range(0x7F, 0xA0)),
    0x00AD: None,  # soft hyphen
    0x034F: None,  # combining grapheme joiner
    0x061C: None,  # Arabic letter mark (bidi)
    0x180E: None,  # Mongolian vowel separator
    **dict.fromkeys(range(0x200B, 0x2010)),  # zero-width space/joiners, LRM, RLM
    **dict.fromkeys(range(0x202A, 0x202F)),  # bidi embeddings and overrides
    **dict.fromkeys(range(0x2060, 0x2065)),  # word joiner, invisible operators
    **dict.fromkeys(range(0x2066, 0x206A)),  # bidi isolates
    0xFEFF: None,  # byte order mark / zero-width no-break space
    **dict.fromkeys(range(0xFFF9, 0xFFFC)),  # interlinear annotation
}
_WHITESPACE_MAP: dict[int, str] = {
    0x09: " ",
    0x0B: "\n",
    0x0C: "\n",
    0x0D: "\n",
    0xA0: " ",
    0x2028: "\n",
    0x2029: "\n",
    0xFB00: "ff",
    0xFB01: "fi",
    0xFB02: "fl",
    0xFB03: "ffi",
    0xFB04: "ffl",
    0xFB05: "st",
    0xFB06: "st",
}
_TRANSLATE: dict[int, str | None] = {**_INVISIBLE, **_WHITESPACE_MAP}
_SPACES_RE = re.compile(r"[^\S\n]+")
_NEWLINES_RE = re.compile(r"\s*\n\s*")


@dataclass(frozen=True, slots=True)
class Element:
    """One piece of a document's text, where it sits and what it is."""

    text: str
    page: int | None
    heading: str | None
    category: str


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A parsed file: its elements in reading order and what is known about it."""

    elements: list[Element]
    pages: int
    title: str | None
    mime_type: str


def clean_text(text: str) -> str:
    """Drop invisible and control characters and tidy whitespace, keeping single newlines."""
    text = unicodedata.normalize("NFC", text.translate(_TRANSLATE))
    text = _SPACES_RE.sub(" ", text)
    return _NEWLINES_RE.sub("\n", text).strip()


# ------------------------------------------------------------------------------------------
# Type detection
# ------------------------------------------------------------------------------------------


def detect_type(path: Path, *, filename: str | None = None) -> str:
    """Return the file's MIME type from its content and name; raise UnsupportedType if unread."""
    name = filename or path.name
    extension = Path(name).suffix.lower()
    try:
        with path.open("rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    except OSError as exc:
        raise CorruptDocument(
            "The uploaded file could not be read from disk. Upload it again."
        ) from exc
    if not head:
        raise EmptyDocument("The file is empty (0 bytes). Upload a file that has content.")

    sniffed = _sniff_binary(path, head)
    if isinstance(sniffed, str):
        return sniffed
    if sniffed is not None:
        what, advice = sniffed
        raise UnsupportedType(
            f"This file is {what}, which the appliance cannot read{advice}. "
            f"Supported types are {_SUPPORTED_TEXT}."
        )
    expected = _MIME_BY_EXTENSION.get(extension)
    if expected in _BINARY_TYPES:
        raise CorruptDocument(
            f"The file is named {extension} but its content is not a {_LABELS[expected]}: "
            "it is damaged or was renamed. Open it in its application, save it again, "
            "and upload the saved copy."
        )
    if not _looks_like_text(head):
        raise UnsupportedType(
            f"This file is binary data of a type the appliance cannot read. "
            f"Supported types are {_SUPPORTED_TEXT}."
        )
    if expected is not None:
        return expected
    if extension:
        raise UnsupportedType(
            f"Files ending in {extension} are not supported. Supported types are "
            f"{_SUPPORTED_TEXT}; a text file can be uploaded as .txt."
        )
    return _sniff_text(head)


def _sniff_binary(path: Path, head: bytes) -> str | tuple[str, str] | None:
    """A supported binary MIME type, (what, advice) for an unsupported binary, or None."""
    if b"%PDF-" in head[:1024]:
        return PDF
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    for signature, offset, what, advice in _KNOWN_BINARIES:
        if head[offset : offset + len(signature)] == signature:
            return (what, advice)
    return None


def _sniff_zip(path: Path) -> str | tuple[str, str] | None:
    """Office Open XML types by their main part; other ZIP-based formats by name."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            declared = b""
            if "mimetype" in names:
                with archive.open("mimetype") as member:
                    declared = member.read(100)
    except (zipfile.BadZipFile, OSError, ValueError, KeyError):
        return None  # a damaged archive: the extension decides what to say
    for part, mime in _OOXML_PARTS.items():
        if part in names:
            return mime
    if declared.startswith(b"application/vnd.oasis.opendocument"):
        return ("an OpenDocument file (LibreOffice)", _SAVE_AS_OFFICE)
    if declared.startswith(b"application/epub"):
        return ("an EPUB e-book", "")
    return ("a ZIP archive", "; unpack it and upload the documents inside")


def _looks_like_text(head: bytes) -> bool:
    """True if the bytes decode as text in a common encoding."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    if b"\x00" in head:
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=False)  # a character cut at the sniff boundary is fine
        return True
    except UnicodeDecodeError:
        pass
    # Legacy 8-bit encodings: accept unless control bytes are common.
    controls = sum(1 for byte in head if byte < 0x20 and byte not in b"\t\n\r\f")
    return controls <= len(head) // 100


_EMAIL_HEADER_RE = re.compile(
    rb"^(from|to|subject|date|received|return-path|message-id|mime-version|delivered-to)"
    rb"\s*:",
    re.IGNORECASE,
)


def _sniff_text(head: bytes) -> str:
    """The MIME type of a text file that has no extension."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return HTML
    first_lines = start.split(b"\n", 3)[:3]
    if first_lines and all(_EMAIL_HEADER_RE.match(line) for line in first_lines[:2]):
        return EMAIL
    return TEXT


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------


def parse_file(
    path: Path, *, max_bytes: int, ocr: bool = True, filename: str | None = None
) -> ParsedDocument:
    """Parse a file into elements; raise an IngestError subclass saying why when it cannot."""
    name = filename or path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CorruptDocument(
            "The uploaded file could not be read from disk. Upload it again."
        ) from exc
    if size > max_bytes:
        raise TooLarge(
            f"The file is {_mib(size)}, over the upload limit of {_mib(max_bytes)} "
            "(setting `ingest.max_upload_mb`). Split the document or ask an admin to raise "
            "the limit."
        )
    if size == 0:
        raise EmptyDocument("The file is empty (0 bytes). Upload a file that has content.")
    mime = detect_type(path, filename=name)
    label = _LABELS[mime]
    try:
        if mime in (DOCX, PPTX, XLSX):
            _check_unpacked_size(path, max_bytes)
        parsed = _parse_pdf(path, ocr=ocr) if mime == PDF else _parse_with_unstructured(path, mime)
    except IngestError:
        raise
    except Exception as exc:
        raise CorruptDocument(
            f"The file could not be read as a {label}: it may be damaged or not really a "
            f"{label}. Open it in its application, save it again, and upload the saved copy."
        ) from exc
    if not parsed.elements:
        raise EmptyDocument(
            f"No text was found in this {label}. If it should have text, check that it "
            "opens correctly, or upload it in another format."
        )
    return parsed


def _mib(size: int) -> str:
    if size < 1_048_576:
        return f"{max(size // 1024, 1)} KiB"
    return f"{size / 1_048_576:.1f} MiB" if size < 10 * 1_048_576 else f"{size // 1_048_576} MiB"


def _check_unpacked_size(path: Path, max_bytes: int) -> None:
    """Refuse Office files that unpack to far more than the upload limit (zip bombs)."""
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    limit = max_bytes * _MAX_UNPACK_RATIO
    if unpacked > limit:
        raise TooLarge(
            f"The file unpacks to {_mib(unpacked)}, more than {_MAX_UNPACK_RATIO} times the "
            f"upload limit of {_mib(max_bytes)} (setting `ingest.max_upload_mb`). "
            "Split the document or ask an admin to raise the limit."
        )


# ------------------------------------------------------------------------------------------
# Formats other than PDF: unstructured
# ------------------------------------------------------------------------------------------

# module, function, keyword arguments; languages=[""] skips language detection, which we
# do not use and which costs a pass over every element.
_PARTITIONERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    DOCX: ("unstructured.partition.docx", "partition_docx", {}),
    PPTX: ("unstructured.partition.pptx", "partition_pptx", {"include_slide_notes": True}),
    XLSX: ("unstructured.partition.xlsx", "partition_xlsx", {}),
    HTML: ("unstructured.partition.html", "partition_html", {}),
    MARKDOWN: ("unstructured.partition.md", "partition_md", {}),
    TEXT: ("unstructured.partition.text", "partition_text", {}),
    # Attachments would be routed through unstructured's own PDF path, which needs models
    # this appliance does not ship; attachments are uploaded as documents of their own.
    EMAIL: ("unstructured.partition.email", "partition_email", {"process_attachments": False}),
}
_SKIPPED_CATEGORIES = frozenset({"PageBreak", "Header", "Footer", "PageNumber"})
_TITLE_CATEGORIES = frozenset({"Title"})
# Chunks are embedded with their heading in front; a long "heading" (a whole paragraph in a
# heading style) would crowd out the chunk in the embedder's 256-token window.
_MAX_HEADING_CHARS = 120
_NLP_LOCK = threading.Lock()
_nlp_checked = False


def _parse_with_unstructured(path: Path, mime: str) -> ParsedDocument:
    """Partition a non-PDF file with unstructured and attach pages and headings."""
    if mime in (CSV, TSV):
        return _parse_table_text(path, mime)
    _require_language_model()
    module_name, function_name, kwargs = _PARTITIONERS[mime]
    if mime in (HTML, MARKDOWN, TEXT):
        # unstructured's own guess warns and favours rare code pages (German text came out
        # as Baltic cp1257); an explicit encoding is decoded strictly instead.
        kwargs = {**kwargs, "encoding": _text_encoding(path)}
    partition: Callable[..., list[Any]] = getattr(
        importlib.import_module(module_name), function_name
    )
    raw = partition(filename=str(path), languages=[""], **kwargs)
    if mime == PPTX:
        raw = _notes_after_slide(raw)

    title: str | None = None
    heading: str | None = None
    if mime == EMAIL:
        title = _email_subject(path)
        heading = _heading(title) if title else None  # the body sits under its subject
    elif mime in (DOCX, PPTX, XLSX):
        title = _ooxml_title(path)
    elif mime == HTML:
        title = _html_title(path)

    elements: list[Element] = []
    last_page: int | None = None
    max_page = 1
    for item in raw:
        category = str(getattr(item, "category", "") or "UncategorizedText")
        if category in _SKIPPED_CATEGORIES:
            continue
        metadata = item.metadata
        page = metadata.page_number if isinstance(metadata.page_number, int) else None
        if page != last_page and mime in (PPTX, XLSX):
            # A slide or sheet is its own section: never inherit the previous one's heading.
            sheet = metadata.page_name if mime == XLSX else None
            heading = clean_text(sheet) if isinstance(sheet, str) and sheet.strip() else None
        last_page = page
        text = _table_text(metadata.text_as_html) if category == "Table" else None
        text = clean_text(text or str(item.text or ""))
        if not text:
            continue
        if category in _TITLE_CATEGORIES:
            heading = _heading(text)
        if page is not None:
            max_page = max(max_page, page)
        elements.append(Element(text=text, page=page, heading=heading, category=category))

    if title is None:
        title = _clean_title(next((e.text for e in elements if e.category == "Title"), None))
    return ParsedDocument(elements=elements, pages=max_page, title=title, mime_type=mime)


# Single-byte code pages for Latin script: detectors cannot tell them apart on short text,
# and Windows-1252 is by far the most common of them in office files.
_LATIN_CODEPAGES = frozenset(
    {"ascii", "cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "iso8859_2", "iso8859_4"}
    | {"iso8859_9", "iso8859_10", "iso8859_13", "iso8859_15", "iso8859_16", "mac_roman"}
    | {"cp437", "cp850", "cp858"}
)


def _text_encoding(path: Path) -> str:
    """The encoding of a text file: a BOM, UTF-8, a detected non-Latin code page, or cp1252."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    import charset_normalizer

    matches = list(charset_normalizer.from_bytes(data[:1_048_576]))
    guess: str | None = None
    if matches:
        # Near-ties are common on short text; files on office servers come from Windows.
        clean = [m for m in matches if m.chaos <= matches[0].chaos + 0.01]
        windows = [m for m in clean if m.encoding.startswith("cp125")]
        guess = codecs.lookup((windows or clean)[0].encoding).name.replace("-", "_")
    if guess is not None and guess not in _LATIN_CODEPAGES:
        return guess
    try:
        data.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return guess or "latin_1"


def _parse_table_text(path: Path, mime: str) -> ParsedDocument:
    """Read a CSV or TSV file as one table, a line per row with ' | ' between cells."""
    text = path.read_bytes().decode(_text_encoding(path))
    delimiter = "\t" if mime == TSV else ","
    if mime == CSV:
        # One column, or too irregular to tell: commas.
        with contextlib.suppress(csv.Error):
            delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
    rows = []
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
        cells = [" ".join(clean_text(cell).split()) for cell in row]
        if any(cells):
            rows.append(" | ".join(cells))
    elements = [Element("\n".join(rows), None, None, "Table")] if rows else []
    return ParsedDocument(elements=elements, pages=1, title=None, mime_type=mime)


def _heading(text: str) -> str:
    """A Title's text as a heading, shortened so it fits beside a chunk in the embedder."""
    text = " ".join(text.split())
    if len(text) <= _MAX_HEADING_CHARS:
        return text
    cut = text.rfind(" ", 0, _MAX_HEADING_CHARS)
    return text[: cut if cut > 0 else _MAX_HEADING_CHARS] + "…"


def _notes_after_slide(items: list[Any]) -> list[Any]:
    """Within each slide, move what comes before its title (the speaker notes) after it."""
    ordered: list[Any] = []
    for _, group in itertools.groupby(items, key=lambda item: item.metadata.page_number):
        slide = list(group)
        title = next((n for n, item in enumerate(slide) if item.category == "Title"), 0)
        ordered.extend(slide[title:] + slide[:title])
    return ordered


def _require_language_model() -> None:
    """Fail clearly, and never download, when unstructured's spaCy model is missing."""
    global _nlp_checked
    if _nlp_checked:
        return
    with _NLP_LOCK:
        import spacy.util
        from unstructured.nlp import tokenize

        # When the model is missing unstructured downloads it from the internet; this
        # appliance is offline, so that path is replaced by an error.
        if hasattr(tokenize, "_install_spacy_model"):
            tokenize._install_spacy_model = _refuse_model_download
        name = str(getattr(tokenize, "_SPACY_MODEL_NAME", "en_core_web_sm"))
        if not spacy.util.is_package(name):
            raise IngestError(
                f"The document parser's language model ({name}) is not installed on this "
                "server, so no document except PDFs can be read. Reinstall the appliance "
                "packages (the model ships with them); nothing is downloaded at run time.",
                code="parser_unavailable",
            )
        _nlp_checked = True


def _refuse_model_download() -> None:
    raise RuntimeError("downloading a spaCy model is disabled: the appliance is offline")


def _table_text(table_html: object) -> str | None:
    """Render an HTML table as one line per row with ' | ' between cells."""
    if not isinstance(table_html, str) or not table_html.strip():
        return None
    import lxml.html

    root = lxml.html.fromstring(table_html)
    rows = []
    for row in root.iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in row if cell.tag in ("td", "th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows) or None


def _email_subject(path: Path) -> str | None:
    with path.open("rb") as stream:
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parse(stream)
    subject = headers.get("Subject")
    return _clean_title(str(subject)) if subject is not None else None


def _ooxml_title(path: Path) -> str | None:
    """The title in an Office file's document properties, if set."""
    import lxml.etree

    with zipfile.ZipFile(path) as archive:
        try:
            data = archive.read("docProps/core.xml")
        except KeyError:
            return None
    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    root = lxml.etree.fromstring(data, parser)
    node = root.find("{http://purl.org/dc/elements/1.1/}title")
    return _clean_title(node.text) if node is not None and node.text else None


_HTML_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def _html_title(path: Path) -> str | None:
    with path.open("rb") as stream:
        head = stream.read(65536)
    match = _HTML_TITLE_RE.search(head)
    if match is None:
        return None
    return _clean_title(html.unescape(match.group(1).decode("utf-8", errors="replace")))


_JUNK_TITLES = frozenset({"untitled", "untitled document", "(anonymous)", "unknown", "title"})
_TITLE_PREFIX_RE = re.compile(r"^microsoft (word|powerpoint|excel) - ", re.IGNORECASE)


def _clean_title(value: str | None) -> str | None:
    if not value:
        return None
    title = _TITLE_PREFIX_RE.sub("", " ".join(clean_text(value).split()))[:300]
    return title if title and title.lower() not in _JUNK_TITLES else None


# ------------------------------------------------------------------------------------------
# PDF: pdfminer for the text layer, pdfium + tesseract for pages that are only images
# ------------------------------------------------------------------------------------------

# PDFium is not thread-safe; the worker may parse from more than one thread.
_PDFIUM_LOCK = threading.Lock()
_OCR_DPI = 300
_OCR_MAX_PIXELS = 40_000_000
_OCR_PAGE_TIMEOUT_S = 180
_OCR_LANGUAGES = "eng"
_HEADING_RATIO_TEXT = 1.15
_HEADING_RATIO_OCR = 1.25
_HEADING_MAX_WORDS = 20
_BOLD_HEADING_MAX_WORDS = 12
_MARGIN = 0.06
# A page with an image and less text than this is treated as scanned (a scanner or
# archive system often stamps a line of real text onto each scanned page).
_SPARSE_PAGE_CHARS = 100
_BULLET_RE = re.compile(r"^\s*([•◦▪▫●○■□‣⁃∙·\-–—*]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)])\s+")
_BULLET_GLYPH_RE = re.compile(r"^\s*[•◦▪▫●○■□‣⁃∙·*]\s+")
_PAGE_NUMBER_RE = re.compile(
    r"^(page\s*)?[-–—]?\s*\d{1,5}\s*[-–—]?(\s*(of|/)\s*\d{1,5})?$", re.IGNORECASE
)
_BOLD_FONT_RE = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)


@dataclass(slots=True)
class _Line:
    text: str
    size: float
    bold: bool


@dataclass(slots=True)
class _Block:
    page: int
    top: float  # fraction of the page height, 0 at the top edge
    bottom: float
    lines: list[_Line] = field(default_factory=list)


@dataclass(slots=True)
class _PdfPage:
    number: int
    blocks: list[_Block] = field(default_factory=list)
    has_image: bool = False
    readable_chars: int = 0
    garbled_chars: int = 0  # glyphs pdfminer could not map to text, shown as "(cid:N)"

    @property
    def needs_ocr(self) -> bool:
        """Images with little or no text beside them, or glyphs that do not map to text."""
        if not self.blocks:
            return self.has_image or self.garbled_chars > 0
        return self.has_image and self.readable_chars < _SPARSE_PAGE_CHARS


def _parse_pdf(path: Path, *, ocr: bool) -> ParsedDocument:
    """Read a PDF's text layer, OCR pages that are only images, and classify the text."""
    import pypdfium2
    import pypdfium2.raw

    with _PDFIUM_LOCK:
        try:
            document = pypdfium2.PdfDocument(str(path))
        except pypdfium2.PdfiumError as exc:
            if exc.err_code in (pypdfium2.raw.FPDF_ERR_PASSWORD, pypdfium2.raw.FPDF_ERR_SECURITY):
                raise PasswordProtected(
                    "This PDF is protected with a password, so its text cannot be read. "
                    "Remove the password (open it and save or print an unprotected copy) "
                    "and upload it again."
                ) from exc
            raise CorruptDocument(
                "This PDF is damaged and cannot be opened. Open it in a PDF viewer, save or "
                "print it to a new PDF, and upload that copy."
            ) from exc
        try:
            page_count = len(document)
            metadata_title = document.get_metadata_dict().get("Title")
        finally:
            document.close()

    pages = _pdfminer_pages(path)
    page_count = max(page_count, len(pages))
    to_ocr = [page.number for page in pages if page.needs_ocr]
    tesseract = shutil.which("tesseract") if ocr and to_ocr else None
    # Without OCR, a PDF whose every page needs it would come out empty or nearly so (a
    # scanner's stamp); one with real text pages is read without its image-only pages.
    if to_ocr and tesseract is None and all(p.needs_ocr or not p.blocks for p in pages):
        if not ocr:
            raise NeedsOCR(
                "This PDF has no readable text layer (it is scanned pages), and OCR is "
                "switched off (setting `ingest.ocr`). Ask an admin to switch OCR on, or "
                "upload a PDF with a text layer."
            )
        raise NeedsOCR(
            "This PDF has no readable text layer (it is scanned pages), and OCR is not "
            "available on this server. Install Debian's tesseract-ocr package (apt-get "
            "install tesseract-ocr tesseract-ocr-eng) to read scanned PDFs, then upload "
            "it again."
        )
    ocr_blocks = _ocr_pages(path, to_ocr, tesseract) if tesseract is not None else []
    # OCR reads everything drawn on a page, so where it found text it replaces the sparse
    # text layer rather than repeating it.
    read_by_ocr = {block.page for block in ocr_blocks}
    text_blocks = [b for p in pages if p.number not in read_by_ocr for b in p.blocks]
    elements = _merge_by_page(
        _classify_blocks(text_blocks, _HEADING_RATIO_TEXT),
        _classify_blocks(ocr_blocks, _HEADING_RATIO_OCR),
    )

    elements = _attach_headings(elements)
    title = _clean_title(metadata_title) if isinstance(metadata_title, str) else None
    if title is None:
        title = _clean_title(next((e.text for e in elements if e.category == "Title"), None))
    return ParsedDocument(elements=elements, pages=page_count, title=title, mime_type=PDF)


def _pdfminer_pages(path: Path) -> list[_PdfPage]:
    """Text blocks of every page, in pdfminer's reading order."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams

    # all_texts also lays out text inside form XObjects, where some generators put everything.
    laparams = LAParams(all_texts=True)
    pages: list[_PdfPage] = []
    for number, layout in enumerate(extract_pages(str(path), laparams=laparams), start=1):
        page = _PdfPage(number)
        _collect_blocks(layout, float(layout.height) or 1.0, page)
        if page.garbled_chars > page.readable_chars:
            page.blocks = []  # fonts without a text mapping: what survives is noise
        pages.append(page)
    return _drop_running_margins(pages)


def _collect_blocks(container: Iterable[Any], height: float, page: _PdfPage) -> None:
    """Add the text blocks (and whether there are images) found in a layout container."""
    from pdfminer.layout import LTFigure, LTImage, LTTextBox, LTTextLine

    for obj in container:
        if isinstance(obj, LTTextBox | LTTextLine):
            lines = obj if isinstance(obj, LTTextBox) else [obj]
            block = _Block(page.number, 1 - obj.y1 / height, 1 - obj.y0 / height)
            for item in lines:
                line = _pdf_line(item, page)
                if line is not None:
                    block.lines.append(line)
            if block.lines:
                page.blocks.append(block)
        elif isinstance(obj, LTImage):
            page.has_image = True
        elif isinstance(obj, LTFigure):
            _collect_blocks(obj, height, page)


_CID_RE = re.compile(r"\(cid:\d+\)")


def _pdf_line(line: Any, page: _PdfPage) -> _Line | None:
    """A pdfminer text line with its mean glyph size and whether it is set in bold."""
    from pdfminer.layout import LTChar

    raw = line.get_text()
    garbled = len(_CID_RE.findall(raw))
    text = clean_text(_CID_RE.sub("", raw) if garbled else raw)
    page.garbled_chars += garbled
    page.readable_chars += len(text)
    if not text:
        return None
    size_sum = 0.0
    chars = 0
    bold = 0
    for char in line:
        if isinstance(char, LTChar) and not char.get_text().isspace():
            size_sum += char.size
            chars += 1
            if _BOLD_FONT_RE.search(char.fontname):
                bold += 1
    if chars == 0:
        return None
    return _Line(text=text, size=size_sum / chars, bold=bold >= 0.8 * chars)


def _margin_key(block: _Block) -> str | None:
    """A page-independent key for short text in the top or bottom margin, else None."""
    if block.bottom > _MARGIN and block.top < 1 - _MARGIN:
        return None
    text = " ".join(line.text for line in block.lines)
    if len(text.split()) > 12:
        return None
    return re.sub(r"\d+", "#", text.lower())


def _drop_running_margins(pages: list[_PdfPage]) -> list[_PdfPage]:
    """Remove page numbers and running headers/footers that repeat on several pages."""
    seen: Counter[str] = Counter()
    for page in pages:
        seen.update({key for block in page.blocks if (key := _margin_key(block)) is not None})
    for page in pages:
        kept = []
        for block in page.blocks:
            key = _margin_key(block)
            text = " ".join(line.text for line in block.lines)
            if key is not None and (seen[key] >= 2 or _PAGE_NUMBER_RE.match(text)):
                continue
            kept.append(block)
        page.blocks = kept
    return pages


def _classify_blocks(blocks: Sequence[_Block], heading_ratio: float) -> list[Element]:
    """Split blocks into headings (by size or bold), list items and paragraphs."""
    if not blocks:
        return []
    weights: Counter[float] = Counter()
    bold_chars = 0
    total_chars = 0
    for block in blocks:
        for line in block.lines:
            weights[round(line.size * 2) / 2] += len(line.text)
            total_chars += len(line.text)
            bold_chars += len(line.text) if line.bold else 0
    body_size = weights.most_common(1)[0][0]
    bold_means_heading = bold_chars < 0.5 * total_chars

    elements: list[Element] = []
    for block in blocks:
        runs: list[tuple[str, list[str]]] = []
        at_block_start = True
        for line in block.lines:
            words = len(line.text.split())
            big = line.size >= body_size * heading_ratio and words <= _HEADING_MAX_WORDS
            strong = (
                bold_means_heading
                and line.bold
                and at_block_start
                and words <= _BOLD_HEADING_MAX_WORDS
                and not line.text.endswith((".", ",", ";"))
            )
            kind = "heading" if (big or strong) and any(c.isalpha() for c in line.text) else None
            if kind is None:
                at_block_start = False
                kind = "list" if _BULLET_RE.match(line.text) else "body"
            if runs and (
                (kind == "heading" and runs[-1][0] == "heading")
                or (kind == "body" and runs[-1][0] in ("body", "list"))
            ):
                runs[-1][1].append(line.text)
            else:
                runs.append((kind, [line.text]))
        for kind, texts in runs:
            text = _join_lines(texts)
            if kind == "heading":
                category = "Title" if len(text.split()) <= _HEADING_MAX_WORDS else "NarrativeText"
            elif kind == "list":
                category = "ListItem"
                text = _BULLET_GLYPH_RE.sub("", text, count=1)
            else:
                category = "NarrativeText"
            if text:
                elements.append(Element(text, block.page, None, category))
    return elements


_HYPHENATED_RE = re.compile(r"[a-zà-öø-ÿ]-$")


def _join_lines(lines: Sequence[str]) -> str:
    """Join wrapped lines into one paragraph, undoing end-of-line hyphenation."""
    out = ""
    for line in lines:
        if not out:
            out = line
        elif _HYPHENATED_RE.search(out) and line[:1].islower():
            out = out[:-1] + line
        else:
            out = f"{out} {line}"
    return clean_text(out)


def _merge_by_page(first: list[Element], second: list[Element]) -> list[Element]:
    """Merge two page-ordered element lists, keeping each list's order within a page."""
    merged = first + second
    return sorted(merged, key=lambda element: element.page or 0)  # sorted() is stable


def _attach_headings(elements: Iterable[Element]) -> list[Element]:
    """Give every element the text of the nearest Title before it (its own, for a Title)."""
    heading: str | None = None
    out = []
    for element in elements:
        if element.category == "Title":
            heading = _heading(element.text)
        out.append(Element(element.text, element.page, heading, element.category))
    return out


def _ocr_pages(path: Path, numbers: Sequence[int], tesseract: str) -> list[_Block]:
    """Render pages with PDFium and read them with tesseract."""
    blocks: list[_Block] = []
    for number, png, dpi in _render_pages(path, numbers):
        hocr = _run_tesseract(tesseract, png, dpi, number)
        blocks.extend(_tesseract_blocks(hocr, number))
    return blocks


def _render_pages(path: Path, numbers: Sequence[int]) -> Iterator[tuple[int, bytes, int]]:
    """Yield (page number, PNG bytes, dpi) for each page, rendered in grey at up to 300 dpi."""
    import pypdfium2

    with _PDFIUM_LOCK:
        document = pypdfium2.PdfDocument(str(path))
    try:
        for number in numbers:
            with _PDFIUM_LOCK:
                page = document[number - 1]
                width, height = page.get_size()
                scale = min(_OCR_DPI / 72, math.sqrt(_OCR_MAX_PIXELS / max(width * height, 1.0)))
                image = page.render(scale=scale, grayscale=True).to_pil()
                page.close()
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            yield number, buffer.getvalue(), max(int(72 * scale), 1)
    finally:
        with _PDFIUM_LOCK:
            document.close()


def _run_tesseract(tesseract: str, png: bytes, dpi: int, page: int) -> bytes:
    """Run tesseract on one page image and return its hOCR output."""
    # One thread per tesseract: on a small server OpenMP threads fight the worker for cores.
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    command = [tesseract, "stdin", "stdout", "-l", _OCR_LANGUAGES, "--dpi", str(dpi), "hocr"]
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, binary resolved from PATH by which()
            command,
            input=png,
            capture_output=True,
            timeout=_OCR_PAGE_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NeedsOCR(
            f"OCR of page {page} took longer than {_OCR_PAGE_TIMEOUT_S} seconds and was "
            "stopped. Upload a PDF with a text layer, or split the document."
        ) from exc
    except OSError as exc:
        raise NeedsOCR(
            "OCR could not start tesseract. Reinstall Debian's tesseract-ocr package "
            "to read scanned PDFs."
        ) from exc
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise NeedsOCR(
            f"OCR failed on page {page} ({detail[-1] if detail else 'no message'}). Check that "
            "Debian's tesseract-ocr and tesseract-ocr-eng packages are installed."
        )
    return result.stdout


def _tesseract_blocks(hocr: bytes, page: int) -> list[_Block]:
    """Paragraph blocks from tesseract's hOCR; a line's size is tesseract's x_size estimate."""
    import lxml.html

    root = lxml.html.fromstring(hocr)
    image_height = 1.0
    for node in root.iter("div"):
        if node.get("class") == "ocr_page":
            image_height = max(_hocr_bbox(node)[3], 1.0)
            break
    blocks = []
    for par in root.iter("p"):
        if par.get("class") != "ocr_par":
            continue
        _, top, _, bottom = _hocr_bbox(par)
        block = _Block(page, top / image_height, bottom / image_height)
        for line in par.iter("span"):
            if line.get("class") not in ("ocr_line", "ocr_header", "ocr_caption", "ocr_textfloat"):
                continue
            text = clean_text(" ".join(line.text_content().split()))
            match = _HOCR_SIZE_RE.search(line.get("title", ""))
            if text and match:
                block.lines.append(_Line(text=text, size=float(match.group(1)), bold=False))
        if block.lines:
            blocks.append(block)
    return blocks


_HOCR_BBOX_RE = re.compile(r"bbox (\d+) (\d+) (\d+) (\d+)")
_HOCR_SIZE_RE = re.compile(r"x_size ([\d.]+)")


def _hocr_bbox(node: Any) -> tuple[float, float, float, float]:
    match = _HOCR_BBOX_RE.search(node.get("title", ""))
    if match is None:
        return (0.0, 0.0, 0.0, 0.0)
    left, top, right, bottom = (float(value) for value in match.groups())
    return (left, top, right, bottom)
