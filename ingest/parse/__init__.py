"""Turn an uploaded file into text elements with page numbers and section headings.

The public names live here: ``parse_file`` checks the limits, detects the type and sends the
file to its parser; the rest is re-exported from the submodules. The submodules, in the
order they may import each other (none imports from this ``__init__``):

    elements   Element, ParsedDocument, PDF/OCR blocks, the text clean-up every format shares
    detect     supported types and type sniffing          limits   upload and unpacked size
    office     unstructured (Office, HTML, Markdown, email, text), CSV/TSV, titles, encodings
    ocr        PDFium rendering, tesseract, hOCR           pdf      pdfminer layout, headings

Like all of ``ingest``, this package imports ``models`` at most of our own code, never
``appliance``.
"""

from __future__ import annotations

from pathlib import Path

from ingest.errors import CorruptDocument, EmptyDocument, IngestError
from ingest.parse.detect import DOCX, LABELS, PDF, PPTX, SUPPORTED_EXTENSIONS, XLSX, detect_type
from ingest.parse.elements import Element, ParsedDocument, clean_text
from ingest.parse.limits import check_file_size, check_unpacked_size
from ingest.parse.office import parse_with_unstructured
from ingest.parse.pdf import parse_pdf

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Element",
    "ParsedDocument",
    "clean_text",
    "detect_type",
    "parse_file",
]


def parse_file(
    path: Path, *, max_bytes: int, ocr: bool = True, filename: str | None = None
) -> ParsedDocument:
    """Parse a file into elements; raise an IngestError subclass saying why when it cannot."""
    name = filename or path.name
    check_file_size(path, max_bytes)
    mime = detect_type(path, filename=name)
    label = LABELS[mime]
    try:
        if mime in (DOCX, PPTX, XLSX):
            check_unpacked_size(path, max_bytes)
        parsed = parse_pdf(path, ocr=ocr) if mime == PDF else parse_with_unstructured(path, mime)
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
