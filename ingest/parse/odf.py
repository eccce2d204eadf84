"""OpenDocument text, spreadsheets and presentations (.odt, .ods, .odp), read from their XML.

Which parts keep page numbers:

    .odt   pages: LibreOffice stores where it broke the pages (text:soft-page-break), and
           hard breaks are paragraph or table styles (fo:break-before/after, a master page);
           a writer that stores no soft breaks gives the hard-break pages only
    .odp   slides: each draw:page is a page; speaker notes stay with their slide
    .ods   sheets: each table is a page, headed by the sheet's name (as Excel workbooks)

Tracked deletions, tables of contents, comments and headers/footers are left out. The old
binary Office formats are converted to these by ``ingest.parse.libreoffice`` and read here.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.errors import PasswordProtected
from ingest.parse.elements import (
    Element,
    ParsedDocument,
    as_heading,
    clean_text,
    clean_title,
    parse_xml,
)

_NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "style": "urn:oasis:names:tc:opendocument:xmlns:style:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
    "fo": "urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def _q(name: str) -> str:
    prefix, local = name.split(":")
    return f"{{{_NS[prefix]}}}{local}"


_H, _P, _SPAN = _q("text:h"), _q("text:p"), _q("text:span")
_LIST, _SOFT_BREAK = _q("text:list"), _q("text:soft-page-break")
_S, _TAB, _LINE_BREAK, _NOTE = _q("text:s"), _q("text:tab"), _q("text:line-break"), _q("text:note")
_TABLE, _ROW, _CELL = _q("table:table"), _q("table:table-row"), _q("table:table-cell")
_COVERED = _q("table:covered-table-cell")
_NOTES = _q("presentation:notes")
# Text that is not the document's reading text: deleted revisions, generated indexes,
# comments, declarations, forms, page-number fields, and the slide placeholders.
_SKIPPED = frozenset(
    _q(name)
    for name in (
        "text:tracked-changes",
        "text:table-of-content",
        "text:alphabetical-index",
        "text:illustration-index",
        "text:table-index",
        "text:object-index",
        "text:user-index",
        "text:bibliography",
        "office:annotation",
        "office:annotation-end",
        "text:sequence-decls",
        "text:variable-decls",
        "text:user-field-decls",
        "office:forms",
        "text:note-citation",
        "text:page-number",
        "text:page-count",
    )
)
_PLACEHOLDERS = frozenset({"footer", "header", "date-time", "page-number", "handout"})
# A cell or row repeated this often is written out at most this many times, and a document
# writes out at most _MAX_CELLS repeated cells: ODF compresses repetition, and a small file
# must not expand to millions of lines.
_MAX_REPEAT = 1000
_MAX_CELLS = 1_000_000
_MAX_STYLE_DEPTH = 32


def parse_odf(path: Path, mime: str, kind: str) -> ParsedDocument:
    """Read an OpenDocument file of `kind` ("text", "spreadsheet", "presentation")."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "META-INF/manifest.xml" in names and b"encryption-data" in archive.read(
            "META-INF/manifest.xml"
        ):
            raise PasswordProtected(
                "This OpenDocument file is protected with a password, so it cannot be read. "
                "Open it in LibreOffice, save it without a password (File > Save As, untick "
                "'Save with password'), and upload the saved copy."
            )
        content = parse_xml(archive.read("content.xml"))
        styles = parse_xml(archive.read("styles.xml")) if "styles.xml" in names else None
        meta = parse_xml(archive.read("meta.xml")) if "meta.xml" in names else None

    walker = _Walker(breaks=_page_breaks([content, styles]))
    body = content.find(_q("office:body"))
    part = body.find(_q(f"office:{kind}")) if body is not None else None
    if part is None:
        raise ValueError(f"no office:{kind} in content.xml")
    if kind == "presentation":
        walker.slides(part)
    elif kind == "spreadsheet":
        walker.sheets(part)
    else:
        walker.blocks(part)

    title = None
    if meta is not None:
        node = meta.find(f".//{_q('dc:title')}")
        title = clean_title(node.text) if node is not None else None
    if title is None:
        title = clean_title(next((e.text for e in walker.elements if e.category == "Title"), None))
    pages = max((e.page or 1 for e in walker.elements), default=1)
    return ParsedDocument(elements=walker.elements, pages=pages, title=title, mime_type=mime)


