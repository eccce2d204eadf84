"""Daily use in a real browser (issue 17, items 1-4 and 12-14), against the real appliance.

A user in group hr uploads files picked together (shown and stored in the order picked;
the failed one offers Retry and Remove), picks the same file twice (both rows end, polling
stops), re-uploads a file with new sharing and a classification (told it is already in the
library, applies the new sharing to it), shares with a bare group name from the picker and
sees "Shared with" by name; the person it was shared with sees only their own way in. In
the chat, a pasted question over the limit is counted and refused (nothing sent), the box
grows, the conversation list has dates, day groups and a "…" menu per row, and does not
say "No conversations yet" while the first answer streams. At sign-in a wrong code says
so and the box is cleared; the authenticator key shows in groups of four; recovery codes
can be printed and downloaded; the account page creates and revokes API tokens and makes
new recovery codes. Accounts are made in the instance's database (the first admin's
one-time password belongs to tests/e2e/test_journeys.py). Screenshots go to
test-artifacts/screenshots/daily-*.png.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from appliance.auth.tables import Group, GroupMember
from appliance.documents import service as docs
from appliance.documents.tables import Document
from tests.e2e.conftest import SCREENSHOTS, Site, shot, shot_of
from tests.e2e.people import sign_in
from tests.fixtures.auth import Account, make_user

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EMPTY_FAILED = re.compile(r"^Failed: The file is empty\.")


def account(
    site: Site, username: str, *, group: str | None = None, enrolled: bool = True
) -> Account:
    """An account made in the instance's database (and its membership of `group`)."""
    with site.rt.sessions() as s:
        made = make_user(s, site.rt.crypto, username=username, enrolled=enrolled)
        if group is not None:
            g = s.execute(select(Group).where(Group.name == group)).scalar_one_or_none()
            if g is None:
                g = Group(name=group)
                s.add(g)
                s.flush()
            s.add(GroupMember(group_id=g.id, user_id=made.user.id))
            s.commit()
        return made


def final_states(page: Page, count: int) -> None:
    """Every upload row has ended: indexed, already in the library, or failed."""
    statuses = page.locator(".upload-item .upload-status")
    expect(statuses).to_have_count(count)
    for i in range(count):
        expect(statuses.nth(i)).to_have_text(
            re.compile("^(Indexed|Already in your library|Failed|Not uploaded)"), timeout=120_000
        )


def requests_to(page: Page, during_ms: int, path: str) -> int:
    """How many requests the page sends to `path` in the next `during_ms` milliseconds."""
    seen: list[str] = []

    def note(request: Any) -> None:
        if path in request.url:
            seen.append(request.url)

    page.on("request", note)
    page.wait_for_timeout(during_ms)
    page.remove_listener("request", note)
    return len(seen)


