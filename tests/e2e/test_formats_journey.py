"""Issue 17 item 5 in the browser: a file of every format offices use, uploaded through the
Documents page, indexed, and found by a question with its page.

The files are the real ones of tests/fixtures/formats (written by LibreOffice, or by Outlook
for the .msg); the .ppt is made from review.odp by LibreOffice, as the parser tests make it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.e2e.chat import ask, shows_evidence
from tests.e2e.conftest import Site, shot
from tests.e2e.people import sign_in
from tests.e2e.test_daily_journeys import account, final_states
from tests.fixtures.formats import fixture, make_ppt

FILES = (
    "harbour.odt",
    "ledger.ods",
    "review.odp",
    "harbour.rtf",
    "outer.msg",
    "harbour.epub",
    "harbour.doc",
    "ledger.xls",
)


def test_every_office_format_uploads_and_answers(contexts: Any, site: Site, tmp_path: Path) -> None:
    uma = account(site, "uma")
    page = contexts("uma").new_page()
    sign_in(page, uma)
    page.goto("/documents")
    expect(page.locator(".hint", has_text="OpenDocument")).to_be_visible()
    picked = [fixture(name) for name in FILES] + [make_ppt(tmp_path / "review.ppt")]
    page.locator("#files").set_input_files([str(p) for p in picked])
    final_states(page, len(picked))
    statuses = page.locator(".upload-item .upload-status")
    for i, path in enumerate(picked):
        expect(statuses.nth(i)).to_have_text(re.compile("^Indexed"), timeout=1_000)
        expect(page.locator("#documents tr", has_text=path.name)).to_have_count(1)
    shot(page, "formats-01-all-indexed")

    page.goto("/")
    answer, events = ask(page, "On which day are mooring fees for the Pelican Quay settled?")
    shows_evidence(answer, events)
    found = [p for p in events["evidence"]["passages"] if "Pelican Quay" in str(p["sentences"])]
    assert found, events["evidence"]
    # The page where the sentence stands in the document, for the formats that have pages.
    by_name = {p["filename"]: p["page"] for p in found}
    assert by_name.get("harbour.odt") == 2, by_name
    expect(answer.locator(".evidence-item", has_text="page 2").first).to_be_visible()
    shot(page, "formats-02-answer-from-odt")
