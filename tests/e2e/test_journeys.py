"""Journeys in a real browser against the real appliance (real models, real index).

First admin signs in and enrols; creates users and a group; a user enrols, uploads
documents, waits for "indexed", asks, sees the evidence ("From your documents") before the
answer streams, the answer's computed citations open the passage of their evidence rank,
and sentences no passage supports are flagged; a user without a grant asks the same and
gets no evidence at all; the admin sees the questions in the audit log. Every page is
screenshotted into test-artifacts/screenshots/. Any CSP violation, script error or request
to another host fails the test (conftest.py).

The model is the real SmolLM2-135M and writes what it writes: the assertions compare what
the page shows with what the server computed for that answer (the `evidence` and `done`
events of the same request), so they hold for any answer and fail when the page drops
the evidence, opens the wrong passage or leaves an unsupported sentence unflagged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select

from appliance.audit.tables import AuditEvent
from appliance.auth.tables import User
from tests.e2e.chat import (
    WATCH_ANSWER,
    ask,
    chat_events,
    checked_as_computed,
    evidence_came_first,
    highlights,
    no_horizontal_scroll,
    opens_passage,
    passage_of,
    shows_evidence,
    tap_chat,
)
from tests.e2e.conftest import Site, shot, shot_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# With the documents below the bundled model answers this with a sentence the appliance
# verifies against the handbook (a citation to evidence rank 1), and it adds one no passage
# supports (flagged); visitors.md is a second, weaker match (evidence rank 2).
QUESTION = "When does the Lisbon office open?"
FACT = "The Lisbon office opens at eight and closes at six."
HANDBOOK = (
    "# Staff Handbook\n\n## Parental Leave\n\n"
    "Parents receive twenty weeks of paid parental leave. Leave can be split into two "
    "blocks within the child's first year.\n\n"
    "## Office Hours\n\nThe Lisbon office opens at eight and closes at six. "
    "On Fridays it closes at four.\n\n"
    "## Parking\n\nVisitors park on level minus two of the garage. "
    "Staff park on level minus one.\n\n"
    "## Laptops\n\nLaptops use full disk encryption and lock after five minutes without use. "
    "A lost laptop must be reported to the service desk within one hour.\n"
)
VISITORS = (
    "# Visiting the Lisbon office\n\nVisitors sign in at the reception desk on the ground "
    "floor. The reception is staffed from nine to five. Guests wear a badge at all times.\n"
)
NEW_PASSWORD = "a lantern in the orchard at dusk"


def first_sign_in(page: Page, username: str, one_time: str, shots: str | None = None) -> str:
    """Sign in with a one-time password, enrol TOTP (code computed from the page's secret),
    keep the recovery codes, choose a password; returns the TOTP secret."""
    page.goto("/signin")
    if shots:
        shot(page, f"{shots}-signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(one_time)
    page.get_by_role("button", name="Continue").click()
    secret_box = page.locator("#enrol-secret")
    expect(secret_box).to_be_visible()
    expect(page.locator("#enrol-qr")).to_be_visible()
    secret = (secret_box.text_content() or "").strip()
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
    if shots:
        shot(page, f"{shots}-enrol")
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    if shots:
        shot(page, f"{shots}-recovery-codes")
    page.get_by_role("button", name="I have stored them").click()
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    if shots:
        shot(page, f"{shots}-new-password")
    page.get_by_role("button", name="Save password").click()
    page.wait_for_url(re.compile(r"/(\?.*)?$"))
    expect(page.locator("#sign-out")).to_be_visible()
    return secret


def create_user(page: Page, username: str) -> str:
    """As an admin on /admin/users: create an account; returns its one-time password."""
    page.goto("/admin/users")
    page.get_by_label("New username").fill(username)
    page.get_by_role("button", name="Create user").click()
    secret = page.locator("#one-time-password")
    expect(secret).not_to_be_empty()
    password = (secret.text_content() or "").strip()
    expect(page.locator(f'tr[data-username="{username}"]')).to_be_visible()
    page.get_by_role("button", name="Done").click()
    return password


def upload(page: Page, *paths: Path) -> None:
    """On /documents: upload files at once and wait until each is indexed or failed."""
    page.goto("/documents")
    page.locator("#files").set_input_files([str(p) for p in paths])
    for path in paths:
        item = page.locator(".upload-item", has_text=path.name)
        expect(item.locator(".upload-status")).to_have_text(
            re.compile("^(Indexed|Failed)"), timeout=120_000
        )


def indexed(page: Page, path: Path) -> None:
    """The upload of this file ended indexed."""
    status = page.locator(".upload-item", has_text=path.name).locator(".upload-status")
    expect(status).to_have_text(re.compile("^Indexed"))


def test_admin_and_users_journey(contexts: Any, site: Site, tmp_path: Path) -> None:
    # -- the first admin signs in, enrols, creates two users and a group -----------------
    admin = contexts("admin").new_page()
    first_sign_in(admin, "admin", site.admin_password, shots="01-admin")
    shot(admin, "02-chat-empty")
    erin_otp = create_user(admin, "erin")
    sam_otp = create_user(admin, "sam")
    shot(admin, "03-admin-users")
    admin.goto("/admin/groups")
    admin.get_by_label("New group").fill("staff")
    admin.get_by_role("button", name="Create group").click()
    group = admin.locator('section.group[data-name="staff"]')
    expect(group).to_be_visible()
    group.get_by_label("Add member").select_option(label="erin")
    group.get_by_role("button", name="Add", exact=True).click()
    expect(group.locator(".members")).to_contain_text("erin")
    shot(admin, "04-admin-groups")

    # -- erin enrols, uploads, asks; the evidence comes first, the citations are computed ---
    erin = contexts("erin").new_page()
    first_sign_in(erin, "erin", erin_otp, shots="05-user")
    handbook = tmp_path / "handbook.md"
    handbook.write_text(HANDBOOK)
    visitors = tmp_path / "visitors.md"
    visitors.write_text(VISITORS)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    upload(erin, handbook, visitors, empty)  # three files in one go; one cannot be read
    indexed(erin, handbook)
    indexed(erin, visitors)
    failed = erin.locator(".upload-item", has_text="empty.txt").locator(".upload-status")
    expect(failed).to_have_text(re.compile(r"^Failed: The file is empty\."))
    expect(erin.locator("#documents tr", has_text="handbook.md")).to_contain_text("Indexed")
    expect(erin.locator("#documents tr", has_text="empty.txt")).to_contain_text("Failed")
    erin.get_by_label("State").select_option("indexed")
    expect(erin.locator("#documents tr")).to_have_count(2)
    shot(erin, "06-documents")
    # The access dialog of a document she manages: grants, classification, retention.
    row = erin.locator("#documents tr", has_text="handbook.md")
    row.get_by_role("button", name="Access").click()
    expect(erin.locator("#grants")).to_contain_text("can manage")
    expect(erin.locator("#retention-state")).to_contain_text("classification's retention period")
    erin.get_by_label("Keep until").fill("2031-05-01")
    erin.get_by_role("button", name="Save date").click()
    expect(erin.locator("#retention-state")).to_contain_text("after")
    shot(erin, "06b-documents-access")
    erin.get_by_role("button", name="Use the classification's period").click()
    expect(erin.locator("#retention-state")).to_contain_text("classification's retention period")
    erin.get_by_role("button", name="Close").click()
    erin.goto("/")
    answer, events = ask(erin, QUESTION)
    evidence_came_first(erin)
    shows_evidence(answer, events)
    # The handbook's office-hours passage leads, its answering sentence highlighted; the
    # visitors' page is a second document further down.
    first = answer.locator('.evidence-item[data-rank="1"]')
    expect(first.locator(".evidence-doc")).to_have_text("Staff Handbook")
    expect(first.locator(".evidence-loc")).to_have_text("handbook.md · Office Hours")
    expect(first.locator("mark").first).to_have_text(FACT)
    expect(answer.locator(".evidence-item", has_text="visitors.md")).to_have_count(1)
    expect(answer.locator(".evidence-summary")).to_contain_text("in 2 documents")
    # The model's sentence that repeats the fact is verified: a citation to rank 1.
    assert not events["done"]["abstained"], events["done"]
    expect(answer.locator('.body button.cite[data-marker="1"]')).not_to_have_count(0)
    shot(erin, "07-chat-answer")
    shot_of(answer, "07a-chat-answer-evidence")
    checked_as_computed(erin, answer, events)
    outcomes = [events["done"]]
    # Folded context opens in place; "Open passage" opens any rank, cited or not.
    expect(first.locator(".evidence-context")).to_be_hidden()
    first.get_by_role("button", name="Show more").click()
    expect(first.locator(".evidence-context")).to_have_text("On Fridays it closes at four.")
    shot_of(first, "07b-chat-passage-expanded")
    first.get_by_role("button", name="Show less").click()
    expect(first.locator(".evidence-context")).to_be_hidden()
    other = passage_of(events, 2)
    opens_passage(erin, answer.get_by_role("button", name="Open passage 2"), other)
    answer.locator('.body button.cite[data-marker="1"]').first.click()
    expect(erin.locator("#passage-text mark").first).to_have_text(FACT)
    expect(erin.locator("#passage-hint")).to_be_visible()
    shot(erin, "08-chat-passage")
    erin.keyboard.press("Escape")
    expect(erin.locator("#passage")).to_be_hidden()
    # The same answer on a phone: nothing wider than the screen.
    erin.set_viewport_size({"width": 390, "height": 844})
    no_horizontal_scroll(erin)
    shot(erin, "08a-chat-answer-phone")
    erin.set_viewport_size({"width": 1280, "height": 900})
    answer.get_by_role("button", name="Helpful", exact=True).click()
    expect(answer.get_by_role("button", name="Helpful", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    # A follow-up, stopped as soon as its evidence shows (the model is still reading the
    # prompt, so the stop lands before the answer can end by itself): its evidence stays.
    erin.get_by_label("Your question").fill("And how many weeks of parental leave do parents get?")
    erin.get_by_label("Your question").press("Enter")
    expect(erin.locator("#stop")).to_be_visible()
    follow_up = erin.locator(".msg-answer").nth(1)
    expect(follow_up.locator("section.evidence")).to_be_visible()
    erin.locator("#stop").click()
    expect(erin.locator("#chat-status")).to_contain_text("Stopped")
    expect(erin.locator("#send")).to_be_visible()
    expect(follow_up.locator(".evidence-item mark", has_text="twenty weeks")).to_have_count(1)
    # The server stores the stopped answer once generation has halted (a moment later).
    for _ in range(40):
        erin.reload()  # the conversation, its rendered answers, evidence and rating come back
        expect(erin.locator(".msg-user")).to_have_count(2)
        if erin.locator(".msg-answer").count() == 2:
            break
        erin.wait_for_timeout(250)
    expect(erin.locator(".msg-answer")).to_have_count(2)
    stored = erin.locator(".msg-answer").first
    rated = stored.get_by_role("button", name="Helpful", exact=True)
    expect(rated).to_have_attribute("aria-pressed", "true")
    # Stored evidence: every passage again, with only its highlighted sentences.
    expect(stored.locator(".evidence-item")).to_have_count(len(events["evidence"]["passages"]))
    for p in events["evidence"]["passages"]:
        item = stored.locator(f'.evidence-item[data-rank="{p["rank"]}"]')
        expect(item.locator("mark")).to_have_text(highlights(p))
        expect(item.locator(".evidence-context")).to_have_count(0)
    cited = events["done"]["html"].count('class="cite"')
    assert cited >= 1
    expect(stored.locator(".body button.cite")).to_have_count(cited)
    expect(stored.locator(".body .unsupported")).to_have_count(
        events["done"]["html"].count('class="unsupported"')
    )
    stored.locator('.body button.cite[data-marker="1"]').first.click()
    # The full passage comes from the server: the sentence not stored with the answer too.
    expect(erin.locator("#passage-text")).to_contain_text("On Fridays it closes at four.")
    expect(erin.locator("#passage-text mark").first).to_have_text(FACT)
    erin.keyboard.press("Escape")
    expect(
        erin.locator(".msg-answer").nth(1).locator(".evidence-item mark", has_text="twenty weeks")
    ).to_have_count(1)
    shot_of(stored, "08c-chat-reloaded-evidence")
    # Rename the conversation from the list.
    erin.get_by_role("button", name=re.compile("^Actions for")).first.click()
    erin.get_by_role("menuitem", name=re.compile("^Rename")).click()
    erin.get_by_label("New title").fill("Office questions")
    erin.get_by_label("New title").press("Enter")
    expect(erin.locator("#thread-title")).to_have_text("Office questions")
    expect(erin.locator(".conversation-open")).to_have_text(["Office questions"])
    # Two questions at once (a second tab): the later one shows its place in the queue.
    erin.get_by_role("button", name="New", exact=True).click()
    tab = erin.context.new_page()
    tab.goto("/")
    tab.evaluate(WATCH_ANSWER, 0)
    erin.get_by_label("Your question").fill("Where do visitors sign in?")
    tab.get_by_label("Your question").fill("How many weeks of parental leave do parents get?")
    queued = tap_chat(tab)
    erin.get_by_label("Your question").press("Enter")
    expect(erin.locator("#stop")).to_be_visible()
    tab.get_by_label("Your question").press("Enter")
    expect(tab.locator("#chat-status")).to_contain_text("place 2 in the queue", timeout=30_000)
    expect(tab.locator(".msg-answer section.evidence")).to_be_visible()
    shot(tab, "08b-chat-queue")
    for page in (erin, tab):
        expect(page.locator(".msg-answer .msg-actions button", has_text="Copy")).to_be_visible(
            timeout=120_000
        )
    evidence_came_first(tab)
    leave = chat_events(tab, queued)
    leave_answer = tab.locator(".msg-answer").last
    shows_evidence(leave_answer, leave)
    # Whatever the model made of it, the fact is in front of the asker, highlighted.
    expect(leave_answer.locator('.evidence-item[data-rank="1"] mark').first).to_have_text(
        "Parents receive twenty weeks of paid parental leave."
    )
    shot_of(leave_answer, "08d-chat-answer-checked")
    checked_as_computed(tab, leave_answer, leave)
    outcomes.append(leave["done"])
    # The model is real: what it writes is not asserted, but this journey must have shown
    # at least one answer sentence flagged, or an honest "do not clearly answer".
    assert any(d["unsupported"] or d["abstained"] for d in outcomes), outcomes
    tab.close()
    erin.reload()
    expect(erin.locator(".conversation-open")).to_have_count(3)
    erin.get_by_role("button", name="Actions for “Office questions”").click()
    erin.get_by_role("menuitem", name="Delete “Office questions”").click()
    erin.locator("dialog.confirm").get_by_role("button", name="Delete").click()
    expect(erin.locator(".conversation-open")).to_have_count(2)
    expect(erin.locator(".conversation-open", has_text="Office questions")).to_have_count(0)
    erin.goto("/account")
    expect(erin.locator("#sessions tr")).to_have_count(1)
    erin.get_by_label("Current password").fill("not my password at all")
    erin.get_by_label("New password (12 or more characters)").fill("a different long passphrase")
    erin.get_by_label("New password again").fill("a different long passphrase")
    erin.get_by_role("button", name="Change password").click()
    expect(erin.locator("#pw-error")).to_be_visible()  # said here; the session stays
    expect(erin).to_have_url(re.compile("/account$"))
    shot(erin, "09-account")

    # -- sam, without a grant, asks the same and gets no evidence, no source ---------------
    sam = contexts("sam", phone=True).new_page()
    first_sign_in(sam, "sam", sam_otp)
    sam_answer, sam_events = ask(sam, QUESTION)
    assert sam_events["evidence"]["passages"] == []
    expect(sam_answer).to_contain_text("could not find anything")
    expect(sam_answer.locator("section.evidence")).to_have_count(0)
    expect(sam_answer.locator("button.cite")).to_have_count(0)
    expect(sam_answer).not_to_contain_text("eight")
    no_horizontal_scroll(sam)
    shot(sam, "10-chat-phone-no-source")
    sam.goto("/admin/users")
    expect(sam.get_by_role("heading", name="Not for this account")).to_be_visible()

    # -- the admin's other pages ------------------------------------------------------------
    admin.goto("/admin/approvals")
    expect(admin.get_by_role("heading", name="Approvals inbox")).to_be_visible()
    shot(admin, "11-admin-approvals")
    admin.goto("/admin/retention")
    expect(admin.locator("#policies tr").first).to_be_visible()
    shot(admin, "12-admin-retention")
    admin.goto("/admin/system")
    expect(admin.locator("body")).to_contain_text("smollm2")
    expect(admin.locator("tr", has_text="smollm2")).to_contain_text("file matches")
    # The kill switch: pause answering; sam's question gets a message saying what happened.
    admin.get_by_label("Pause answering").check()
    admin.get_by_label("Reason (shown to other admins)").fill("model upgrade")
    admin.get_by_role("button", name="Apply").click()
    expect(admin.locator("#switches")).to_contain_text("ON")
    shot(admin, "13-admin-system")
    sam.goto("/")
    sam.get_by_label("Your question").fill("Anything new?")
    sam.get_by_label("Your question").press("Enter")
    expect(sam.locator("#chat-error")).to_contain_text("paused")
    expect(sam.get_by_label("Your question")).to_have_value("Anything new?")  # kept to resend
    shot(sam, "13b-chat-paused")
    admin.get_by_label("Pause answering").uncheck()
    admin.get_by_role("button", name="Apply").click()
    expect(admin.locator("#switches")).not_to_contain_text("ON")

    # -- the admin sees both questions in the audit log -------------------------------------
    admin.goto("/admin/audit")
    admin.get_by_label("Action").fill("chat")
    admin.get_by_role("button", name="Search").click()
    questions = admin.locator('#audit-entries tr[data-action="chat.answer"]')
    expect(questions).to_have_count(5)  # erin's four (one stopped) and sam's
    expect(questions.filter(has_text="erin")).to_have_count(4)
    # Stop races the real model: a short answer can be complete on the server before the
    # click arrives (then it is stored, and audited, as whole). The page must show what the
    # server recorded; test_chat_stop_http proves with a slow generator that a stop that
    # lands is stored and audited as stopped.
    with site.rt.sessions() as s:
        erin_id = s.execute(select(User.id).where(User.username == "erin")).scalar_one()
        recorded = s.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.actor == f"user:{erin_id}",
                AuditEvent.action == "chat.answer",
                AuditEvent.outcome == "stopped",
            )
        ).scalar_one()
    assert recorded in (0, 1)
    expect(questions.filter(has_text="erin").filter(has_text="stopped")).to_have_count(recorded)
    expect(questions.filter(has_text="sam")).to_have_count(1)
    shot(admin, "14-admin-audit")

    # -- disabling an account ends its sessions at once ---------------------------------------
    admin.goto("/admin/users")
    admin.get_by_role("button", name="Disable: sam").click()
    admin.get_by_role("dialog").get_by_role("button", name="Disable").click()
    expect(admin.locator('tr[data-username="sam"]')).to_contain_text("disabled")
    sam.goto("/")
    expect(sam).to_have_url(re.compile(r"/signin\?next=/$"))

    # -- signing out ends the session ---------------------------------------------------------
    admin.locator("#sign-out").click()
    admin.wait_for_url(re.compile("/signin"))
    admin.goto("/admin/users")
    expect(admin).to_have_url(re.compile(r"/signin\?next=/admin/users$"))