def test_uploads_sharing_and_the_library(contexts: Any, site: Site, tmp_path: Path) -> None:
    hana = account(site, "hana", group="hr")
    ivo = account(site, "ivo")
    page = contexts("hana").new_page()
    sign_in(page, hana)
    page.goto("/documents")
    # The sharing picker offers existing names (names only), groups and users alike.
    expect(page.locator('#principal-options option[value="hr"]')).to_have_count(1)
    expect(page.locator('#principal-options option[value="ivo"]')).to_have_count(1)

    # -- files picked together: shown and stored in the order picked; one fails -------------
    picked = []
    for name, text in (
        ("zeta-minutes.md", "# Zeta minutes\n\nThe board met on Monday about the harbour.\n"),
        ("alpha-rota.md", "# Alpha rota\n\nNight shifts rotate every second Thursday.\n"),
        ("mid-budget.md", "# Mid budget\n\nThe canteen budget grows by four percent.\n"),
        ("empty.txt", ""),
    ):
        path = tmp_path / name
        path.write_text(text)
        picked.append(path)
    page.locator("#files").set_input_files([str(p) for p in picked])
    expect(page.locator(".upload-item .upload-name")).to_have_text([p.name for p in picked])
    final_states(page, 4)
    with site.rt.sessions() as s:
        stored = s.execute(
            select(Document).where(Document.owner_id == hana.user.id).order_by(Document.created_at)
        ).scalars()
        names = [docs.filename_of(site.rt.crypto, d) for d in stored]
    assert names == [p.name for p in picked]
    failed = page.locator(".upload-item", has_text="empty.txt")
    expect(failed.locator(".upload-status")).to_have_text(EMPTY_FAILED)
    expect(failed.get_by_role("button", name="Retry empty.txt")).to_be_visible()
    expect(failed.get_by_role("button", name="Remove empty.txt")).to_be_visible()
    shot(page, "daily-01-uploads-in-order")
    # Retry: nothing was kept of an empty file, so the page sends the picked file again.
    first_try = failed.get_attribute("data-doc-id")
    assert first_try
    failed.get_by_role("button", name="Retry empty.txt").click()
    expect(failed).not_to_have_attribute("data-doc-id", first_try)
    expect(failed.locator(".upload-status")).to_have_text(EMPTY_FAILED)
    expect(page.locator("#documents tr", has_text="empty.txt")).to_have_count(1)
    failed.get_by_role("button", name="Remove empty.txt").click()
    expect(page.locator(".upload-item", has_text="empty.txt")).to_have_count(0)
    expect(page.locator("#documents tr", has_text="empty.txt")).to_have_count(0)

    # -- the same file chosen twice quickly: both rows end, then polling stops -------------
    twice = tmp_path / "twice.md"
    twice.write_text("# Twice\n\nThe lift on floor three is serviced in June.\n")
    page.locator("#files").set_input_files(str(twice))
    page.locator("#files").set_input_files(str(twice))
    final_states(page, 5)
    rows = page.locator(".upload-item", has_text="twice.md").locator(".upload-status")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_text(re.compile("^Indexed"))
    expect(rows.nth(1)).to_have_text(re.compile("^Already in your library as “(Twice|twice.md)”"))
    page.wait_for_timeout(2000)  # a last look at the library may still be under way
    assert requests_to(page, 4000, "/api/documents") == 0, "still polling after every row ended"

    # -- a re-upload with new sharing and a classification: told, then applied -------------
    page.locator("#upload-classification").select_option("confidential")
    page.get_by_label("Who else may read them").fill("ivo")
    page.get_by_label("Who else may read them").press("Enter")
    expect(page.locator("#upload-share li")).to_have_text(["ivo×"])
    page.locator("#files").set_input_files(str(picked[1]))
    final_states(page, 6)
    again = page.locator(".upload-item").last
    expect(again.locator(".upload-status")).to_have_text(
        re.compile("^Already in your library as “Alpha rota”.*its sharing and classification")
    )
    expect(again.get_by_role("button", name="Upload as a new version")).to_be_visible()
    shot(page, "daily-02-duplicate-offer")
    again.get_by_role("button", name="Apply the new sharing and classification to it").click()
    expect(again.locator(".upload-status")).to_have_text(
        "“Alpha rota”: ivo: may read it now; classification is now confidential."
    )
    alpha = page.locator("#documents tr", has_text="alpha-rota.md")
    expect(alpha.locator("td.shared")).to_have_text("ivo")
    expect(alpha).to_contain_text("confidential")

    # -- sharing with a bare group name in the access dialog; "Shared with" by name --------
    mid = page.locator("#documents tr", has_text="mid-budget.md")
    expect(mid.locator("td.shared")).to_have_text("Only you")
    mid.get_by_role("button", name="Access").click()
    page.get_by_label("Add", exact=True).fill("hr")
    page.get_by_role("button", name="Grant").click()
    expect(page.locator("#access-notice")).to_have_text("hr now has access.")
    expect(page.locator("#grants")).to_contain_text("group:hr")
    page.get_by_role("button", name="Close").click()
    expect(mid.locator("td.shared")).to_have_text("hr (group)")
    shot(page, "daily-03-shared-with")

    # -- the person it was shared with sees only their own way in --------------------------
    other = contexts("ivo").new_page()
    sign_in(other, ivo)
    other.goto("/documents")
    row = other.locator("#documents tr", has_text="alpha-rota.md")
    expect(row.locator("td.shared")).to_have_text("you")
    expect(other.locator("#documents tr")).to_have_count(1)
    shot(other, "daily-04-shared-with-reader")


LONG = "Quarterly figures for the Lisbon office follow in full. " * 80


