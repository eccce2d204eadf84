"""Office, HTML, Markdown, email, RTF and text through unstructured; CSV/TSV; titles; encodings.

RTF keeps its hard page breaks (\\page, \\pagebb) as pages: it stores no layout, so where
Word would break a long page is not in the file.
"""

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
import re
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.errors import IngestError, PasswordProtected
from ingest.parse.detect import CSV, DOCX, EMAIL, HTML, MARKDOWN, MSG, PPTX, RTF, TEXT, TSV, XLSX
from ingest.parse.elements import Element, ParsedDocument, as_heading, clean_text, clean_title

# Parser libraries are imported where used, so that importing ingest.parse stays cheap.

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
    MSG: ("unstructured.partition.msg", "partition_msg", {"process_attachments": False}),
}
_SKIPPED_CATEGORIES = frozenset({"PageBreak", "Header", "Footer", "PageNumber"})
_TITLE_CATEGORIES = frozenset({"Title"})
_NLP_LOCK = threading.Lock()
_nlp_checked = False


def parse_with_unstructured(path: Path, mime: str) -> ParsedDocument:
    """Partition a non-PDF file with unstructured and attach pages and headings."""
    if mime in (CSV, TSV):
        return _parse_table_text(path, mime)
    _require_language_model()
    if mime == RTF:
        return _parse_rtf(path)
    module_name, function_name, kwargs = _PARTITIONERS[mime]
    if mime in (HTML, MARKDOWN, TEXT):
        # unstructured's own guess warns and favours rare code pages (German text came out
        # as Baltic cp1257); an explicit encoding is decoded strictly instead.
        kwargs = {**kwargs, "encoding": _text_encoding(path)}
    partition: Callable[..., list[Any]] = getattr(
        importlib.import_module(module_name), function_name
    )
    title: str | None = None
    heading: str | None = None
    if mime in (EMAIL, MSG):
        # For a .msg before partitioning: an encrypted message would partition to nothing.
        title = _email_subject(path) if mime == EMAIL else _msg_subject(path)
        heading = as_heading(title) if title else None  # the body sits under its subject
    elif mime in (DOCX, PPTX, XLSX):
        title = _ooxml_title(path)
    elif mime == HTML:
        title = _html_title(path)
    raw = partition(filename=str(path), languages=[""], **kwargs)
    if mime == PPTX:
        raw = _notes_after_slide(raw)

    elements = to_elements(
        raw, heading=heading, by_page=mime in (PPTX, XLSX), sheet_headings=mime == XLSX
    )
    if title is None:
        title = clean_title(next((e.text for e in elements if e.category == "Title"), None))
    pages = max((e.page for e in elements if e.page is not None), default=1)
    return ParsedDocument(elements=elements, pages=pages, title=title, mime_type=mime)


def to_elements(
    raw: list[Any],
    *,
    heading: str | None = None,
    by_page: bool = False,
    sheet_headings: bool = False,
    page: int | None = None,
) -> list[Element]:
    """unstructured's elements as ours: headers, footers and page breaks dropped, headings kept.

    With `by_page` each page (a slide, a sheet) is a section of its own, headed by its sheet
    name with `sheet_headings`; `page` sets the page of every element.
    """
    elements: list[Element] = []
    last_page: int | None = None
    for item in raw:
        category = str(getattr(item, "category", "") or "UncategorizedText")
        if category in _SKIPPED_CATEGORIES:
            continue
        metadata = item.metadata
        if page is None:
            at = metadata.page_number if isinstance(metadata.page_number, int) else None
        else:
            at = page
        if at != last_page and by_page:
            # A slide or sheet is its own section: never inherit the previous one's heading.
            sheet = metadata.page_name if sheet_headings else None
            heading = clean_text(sheet) if isinstance(sheet, str) and sheet.strip() else None
        last_page = at
        text = _table_text(metadata.text_as_html) if category == "Table" else None
        text = clean_text(text or str(item.text or ""))
        if not text:
            continue
        if category in _TITLE_CATEGORIES:
            heading = as_heading(text)
        elements.append(Element(text=text, page=at, heading=heading, category=category))
    return elements


