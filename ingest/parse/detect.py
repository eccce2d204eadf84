"""Type sniffing: the supported MIME types, and which one a file is by its content and name."""

from __future__ import annotations

import codecs
import re
import zipfile
from pathlib import Path

from ingest.errors import CorruptDocument, EmptyDocument, UnsupportedType

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
LABELS = {
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
            f"The file is named {extension} but its content is not a {LABELS[expected]}: "
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