def test_chat_question_box_and_conversation_list(contexts: Any, site: Site) -> None:
    kai = account(site, "kai")
    page = contexts("kai").new_page()
    # A wrong code after the right password: said so, and the box is empty for the next one.
    page.goto("/signin")
    page.get_by_label("Username").fill(kai.username)
    page.get_by_label("Password", exact=True).fill(kai.password)
    page.get_by_role("button", name="Continue").click()
    code = page.get_by_label("Code", exact=True)
    right = pyotp.TOTP(kai.secret).now()
    code.fill(f"{(int(right) + 1) % 1_000_000:06d}")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text(re.compile("^The code was wrong"))
    expect(code).to_have_value("")
    expect(code).to_be_focused()
    shot(page, "daily-05-signin-wrong-code")
    code.fill(right)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/(\?.*)?$"))

    # -- a pasted question over the limit: counted, refused, kept, nothing sent -------------
    box = page.get_by_label("Your question")
    expect(page.locator("#conversations-empty")).to_be_visible()
    height = box.bounding_box()["height"]  # type: ignore[index]
    pasted = LONG + "So when does the Lisbon office open on Fridays?"
    assert len(pasted) > 4000
    box.fill(pasted)
    counter = page.locator("#question-count")
    expect(counter).to_contain_text(f"{len(pasted):,} / 4,000 characters")
    expect(counter).to_contain_text("too many")
    assert box.bounding_box()["height"] > height * 2  # type: ignore[index]
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/api/chat") else None)
    box.press("Enter")
    expect(page.locator("#chat-error")).to_contain_text("at most 4,000 can be sent")
    expect(box).to_have_value(pasted)  # the question at its end is not lost
    assert sent == []
    shot(page, "daily-06-chat-too-long")

    # -- the first question: the list never says "No conversations yet" meanwhile ----------
    box.fill("Where do visitors park?")
    expect(counter).to_be_hidden()
    page.evaluate("""() => {
      window.__emptyShown = false;
      const empty = document.getElementById("conversations-empty");
      new MutationObserver(() => { if (!empty.hidden) window.__emptyShown = true; })
        .observe(empty, { attributes: true });
    }""")
    box.press("Enter")
    expect(page.locator("#conversations-empty")).to_be_hidden()
    expect(page.locator(".msg-answer .msg-actions button", has_text="Copy")).to_be_visible(
        timeout=120_000
    )
    assert page.evaluate("window.__emptyShown") is False
    item = page.locator(".conv-item")
    expect(item).to_have_count(1)
    expect(page.locator(".conv-day")).to_have_text(["Today"])
    expect(item.locator("time")).to_have_text(re.compile(r"\d{1,2}:\d{2}"))

    # -- one "…" menu per row, with named items; rename and delete through it -------------
    expect(item.get_by_role("button", name=re.compile("^Rename"))).to_have_count(0)
    menu_button = item.get_by_role("button", name="Actions for “Where do visitors park?”")
    menu_button.click()
    expect(menu_button).to_have_attribute("aria-expanded", "true")
    menu = page.get_by_role("menu")
    expect(menu.get_by_role("menuitem", name="Rename “Where do visitors park?”")).to_be_focused()
    shot_of(page.locator("#conversations"), "daily-07-conversation-menu")
    page.keyboard.press("ArrowDown")
    expect(menu.get_by_role("menuitem", name="Delete “Where do visitors park?”")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("menu")).to_have_count(0)
    expect(menu_button).to_be_focused()
    menu_button.click()
    page.get_by_role("menuitem", name=re.compile("^Rename")).click()
    page.get_by_label("New title").fill("Parking")
    page.get_by_label("New title").press("Enter")
    expect(page.locator(".conversation-open")).to_have_text(["Parking"])
    shot(page, "daily-08-chat-list")
    page.get_by_role("button", name="Actions for “Parking”").click()
    page.get_by_role("menuitem", name="Delete “Parking”").click()
    page.locator("dialog.confirm").get_by_role("button", name="Delete").click()
    expect(page.locator(".conv-item")).to_have_count(0)
    expect(page.locator("#conversations-empty")).to_be_visible()

    # -- the account page: API tokens and new recovery codes -------------------------------
    page.goto("/account")
    expect(page.locator("#tokens-empty")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("nightly report")
    page.get_by_label("Expires after (days)").fill("7")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#token-secret")).to_have_text(re.compile(r"^apl_"))
    token_row = page.locator("#tokens tr", has_text="nightly report")
    expect(token_row).to_contain_text("read")
    expect(token_row).to_contain_text("active")
    page.get_by_label("or your password").fill(kai.password)
    page.get_by_role("button", name="Make new recovery codes").click()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    expect(page.locator("#me-recovery")).to_have_text("10")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download as a text file").click()
    saved = Path(download.value.path()).read_text()
    for code_text in page.locator("#recovery-codes code").all_text_contents():
        assert code_text in saved
    expect(page.get_by_role("button", name="Print")).to_be_visible()
    shot(page, "daily-09-account-tokens-codes")
    token_row.get_by_role("button", name="Revoke nightly report").click()
    page.locator("dialog.confirm").get_by_role("button", name="Revoke").click()
    expect(token_row).to_contain_text("revoked")


def test_enrolment_key_in_groups_of_four_and_codes_to_keep(contexts: Any, site: Site) -> None:
    juno = account(site, "juno", enrolled=False)
    page = contexts("juno").new_page()
    page.goto("/signin")
    page.get_by_label("Username").fill(juno.username)
    page.get_by_label("Password", exact=True).fill(juno.password)
    page.get_by_role("button", name="Continue").click()
    key = page.locator("#enrol-secret")
    expect(key).to_be_visible()
    groups = key.locator(".key-group").all_text_contents()
    secret = "".join(groups)
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
    assert all(len(g) == 4 for g in groups[:-1]), groups
    assert 1 <= len(groups[-1]) <= 4, groups
    assert key.text_content() == secret  # shown apart, copied whole (no spaces)
    shot_of(page.locator(".signin"), "daily-10-enrol-key")
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    expect(page.get_by_role("button", name="Print")).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download as a text file").click()
    saved = Path(download.value.path()).read_text()
    codes = page.locator("#recovery-codes code").all_text_contents()
    assert len(codes) == 10
    assert all(c in saved for c in codes)
    assert "juno" in saved
    shot(page, "daily-11-recovery-codes")
    page.emulate_media(media="print")  # printed: the codes, without the page around them
    expect(page.locator(".codes-actions")).to_be_hidden()
    expect(page.locator("#recovery-codes")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "daily-12-recovery-codes-print.png"))
    page.emulate_media(media="screen")
    page.get_by_role("button", name="I have stored them").click()
    page.wait_for_url(re.compile(r"/(\?.*)?$"))


