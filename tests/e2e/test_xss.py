"""Untrusted document titles, filenames and content render inert in every page that shows them.

A document named and titled with script and onerror payloads, and containing more, is
uploaded, listed, shown as evidence for a question, checked against its answer and opened
as a passage. Nothing runs: no payload sets its marker, no dialog opens, no <img>/<script>
element appears, and (conftest.py) no CSP violation is even attempted, which would show a
payload reached the DOM as markup.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.chat import ask, checked_as_computed, shows_evidence
from tests.e2e.conftest import Site, shot
from tests.e2e.test_journeys import upload
from tests.fixtures.auth import make_user

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TITLE = "<script>window.__xss='title'</script><img src=x onerror=\"window.__xss='title-img'\">"
NAME = "\"><img src=x onerror=window.__xss=1>'.html"
BODY = [
    "The canteen serves lentil soup on Fridays.",
    "<img src=x onerror=\"window.__xss='body-img'\">",
    "<script>window.__xss='body-script'</script>",
    "<svg onload=\"window.__xss='svg'\"></svg>",
    "[click](javascript:window.__xss='link') ![x](https://evil.example/p.png)",
]


def payload_page(path: Path) -> None:
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in BODY)
    path.write_text(
        f"<html><head><title>{html.escape(TITLE)}</title></head>"
        f"<body><h1>Canteen</h1>{paragraphs}</body></html>"
    )


def assert_inert(page: Page, dialogs: list[str]) -> None:
    assert page.evaluate("() => window.__xss") is None
    assert dialogs == []
    assert page.locator("main img, main script, main svg, main iframe").count() == 0


def test_document_payloads_render_inert(contexts: Any, site: Site, tmp_path: Path) -> None:
    with site.rt.sessions() as session:
        account = make_user(session, site.rt.crypto, username="mallory")
    page = contexts("mallory").new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto("/signin")
    page.get_by_label("Username").fill("mallory")
    page.get_by_label("Password", exact=True).fill(account.password)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Code", exact=True).fill(pyotp.TOTP(account.secret).now())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/(\?.*)?$"))

    doc = tmp_path / NAME
    payload_page(doc)
    upload(page, doc)
    row = page.locator("#documents tr").first
    expect(row.locator(".doc-title")).to_have_text(TITLE)  # shown as text, character for character
    # Chromium sends a filename's '"' as %22 in multipart (HTML spec); the rest arrives as is.
    expect(row.locator(".doc-file")).to_contain_text("><img src=x onerror=window.__xss=1>'.html")
    row.get_by_role("button", name="Access").click()
    expect(page.locator("#access-title")).to_have_text(f"Access: {TITLE}")
    shot(page, "20-xss-documents")
    assert_inert(page, dialogs)
    page.get_by_role("button", name="Close").click()

    page.goto("/")
    answer, events = ask(page, "What does the canteen serve on Fridays?")
    # The evidence panel shows the payload title and sentences as text, and so does the
    # answer with its computed citations and flags.
    shows_evidence(answer, events)
    expect(answer.locator(".evidence-item").first.locator(".evidence-doc")).to_have_text(TITLE)
    checked_as_computed(page, answer, events)
    assert_inert(page, dialogs)
    answer.get_by_role("button", name="Open passage 1").click()
    passage = page.locator("#passage-text")
    expect(passage).to_contain_text("<img src=x onerror=")
    expect(passage).to_contain_text("<script>window.__xss='body-script'</script>")
    expect(page.locator("#passage-title")).to_contain_text(TITLE)
    shot(page, "21-xss-passage")
    assert_inert(page, dialogs)
    page.keyboard.press("Escape")
    page.reload()  # the stored conversation renders through the same sanitiser
    expect(page.locator(".msg-answer")).to_have_count(1)
    assert_inert(page, dialogs)
