"""Type sniffing: the supported MIME types, and which one a file is by its content and name."""

from __future__ import annotations

import codecs
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

from ingest.errors import CorruptDocument, EmptyDocument, PasswordProtected, UnsupportedType

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
ODT = "application/vnd.oasis.opendocument.text"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
ODP = "application/vnd.oasis.opendocument.presentation"
RTF = "application/rtf"
MSG = "application/vnd.ms-outlook"
DOC = "application/msword"
XLS = "application/vnd.ms-excel"
PPT = "application/vnd.ms-powerpoint"
EPUB = "application/epub+zip"

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
    ".odt": ODT,
    ".ods": ODS,
    ".odp": ODP,
    ".rtf": RTF,
    ".msg": MSG,
    ".doc": DOC,
    ".xls": XLS,
    ".ppt": PPT,
    ".epub": EPUB,
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_MIME_BY_EXTENSION)

_SUPPORTED_TEXT = (
    "PDF, Word (.docx), PowerPoint (.pptx), Excel (.xlsx), their 97-2003 formats (.doc, "
    ".ppt, .xls), OpenDocument (.odt, .ods, .odp), RTF, HTML, Markdown, plain text, CSV/TSV, "
    "email (.eml, Outlook .msg) and EPUB"
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
    ODT: "OpenDocument text",
    ODS: "OpenDocument spreadsheet",
    ODP: "OpenDocument presentation",
    RTF: "RTF document",
    MSG: "Outlook message",
    DOC: "Word 97-2003 document",
    XLS: "Excel 97-2003 workbook",
    PPT: "PowerPoint 97-2003 presentation",
    EPUB: "EPUB e-book",
}
# Types that are ZIP archives: their unpacked size is checked before a parser opens them.
ZIP_TYPES = frozenset({DOCX, PPTX, XLSX, ODT, ODS, ODP, EPUB})
_BINARY_TYPES = ZIP_TYPES | {PDF, MSG, DOC, XLS, PPT, RTF}
_OOXML_PARTS = {"word/document.xml": DOCX, "ppt/presentation.xml": PPTX, "xl/workbook.xml": XLSX}
_ODF_TYPES = {
    ODT.encode(): ODT,
    ODS.encode(): ODS,
    ODP.encode(): ODP,
    EPUB.encode(): EPUB,
}
_SNIFF_BYTES = 8192

# (signature, offset, what it is, what to do) for binaries users upload by mistake.
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
    if head.startswith(_OLE_SIGNATURE):
        return _sniff_ole(path)
    if head.startswith(b"{\\rtf"):
        return RTF
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
    # ODF and EPUB name their type in a first member called "mimetype" (ODF 1.2 part 3, 3.3).
    declared = declared.strip()
    if declared in _ODF_TYPES:
        return _ODF_TYPES[declared]
    if declared.startswith(b"application/vnd.oasis.opendocument"):
        return (
            "an OpenDocument drawing, chart, formula or template",
            "; export it as PDF, or save it as .odt, .ods or .odp, and upload that",
        )
    return ("a ZIP archive", "; unpack it and upload the documents inside")


_OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# An OLE compound file is a little file system; its streams say what it holds.
_OLE_STREAMS = (
    ("WordDocument", DOC),
    ("Workbook", XLS),
    ("Book", XLS),
    ("PowerPoint Document", PPT),
    ("__properties_version1.0", MSG),
)


def _sniff_ole(path: Path) -> str | tuple[str, str]:
    """Word, Excel, PowerPoint 97-2003 and Outlook messages by their streams (MS-CFB)."""
    import olefile  # here, not at import: only OLE files need it

    try:
        with olefile.OleFileIO(str(path)) as ole:
            streams = {"/".join(entry) for entry in ole.listdir(streams=True, storages=False)}
            if {"EncryptionInfo", "EncryptedPackage"} <= streams:
                raise PasswordProtected(
                    "This Office file is protected with a password, so it cannot be read. "
                    "Open it, remove the password (File > Info > Protect), save it, and "
                    "upload the saved copy."
                )
            for stream, mime in _OLE_STREAMS:
                if stream in streams:
                    if _ole_encrypted(ole, mime):
                        raise PasswordProtected(
                            f"This {LABELS[mime]} is protected with a password, so it cannot "
                            "be read. Open it, remove the password, save it (as .docx, .xlsx "
                            "or .pptx if you can), and upload the saved copy."
                        )
                    return mime
    except PasswordProtected:
        raise
    except Exception:  # olefile raises OSError and others on a damaged directory
        return (
            "an old-format Office file (.doc, .xls, .ppt) or an Outlook .msg whose structure "
            "is damaged",
            "; open it in its application, save it again, and upload the saved copy",
        )
    return (
        "an OLE compound file that is not a Word, Excel, PowerPoint or Outlook file",
        "; export it as PDF and upload that",
    )


def _ole_encrypted(ole: Any, mime: str) -> bool:
    """True if a Word or Excel 97-2003 file says it is encrypted."""
    if mime == DOC:
        fib = ole.openstream("WordDocument").read(12)
        # FibBase.fEncrypted is bit 8 of the flags at offset 10 (MS-DOC 2.5.2).
        return len(fib) == 12 and bool(struct.unpack_from("<H", fib, 10)[0] & 0x0100)
    if mime == XLS:
        data = ole.openstream("Workbook" if ole.exists("Workbook") else "Book").read(4096)
        offset = 0
        # A FILEPASS record (0x002F) follows the first BOF when the workbook is encrypted.
        for _ in range(64):
            if offset + 4 > len(data):
                break
            kind, size = struct.unpack_from("<HH", data, offset)
            if kind == 0x002F:
                return True
            offset += 4 + size
    return False


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