@dataclass(frozen=True, slots=True)
class _Break:
    before: bool
    after: bool


def _page_breaks(roots: list[Any]) -> dict[str, _Break]:
    """Paragraph and table styles (named and automatic) that start or end a page."""
    declared: dict[str, tuple[str | None, bool | None, bool | None]] = {}
    style_tag, props = (
        _q("style:style"),
        (_q("style:paragraph-properties"), _q("style:table-properties")),
    )
    for root in roots:
        if root is None:
            continue
        for node in root.iter(style_tag):
            name = node.get(_q("style:name"))
            if not name:
                continue
            before = after = None
            if node.get(_q("style:master-page-name")):
                before = True  # a new page style begins a new page
            for child in node:
                if child.tag in props:
                    if (value := child.get(_q("fo:break-before"))) is not None:
                        before = before or value == "page"
                    if (value := child.get(_q("fo:break-after"))) is not None:
                        after = value == "page"
            declared[name] = (node.get(_q("style:parent-style-name")), before, after)

    def resolve(name: str) -> _Break:
        before = after = None
        current: str | None = name
        for _ in range(_MAX_STYLE_DEPTH):
            if current is None or current not in declared:
                break
            parent, own_before, own_after = declared[current]
            before = own_before if before is None else before
            after = own_after if after is None else after
            current = parent
        return _Break(bool(before), bool(after))

    return {name: found for name in declared if (found := resolve(name)).before or found.after}


@dataclass
class _Walker:
    """Walks the body in reading order, keeping the page and heading as it goes."""

    breaks: dict[str, _Break]
    elements: list[Element] = field(default_factory=list)
    page: int = 1
    heading: str | None = None
    budget: list[int] = field(default_factory=lambda: [_MAX_CELLS])  # repeats left to write
    _page_has_text: bool = False

    # -- text documents --------------------------------------------------------------------

    def blocks(self, parent: Any, *, in_list: bool = False) -> None:
        for node in parent:
            tag = node.tag
            if not isinstance(tag, str) or tag in _SKIPPED:
                if tag in _SKIPPED:  # the pages still turn inside a table of contents
                    self._turn(sum(1 for _ in node.iter(_SOFT_BREAK)))
                continue
            if tag == _SOFT_BREAK:
                self._turn(1)
            elif tag in (_H, _P):
                self._paragraph(node, in_list=in_list)
            elif tag == _LIST:
                self.blocks(node, in_list=True)
            elif tag == _TABLE:
                turn_after = self._break_before(node, "table:style-name")
                self._table(node)
                self._turn(sum(1 for _ in node.iter(_SOFT_BREAK)) + turn_after)
            else:  # sections, list items, text boxes, index bodies: their blocks, in order
                self.blocks(node, in_list=in_list)

    def _paragraph(self, node: Any, *, in_list: bool) -> None:
        turn_after = self._break_before(node, "text:style-name")
        notes: list[Any] = []
        text = clean_text("".join(_text(node, notes)))
        if node.tag == _H:
            self._emit(text, "Title")
        else:
            self._emit(text, "ListItem" if in_list else "NarrativeText")
        for note in notes:  # footnotes and endnotes after the paragraph that cites them
            body = note.find(_q("text:note-body"))
            if body is not None:
                self.blocks(body)
        self._turn(sum(1 for _ in node.iter(_SOFT_BREAK)) + turn_after)

    def _break_before(self, node: Any, attribute: str) -> int:
        """Turn the page if the node's style breaks before it; 1 if it breaks after it."""
        style = self.breaks.get(node.get(_q(attribute)) or "")
        if style is None:
            return 0
        if style.before and self._page_has_text:
            self._turn(1)
        return int(style.after)

    def _table(self, node: Any) -> None:
        rows = list(_rows(node, self.budget))
        if rows:
            self._emit("\n".join(rows), "Table")

    # -- presentations and spreadsheets ----------------------------------------------------

    def slides(self, part: Any) -> None:
        for number, slide in enumerate(part.iter(_q("draw:page")), start=1):
            self.page, self.heading = number, None  # a slide never inherits a heading
            notes = [child for child in slide if child.tag == _NOTES]
            for child in slide:
                if child.tag != _NOTES:
                    self._shape(child)
            for child in notes:
                self._shape(child)

    def _shape(self, node: Any) -> None:
        kind = node.get(_q("presentation:class"))
        if kind in _PLACEHOLDERS or not isinstance(node.tag, str):
            return
        if kind == "title":
            text = clean_text(" ".join(_paragraphs(node)))
            self._emit(text, "Title")
            return
        for child in node:
            if child.tag in (_H, _P):
                self._emit(clean_text("".join(_text(child, []))), "NarrativeText")
            elif child.tag == _LIST:
                for item in child.iter(_P, _H):
                    self._emit(clean_text("".join(_text(item, []))), "ListItem")
            elif child.tag == _TABLE:
                self._table(child)
            else:  # frames, text boxes, groups, custom shapes
                self._shape(child)

    def sheets(self, part: Any) -> None:
        sheets = [child for child in part if child.tag == _TABLE]
        for number, sheet in enumerate(sheets, start=1):
            self.page = number
            name = sheet.get(_q("table:name"))
            self.heading = clean_text(name) if name and name.strip() else None
            self._table(sheet)

    # -- shared ----------------------------------------------------------------------------

    def _emit(self, text: str, category: str) -> None:
        if not text:
            return
        if category == "Title":
            self.heading = as_heading(text)
        self.elements.append(
            Element(text=text, page=self.page, heading=self.heading, category=category)
        )
        self._page_has_text = True

    def _turn(self, pages: int) -> None:
        if pages:
            self.page += pages
            self._page_has_text = False