CREATE_USER = """async (name) => {
  const csrf = document.cookie.split("; ").find((c) => c.startsWith("__Host-csrf="));
  const token = decodeURIComponent(csrf.split("=")[1]);
  const response = await fetch("/api/admin/users", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
    body: JSON.stringify({ username: name }),
  });
  return response.status;
}"""


def test_an_admin_applying_new_sharing_to_a_duplicate_sees_it_held(
    contexts: Any, site: Site, tmp_path: Path
) -> None:
    lena = account(site, "lena")
    with site.rt.sessions() as s:
        s.get_one(type(lena.user), lena.user.id).role = "admin"
        s.commit()
    page = contexts("lena").new_page()
    sign_in(page, lena)
    # An account whose credentials lena sets: sharing a confidential document with it waits.
    assert page.evaluate(CREATE_USER, "moss") == 201
    pay = tmp_path / "pay-scales.md"
    pay.write_text("# Pay scales\n\nGrade seven starts at the second step of the table.\n")
    page.goto("/documents")
    page.locator("#upload-classification").select_option("confidential")
    page.locator("#files").set_input_files(str(pay))
    final_states(page, 1)
    page.locator("#upload-classification").select_option("")
    page.get_by_label("Who else may read them").fill("moss")
    page.get_by_role("button", name="Add", exact=True).click()
    page.locator("#files").set_input_files(str(pay))
    final_states(page, 2)
    again = page.locator(".upload-item").last
    expect(again.locator(".upload-status")).to_contain_text("You asked to share it with moss.")
    again.get_by_role("button", name="Apply the new sharing and classification to it").click()
    expect(again.locator(".upload-status")).to_have_text(
        "“Pay scales”: moss: held for a second administrator's approval."
    )
    row = page.locator("#documents tr", has_text="pay-scales.md")
    expect(row.locator("td.shared")).to_have_text("Only you")  # nothing granted yet
    shot(page, "daily-13-duplicate-held")
