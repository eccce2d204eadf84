"""OCR of PDF pages: rendering them with PDFium, reading them with tesseract, parsing its hOCR."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ingest.errors import NeedsOCR
from ingest.parse.elements import Block, Line, clean_text

# Parser libraries are imported where used, so that importing ingest.parse stays cheap.

# PDFium is not thread-safe; the worker may parse from more than one thread.
PDFIUM_LOCK = threading.Lock()
_OCR_DPI = 300
_OCR_MAX_PIXELS = 40_000_000
_OCR_PAGE_TIMEOUT_S = 180
_OCR_LANGUAGES = "eng"


def ocr_pages(path: Path, numbers: Sequence[int], tesseract: str) -> list[Block]:
    """Render pages with PDFium and read them with tesseract."""
    blocks: list[Block] = []
    for number, png, dpi in _render_pages(path, numbers):
        hocr = _run_tesseract(tesseract, png, dpi, number)
        blocks.extend(_tesseract_blocks(hocr, number))
    return blocks


def _render_pages(path: Path, numbers: Sequence[int]) -> Iterator[tuple[int, bytes, int]]:
    """Yield (page number, PNG bytes, dpi) for each page, rendered in grey at up to 300 dpi."""
    import pypdfium2

    with PDFIUM_LOCK:
        document = pypdfium2.PdfDocument(str(path))
    try:
        for number in numbers:
            with PDFIUM_LOCK:
                page = document[number - 1]
                width, height = page.get_size()
                scale = min(_OCR_DPI / 72, math.sqrt(_OCR_MAX_PIXELS / max(width * height, 1.0)))
                image = page.render(scale=scale, grayscale=True).to_pil()
                page.close()
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            yield number, buffer.getvalue(), max(int(72 * scale), 1)
    finally:
        with PDFIUM_LOCK:
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


def _tesseract_blocks(hocr: bytes, page: int) -> list[Block]:
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
        block = Block(page, top / image_height, bottom / image_height)
        for line in par.iter("span"):
            if line.get("class") not in ("ocr_line", "ocr_header", "ocr_caption", "ocr_textfloat"):
                continue
            text = clean_text(" ".join(line.text_content().split()))
            match = _HOCR_SIZE_RE.search(line.get("title", ""))
            if text and match:
                block.lines.append(Line(text=text, size=float(match.group(1)), bold=False))
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