def _text(node: Any, notes: list[Any]) -> Iterator[str]:
    """A paragraph's text with its spaces, tabs and line breaks; notes are set aside."""
    if node.text:
        yield node.text
    for child in node:
        tag = child.tag
        if tag == _NOTE:
            notes.append(child)
        elif tag == _S:
            yield " " * min(int(child.get(_q("text:c"), "1") or 1), 100)
        elif tag == _TAB:
            yield " "
        elif tag == _LINE_BREAK:
            yield "\n"
        elif isinstance(tag, str) and tag not in _SKIPPED:
            yield from _text(child, notes)
        if child.tail:
            yield child.tail


def _paragraphs(node: Any) -> Iterator[str]:
    for paragraph in node.iter(_P, _H):
        yield "".join(_text(paragraph, []))


def _repeat(node: Any, attribute: str, budget: list[int], cells: int = 1) -> int:
    """How often to write out a repeated cell (or a row of `cells`), within the budget left."""
    try:
        wanted = max(1, min(int(node.get(_q(attribute), "1")), _MAX_REPEAT))
    except ValueError:
        return 1
    granted = max(1, min(wanted, budget[0] // max(cells, 1)))
    budget[0] -= (granted - 1) * cells
    return granted


def _rows(table: Any, budget: list[int]) -> Iterator[str]:
    """A table's rows as lines with ' | ' between cells; empty rows and trailing cells go."""
    for row in table.iter(_ROW):
        if _owner(row) is not table:
            continue  # a row of a table nested in a cell
        cells: list[str] = []
        for cell in row:
            if cell.tag not in (_CELL, _COVERED):
                continue
            text = " ".join(" ".join(_paragraphs(cell)).split())
            repeat = _repeat(cell, "table:number-columns-repeated", budget) if text else 1
            cells.extend([text] * repeat)
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            line = " | ".join(cells)
            for _ in range(_repeat(row, "table:number-rows-repeated", budget, len(cells))):
                yield line


def _owner(row: Any) -> Any:
    node = row.getparent()
    while node is not None and node.tag != _TABLE:
        node = node.getparent()
    return node
