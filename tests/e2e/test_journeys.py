"""Journeys in a real browser against the real appliance (real models, real index).

First admin signs in and enrols; creates users and a group; a user enrols, uploads a
document, waits for "indexed", asks, sees a streamed answer whose citation opens the
passage; a user without a grant asks the same and gets no such source; the admin sees both
questions in the audit log. Every page is screenshotted into test-artifacts/screenshots/.
Any CSP violation, script error or request to another host fails the test (conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Site, shot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "How many weeks of parental leave do parents get?"
HANDBOOK = (
    "# Parental Leave\n\n"
    "Parents receive twenty weeks of paid parental leave. Leave can be split into two "
    "blocks within the child's first year.\n\n"
    "# Office Hours\n\nThe Lisbon office opens at eight and closes at six.\n"
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


def ask(page: Page, question: str) -> Any:
    """On the chat page: ask, see tokens stream (the stop button shows), wait for the end."""
    page.get_by_label("Your question").fill(question)
    page.get_by_label("Your question").press("Enter")
    expect(page.locator(".msg-user").last).to_have_text(re.compile(re.escape(question)))
    answer = page.locator(".msg-answer").last
    expect(answer.locator(".msg-actions button", has_text="Copy")).to_be_visible(timeout=120_000)
    expect(page.locator("#stop")).to_be_hidden()
    return answer


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

    # -- erin enrols, uploads, asks, opens the cited passage --------------------------------
    erin = contexts("erin").new_page()
    first_sign_in(erin, "erin", erin_otp, shots="05-user")
    handbook = tmp_path / "handbook.md"
    handbook.write_text(HANDBOOK)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    upload(erin, handbook, empty)  # two files in one go; one cannot be read
    indexed(erin, handbook)
    failed = erin.locator(".upload-item", has_text="empty.txt").locator(".upload-status")
    expect(failed).to_have_text(re.compile(r"^Failed: The file is empty\."))
    expect(erin.locator("#documents tr", has_text="handbook.md")).to_contain_text("Indexed")
    expect(erin.locator("#documents tr", has_text="empty.txt")).to_contain_text("Failed")
    erin.get_by_label("State").select_option("indexed")
    expect(erin.locator("#documents tr")).to_have_count(1)
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
    answer = ask(erin, QUESTION)
    shot(erin, "07-chat-answer")
    sources = answer.locator(".sources .source-open")
    expect(sources.first).to_contain_text("handbook.md")
    answer.locator("button.cite").first.click()
    dialog = erin.locator("#passage")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#passage-text")).to_contain_text("twenty weeks")
    expect(dialog.locator("#passage-meta")).to_contain_text("Parental Leave")
    shot(erin, "08-chat-passage")
    erin.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    answer.get_by_role("button", name="Helpful", exact=True).click()
    expect(answer.get_by_role("button", name="Helpful", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    # A follow-up, stopped as soon as it starts streaming.
    erin.get_by_label("Your question").fill("And how can the leave be split?")
    erin.get_by_label("Your question").press("Enter")
    expect(erin.locator("#stop")).to_be_visible()
    expect(erin.locator(".msg-answer").nth(1).locator(".body")).not_to_be_empty(timeout=60_000)
    erin.locator("#stop").click()
    expect(erin.locator("#chat-status")).to_contain_text("Stopped")
    expect(erin.locator("#send")).to_be_visible()
    # The server stores the stopped answer once generation has halted (a moment later).
    for _ in range(40):
        erin.reload()  # the conversation, its rendered answers and the rating come back
        expect(erin.locator(".msg-user")).to_have_count(2)
        if erin.locator(".msg-answer").count() == 2:
            break
        erin.wait_for_timeout(250)
    expect(erin.locator(".msg-answer")).to_have_count(2)
    rated = erin.locator(".msg-answer").first.get_by_role("button", name="Helpful", exact=True)
    expect(rated).to_have_attribute("aria-pressed", "true")
    expect(erin.locator(".msg-answer").first.locator("button.cite")).to_have_count(1)
    # Rename the conversation from the list.
    erin.get_by_role("button", name=re.compile("^Rename")).first.click()
    erin.get_by_label("New title").fill("Leave questions")
    erin.get_by_label("New title").press("Enter")
    expect(erin.locator("#thread-title")).to_have_text("Leave questions")
    expect(erin.locator(".conversation-open")).to_have_text(["Leave questions"])
    # Two questions at once (a second tab): the later one shows its place in the queue.
    erin.get_by_role("button", name="New", exact=True).click()
    tab = erin.context.new_page()
    tab.goto("/")
    erin.get_by_label("Your question").fill("When does the Lisbon office open?")
    tab.get_by_label("Your question").fill("When does the Lisbon office close?")
    erin.get_by_label("Your question").press("Enter")
    expect(erin.locator("#stop")).to_be_visible()
    tab.get_by_label("Your question").press("Enter")
    expect(tab.locator("#chat-status")).to_contain_text("next in line", timeout=30_000)
    shot(tab, "08b-chat-queue")
    for page in (erin, tab):
        expect(page.locator(".msg-answer .msg-actions button", has_text="Copy")).to_be_visible(
            timeout=120_000
        )
    tab.close()
    erin.reload()
    expect(erin.locator(".conversation-open")).to_have_count(3)
    erin.get_by_role("button", name="Delete “Leave questions”").click()
    erin.locator("dialog.confirm").get_by_role("button", name="Delete").click()
    expect(erin.locator(".conversation-open")).to_have_count(2)
    expect(erin.locator(".conversation-open", has_text="Leave questions")).to_have_count(0)
    erin.goto("/account")
    expect(erin.locator("#sessions tr")).to_have_count(1)
    erin.get_by_label("Current password").fill("not my password at all")
    erin.get_by_label("New password (12 or more characters)").fill("a different long passphrase")
    erin.get_by_label("New password again").fill("a different long passphrase")
    erin.get_by_role("button", name="Change password").click()
    expect(erin.locator("#pw-error")).to_be_visible()  # said here; the session stays
    expect(erin).to_have_url(re.compile("/account$"))
    shot(erin, "09-account")

    # -- sam, without a grant, asks the same and gets no such source -----------------------
    sam = contexts("sam", phone=True).new_page()
    first_sign_in(sam, "sam", sam_otp)
    sam_answer = ask(sam, QUESTION)
    expect(sam_answer).to_contain_text("could not find anything")
    expect(sam_answer.locator(".sources li")).to_have_count(0)
    expect(sam_answer).not_to_contain_text("twenty")
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
    expect(questions.filter(has_text="erin").filter(has_text="stopped")).to_have_count(1)
    expect(questions.filter(has_text="sam")).to_have_count(1)
    shot(admin, "14-admin-audit")

    # -- disabling an account ends its sessions at once ---------------------------------------
    admin.goto("/admin/users")
    admin.get_by_role("button", name="Disable: sam").click()
    expect(admin.locator('tr[data-username="sam"]')).to_contain_text("disabled")
    sam.goto("/")
    expect(sam).to_have_url(re.compile(r"/signin\?next=/$"))

    # -- signing out ends the session ---------------------------------------------------------
    admin.locator("#sign-out").click()
    admin.wait_for_url(re.compile("/signin"))
    admin.goto("/admin/users")
    expect(admin).to_have_url(re.compile(r"/signin\?next=/admin/users$"))
