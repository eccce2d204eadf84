"""Parse results (Element, ParsedDocument, PDF/OCR Line and Block) and the shared text clean-up."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(slots=True)
class Line:
    """One line of text in a PDF block or an OCR paragraph, with its glyph size."""

    text: str
    size: float
    bold: bool


@dataclass(slots=True)
class Block:
    """A block of lines on one page, with its vertical extent."""

    page: int
    top: float  # fraction of the page height, 0 at the top edge
    bottom: float
    lines: list[Line] = field(default_factory=list)


# Chunks are embedded with their heading in front; a long "heading" (a whole paragraph in a
# heading style) would crowd out the chunk in the embedder's 256-token window.
_MAX_HEADING_CHARS = 120


def as_heading(text: str) -> str:
    """A Title's text as a heading, shortened so it fits beside a chunk in the embedder."""
    text = " ".join(text.split())
    if len(text) <= _MAX_HEADING_CHARS:
        return text
    cut = text.rfind(" ", 0, _MAX_HEADING_CHARS)
    return text[: cut if cut > 0 else _MAX_HEADING_CHARS] + "…"


_JUNK_TITLES = frozenset({"untitled", "untitled document", "(anonymous)", "unknown", "title"})
_TITLE_PREFIX_RE = re.compile(r"^microsoft (word|powerpoint|excel) - ", re.IGNORECASE)


def clean_title(value: str | None) -> str | None:
    """A document title without control characters or filler, or None if it says nothing."""
    if not value:
        return None
    title = _TITLE_PREFIX_RE.sub("", " ".join(clean_text(value).split()))[:300]
    return title if title and title.lower() not in _JUNK_TITLES else None


def parse_xml(data: bytes) -> Any:
    """Parse a document's XML part without entities, DTDs, the network or huge trees."""
    import lxml.etree  # here, not at import: importing ingest.parse stays cheap

    parser = lxml.etree.XMLParser(
        resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False
    )
    return lxml.etree.fromstring(data, parser)
