"""Answers as sanitised HTML: Markdown rendered on the server, nothing that could carry data out.

DESIGN invariant 8: an answer is built from untrusted documents, so its HTML must not run
script, load anything, or lead anywhere outside the appliance.

- Raw HTML in the Markdown is escaped and shown as text (markdown-it with ``html=False``).
- Links become inert text: the link text, then the address in parentheses, never an
  ``<a href>`` (a click or a prefetch must not send anything to another host).
- Images are dropped, replaced by their alt text in brackets (an image URL is the classic
  way to smuggle data out in a request).
- Citation markers ``[n]`` for the cited sources become buttons that open the passage;
  a sentence no passage supports is followed by a "not found in your documents" label.
- The result passes through nh3 (ammonia) with a short allow-list as a second line.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

MARKER = re.compile(r"\[(\d{1,3})\]")
UNSUPPORTED_MARK = "\ue000"  # after a sentence no passage supports (chat.claims)
UNSUPPORTED_FLAG = (
    '<span class="unsupported" title="No passage of your documents supports this sentence">'
    "not found in your documents</span>"
)

ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
    "span", "button", "s",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "span": {"class", "title"},
    "button": {"type", "class", "data-marker", "aria-label"},
    "ol": {"start"},
}  # no style attributes: the CSP refuses inline styles


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _cite_text(text: str, markers: frozenset[int]) -> str:
    """Escape text; turn the markers of cited sources into buttons, flags into labels."""
    if UNSUPPORTED_MARK in text:
        return UNSUPPORTED_FLAG.join(_cite_text(t, markers) for t in text.split(UNSUPPORTED_MARK))
    out: list[str] = []
    last = 0
    for m in MARKER.finditer(text):
        n = int(m.group(1))
        if n not in markers:
            continue
        out.append(_escape(text[last : m.start()]))
        out.append(
            f'<button type="button" class="cite" data-marker="{n}" '
            f'aria-label="Source {n}">[{n}]</button>'
        )
        last = m.end()
    out.append(_escape(text[last:]))
    return "".join(out)


class _InertRenderer(RendererHTML):
    """markdown-it's HTML renderer with inert links, no images and citation buttons."""

    def text(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        """Escaped text with citation buttons."""
        return _cite_text(tokens[idx].content, env.get("markers", frozenset()))

    def link_open(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        """A link opens as a plain span; its address is remembered for link_close."""
        href = str(tokens[idx].attrGet("href") or "")
        env.setdefault("hrefs", []).append(href)
        return f'<span class="inert-link" title="{_escape(href)}">'

    def link_close(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        """The span closes, followed by the address as text."""
        hrefs: list[str] = env.get("hrefs", [])
        href = hrefs.pop() if hrefs else ""
        return "</span>" + (f" ({_escape(href)})" if href else "")

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        """No image is ever loaded: its alt text is shown instead."""
        token = tokens[idx]
        alt = self.renderInlineAsText(token.children or [], options, env)
        return f'<span class="dropped-image">[image: {_escape(alt)}]</span>' if alt else ""


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.enable("strikethrough")
    md.renderer = _InertRenderer(md)
    return md


_MD = _markdown()


def render_answer(text: str, markers: Iterable[int] = ()) -> str:
    """Sanitised HTML for an answer; `markers` are the citation numbers that have a source."""
    env: dict[str, Any] = {"markers": frozenset(markers)}
    rendered = _MD.render(text, env)
    return nh3.clean(
        rendered,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=set(),
        link_rel=None,
        strip_comments=True,
    )
