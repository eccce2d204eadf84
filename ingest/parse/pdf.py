"""PDF layout: pdfminer text blocks, running margins, headings and lists; which pages need OCR."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.errors import CorruptDocument, NeedsOCR, PasswordProtected
from ingest.parse.detect import PDF
from ingest.parse.elements import (
    Block,
    Element,
    Line,
    ParsedDocument,
    as_heading,
    clean_text,
    clean_title,
)
from ingest.parse.ocr import PDFIUM_LOCK, ocr_pages

# Parser libraries are imported where used, so that importing ingest.parse stays cheap.

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
class _PdfPage:
    number: int
    blocks: list[Block] = field(default_factory=list)
    has_image: bool = False
    readable_chars: int = 0
    garbled_chars: int = 0  # glyphs pdfminer could not map to text, shown as "(cid:N)"

    @property
    def needs_ocr(self) -> bool:
        """Images with little or no text beside them, or glyphs that do not map to text."""
        if not self.blocks:
            return self.has_image or self.garbled_chars > 0
        return self.has_image and self.readable_chars < _SPARSE_PAGE_CHARS


def parse_pdf(path: Path, *, ocr: bool) -> ParsedDocument:
    """Read a PDF's text layer, OCR pages that are only images, and classify the text."""
    import pypdfium2
    import pypdfium2.raw

    with PDFIUM_LOCK:
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
    ocr_blocks = ocr_pages(path, to_ocr, tesseract) if tesseract is not None else []
    # OCR reads everything drawn on a page, so where it found text it replaces the sparse
    # text layer rather than repeating it.
    read_by_ocr = {block.page for block in ocr_blocks}
    text_blocks = [b for p in pages if p.number not in read_by_ocr for b in p.blocks]
    elements = _merge_by_page(
        _classify_blocks(text_blocks, _HEADING_RATIO_TEXT),
        _classify_blocks(ocr_blocks, _HEADING_RATIO_OCR),
    )

    elements = _attach_headings(elements)
    title = clean_title(metadata_title) if isinstance(metadata_title, str) else None
    if title is None:
        title = clean_title(next((e.text for e in elements if e.category == "Title"), None))
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
            block = Block(page.number, 1 - obj.y1 / height, 1 - obj.y0 / height)
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


def _pdf_line(line: Any, page: _PdfPage) -> Line | None:
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
    return Line(text=text, size=size_sum / chars, bold=bold >= 0.8 * chars)


def _margin_key(block: Block) -> str | None:
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


def _classify_blocks(blocks: Sequence[Block], heading_ratio: float) -> list[Element]:
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
            heading = as_heading(element.text)
        out.append(Element(element.text, element.page, heading, element.category))
    return out