def warm_up_unstructured() -> None:
    """Import every partitioner and load the language model, so a first file pays for neither."""
    for module_name, _, _ in _PARTITIONERS.values():
        importlib.import_module(module_name)
    try:
        _require_language_model()
    except IngestError:
        return  # each non-PDF file will fail with the reason; PDFs still parse
    from unstructured.partition.text import partition_text

    partition_text(text="Warm up. The sentence splitter loads here.", languages=[""])


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


# Control words that break the page: \page between paragraphs, \pagebb on a paragraph.
_RTF_PAGE_RE = re.compile(rb"\\(page|pagebb)(?![a-z])(-?\d+)? ?")
_PAGE_MARK = "\f"
# Bullets and symbols drawn from the Symbol and Wingdings fonts land in the Private Use Area.
_SYMBOL_FONT_RE = re.compile("[\uf000-\uf0ff]")


def _parse_rtf(path: Path) -> ParsedDocument:
    """Read an RTF file as text, a page per hard page break, paragraphs found by unstructured."""
    from striprtf import striprtf

    rtf_to_text: Callable[..., str] = striprtf.rtf_to_text  # the library has no types
    data = _RTF_PAGE_RE.sub(
        lambda match: rb"\par\u12?" if match.group(1) == b"page" else rb"\u12?",
        path.read_bytes(),
    )
    # RTF is 7-bit: other bytes are escaped (\'e9, \u233); latin-1 keeps any stray byte.
    source = data.decode("latin-1")
    text = rtf_to_text(source, errors="replace")
    elements: list[Element] = []
    heading: str | None = None
    for number, page in enumerate(text.split(_PAGE_MARK), start=1):
        found = _rtf_page(_SYMBOL_FONT_RE.sub("", page), heading=heading, page=number)
        heading = found[-1].heading if found else heading
        elements.extend(found)
    pages = max((e.page or 1 for e in elements), default=1)
    info = _RTF_TITLE_RE.search(source)
    title = clean_title(rtf_to_text(info.group(0), errors="replace")) if info else None
    if title is None:
        title = clean_title(next((e.text for e in elements if e.category == "Title"), None))
    return ParsedDocument(elements=elements, pages=pages, title=title, mime_type=RTF)


_RTF_TITLE_RE = re.compile(r"(?<=\{\\title )[^{}]*")


def _rtf_page(text: str, *, heading: str | None, page: int) -> list[Element]:
    """One page of RTF text: table rows (cells end in '|') as tables, the rest as paragraphs."""
    from unstructured.partition.text import partition_text

    elements: list[Element] = []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for is_table, run in itertools.groupby(lines, key=lambda line: line.endswith("|")):
        block = list(run)
        if is_table:
            rows = [" | ".join(cell.strip() for cell in line[:-1].split("|")) for line in block]
            elements.append(Element("\n".join(rows), page, heading, "Table"))
            continue
        # A line is a paragraph (\par); unstructured would join lines without a blank one.
        raw = partition_text(text="\n\n".join(block), languages=[""])
        found = to_elements(raw, heading=heading, page=page)
        heading = found[-1].heading if found else heading
        elements.extend(found)
    return elements


def _msg_subject(path: Path) -> str | None:
    """An Outlook message's subject; refuse a message encrypted with S/MIME."""
    from oxmsg import Message

    message = Message.load(str(path))
    if message.message_class.upper().startswith("IPM.NOTE.SMIME") and not (
        message.message_class.upper().startswith("IPM.NOTE.SMIME.MULTIPARTSIGNED")
    ):
        raise PasswordProtected(
            "This Outlook message is encrypted (S/MIME), so it cannot be read. Open it in "
            "Outlook, forward or save an unencrypted copy, and upload that."
        )
    return clean_title(message.subject)


def _email_subject(path: Path) -> str | None:
    with path.open("rb") as stream:
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parse(stream)
    subject = headers.get("Subject")
    return clean_title(str(subject)) if subject is not None else None


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
    return clean_title(node.text) if node is not None and node.text else None


_HTML_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def _html_title(path: Path) -> str | None:
    with path.open("rb") as stream:
        head = stream.read(65536)
    match = _HTML_TITLE_RE.search(head)
    if match is None:
        return None
    return clean_title(html.unescape(match.group(1).decode("utf-8", errors="replace")))
