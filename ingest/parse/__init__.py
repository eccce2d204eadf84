"""Turn an uploaded file into text elements with page numbers and section headings.

The public names live here: ``parse_file`` checks the limits, detects the type and sends the
file to its parser; the rest is re-exported from the submodules. The submodules, in the
order they may import each other (none imports from this ``__init__`` but ``sandbox``, which
runs ``parse_file`` in child processes and which this package never imports):

    elements   Element, ParsedDocument, PDF/OCR blocks, the text clean-up every format shares
    detect     supported types and type sniffing          limits   size, unpack, time, memory
    office     unstructured (Office, HTML, Markdown, email, .msg, RTF, text), CSV/TSV, titles
    odf        OpenDocument text, spreadsheets, slides     epub     EPUB chapters in order
    libreoffice  .doc, .xls, .ppt converted to OpenDocument by LibreOffice, under the limits
    ocr        PDFium rendering, tesseract, hOCR           pdf      pdfminer layout, headings
    sandbox    the parser child processes that enforce the time and memory limits

Like all of ``ingest``, this package imports ``models`` at most of our own code, never
``appliance``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ingest.errors import CorruptDocument, EmptyDocument, IngestError
from ingest.parse.detect import (
    DOC,
    EPUB,
    LABELS,
    ODP,
    ODS,
    ODT,
    PDF,
    PPT,
    SUPPORTED_EXTENSIONS,
    XLS,
    ZIP_TYPES,
    detect_type,
)
from ingest.parse.elements import Element, ParsedDocument, clean_text
from ingest.parse.epub import parse_epub
from ingest.parse.libreoffice import parse_legacy_office
from ingest.parse.limits import ParseLimits, check_file_size, check_unpacked_size
from ingest.parse.odf import parse_odf
from ingest.parse.office import parse_with_unstructured, warm_up_unstructured
from ingest.parse.pdf import parse_pdf

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Element",
    "ParseLimits",
    "ParsedDocument",
    "clean_text",
    "detect_type",
    "parse_file",
    "warm_up",
]
_DEFAULT_LIMITS = ParseLimits()


def parse_file(
    path: Path,
    *,
    max_bytes: int,
    ocr: bool = True,
    filename: str | None = None,
    limits: ParseLimits = _DEFAULT_LIMITS,
) -> ParsedDocument:
    """Parse a file into elements; raise an IngestError subclass saying why when it cannot.

    Only the size limits are checked here; the time and memory limits need a process of
    their own (``ingest.parse.sandbox``). A MemoryError is passed on as such, so that the
    sandbox can say that the memory limit was reached rather than that the file is damaged.
    """
    name = filename or path.name
    check_file_size(path, max_bytes)
    mime = detect_type(path, filename=name)
    label = LABELS[mime]
    try:
        if mime in ZIP_TYPES:
            check_unpacked_size(path, limits)
        parsed = _parse(path, mime, ocr=ocr, limits=limits)
    except (IngestError, MemoryError):
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


_ODF_KINDS = {ODT: "text", ODS: "spreadsheet", ODP: "presentation"}


def _parse(path: Path, mime: str, *, ocr: bool, limits: ParseLimits) -> ParsedDocument:
    """Send a file to the parser for its type."""
    if mime == PDF:
        return parse_pdf(path, ocr=ocr)
    if mime in _ODF_KINDS:
        return parse_odf(path, mime, _ODF_KINDS[mime])
    if mime == EPUB:
        return parse_epub(path)
    if mime in (DOC, XLS, PPT):
        return parse_legacy_office(path, mime, limits)
    return parse_with_unstructured(path, mime)


def warm_up() -> None:
    """Import every parser library and load the language model, as a parser process starts.

    A file's CPU and memory limits then measure reading that file, not a first import
    (4 s of CPU and 0.9 GiB of address space).
    """
    for module in ("pdfminer.high_level", "pdfminer.layout", "pypdfium2", "lxml.html", "olefile"):
        importlib.import_module(module)
    warm_up_unstructured()
