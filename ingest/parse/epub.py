"""EPUB e-books: the chapters in reading order (the OPF spine), each read as HTML.

An EPUB is reflowable: it has no pages, so its elements have none.
"""

from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ingest.errors import PasswordProtected
from ingest.parse.detect import EPUB
from ingest.parse.elements import Element, ParsedDocument, clean_title, parse_xml
from ingest.parse.office import to_elements

_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF = "{http://www.idpf.org/2007/opf}"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_CHAPTER_TYPES = frozenset({"application/xhtml+xml", "text/html"})


def parse_epub(path: Path) -> ParsedDocument:
    """Read an EPUB's chapters in spine order; DRM-encrypted books are refused."""
    from unstructured.partition.html import partition_html

    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "META-INF/encryption.xml" in names and _encrypts_content(
            archive.read("META-INF/encryption.xml")
        ):
            raise PasswordProtected(
                "This e-book is protected with DRM (its chapters are encrypted), so it cannot "
                "be read. Upload a copy without DRM, or the document it was made from."
            )
        container = parse_xml(archive.read("META-INF/container.xml"))
        rootfile = container.find(f".//{_CONTAINER}rootfile")
        if rootfile is None or not rootfile.get("full-path"):
            raise ValueError("the EPUB names no package document")
        opf_path = str(rootfile.get("full-path"))
        package = parse_xml(archive.read(opf_path))
        base = posixpath.dirname(opf_path)

        manifest = {
            item.get("id"): item for item in package.iter(f"{_OPF}item") if item.get("href")
        }
        elements: list[Element] = []
        heading: str | None = None
        for itemref in package.iter(f"{_OPF}itemref"):
            item = manifest.get(itemref.get("idref"))
            if item is None or item.get("media-type") not in _CHAPTER_TYPES:
                continue
            member = posixpath.normpath(posixpath.join(base, unquote(str(item.get("href")))))
            if member not in names:
                continue
            html = archive.read(member).decode("utf-8", errors="replace")
            found = to_elements(partition_html(text=html, languages=[""]), heading=heading)
            if found:
                heading = found[-1].heading  # a chapter goes on under the last heading
            elements.extend(found)

    title_node = package.find(f".//{_DC_TITLE}")
    title = clean_title(title_node.text if title_node is not None else None)
    if title is None:
        title = clean_title(next((e.text for e in elements if e.category == "Title"), None))
    return ParsedDocument(elements=elements, pages=1, title=title, mime_type=EPUB)


def _encrypts_content(data: bytes) -> bool:
    """True unless encryption.xml only obfuscates fonts (which EPUB allows without DRM)."""
    root: Any = parse_xml(data)
    methods = {
        node.get("Algorithm", "")
        for node in root.iter("{http://www.w3.org/2001/04/xmlenc#}EncryptionMethod")
    }
    font_obfuscation = {
        "http://www.idpf.org/2008/embedding",
        "http://ns.adobe.com/pdf/enc#RC",
    }
    return bool(methods - font_obfuscation)
