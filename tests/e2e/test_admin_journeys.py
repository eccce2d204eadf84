"""The admin pages in Chromium, as the first admin meets them (issue 17 items 6-11, 14).

A lone admin files "Make admin" and reads that a request waits, that a second admin is
needed and how to create one; the user's row shows it pending. Group membership is changed
from the users page, and Disable asks first. Approvals and legal hold name documents by
what the admin may see (never the title of a document they cannot read); the audit log
pages. The kill switch refuses a blank reason and users see the reason and estimate on
every page. An unknown address is a page with the way back. Screenshots go to
test-artifacts/screenshots/ (admin-*.png).

The journeys make their own enrolled accounts on the shared site (helpers below, also used
by test_page_fit.py) and leave the site's first admin to test_journeys.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from appliance.admin import service as switches
from appliance.auth.tables import User
from appliance.core.db import utcnow
from appliance.documents.tables import INDEXED, Document
from tests.e2e.conftest import Site, shot
from tests.e2e.people import sign_in
from tests.fixtures.app import submit
from tests.fixtures.auth import Account, make_user


def account(site: Site, username: str, *, role: str = "user") -> Account:
    """An enrolled account on the site (its password and TOTP secret known to the test)."""
    with site.rt.sessions() as session:
        return make_user(session, site.rt.crypto, username=username, role=role)


@contextmanager
def only_admin(site: Site, keep: Account) -> Iterator[None]:
    """While inside: `keep` is the one active admin (the others come back afterwards)."""
    with site.rt.sessions() as session:
        others = list(
            session.execute(
                select(User).where(
                    User.role == "admin", User.is_active.is_(True), User.id != keep.user.id
                )
            ).scalars()
        )
        for user in others:
            user.is_active = False
        session.commit()
        ids = [u.id for u in others]
    try:
        yield
    finally:
        with site.rt.sessions() as session:
            for user_id in ids:
                session.get_one(User, user_id).is_active = True
            session.commit()


def switches_off(site: Site) -> None:
    """Every kill switch off (a journey that fails midway must not pause the next one)."""
    with site.rt.sessions() as session:
        for name in switches.SWITCHES:
            switches.set_switch(
                session, name=name, on=False, actor="operator:e2e", now=utcnow(), reason="reset"
            )
        session.commit()


pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SECRET_TITLE = "Falcon merger terms"
HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")


def confidential_document(site: Site, tmp: Path, owner: str) -> str:
    """A confidential document of `owner` that nobody else may read, indexed."""
    path = tmp / "falcon-merger-terms.md"
    path.write_text(f"# {SECRET_TITLE}\n\nThe price is forty-two million.\n")
    doc_id = submit(site.rt, path, owner=owner)
    with site.rt.sessions() as s:
        s.get_one(Document, doc_id).classification = "confidential"
        s.commit()
    return doc_id


def wait_indexed(site: Site, doc_id: str, page: Page) -> None:
    """Until the site's worker has indexed the document."""
    for _ in range(240):
        with site.rt.sessions() as s:
            if s.get_one(Document, doc_id).state == INDEXED:
                return
        page.wait_for_timeout(250)
    raise AssertionError("the document was not indexed in 60 s")


def test_a_lone_admin_manages_users_groups_and_holds(
    contexts: Any, site: Site, tmp_path: Path
) -> None:
    solo = account(site, "solo", role="admin")
    account(site, "pat")
    doc_id = confidential_document(site, tmp_path, "pat")
    admin = contexts("solo").new_page()
    with only_admin(site, solo):
        sign_in(admin, solo)

        # -- item 6 and 7: "Make admin" files a request, says so, and says what is missing --
        admin.goto("/admin/users")
        expect(admin.locator("#second-admin-note")).to_contain_text("only active admin")
        admin.get_by_role("button", name="Make admin: pat").click()
        notice = admin.locator("#users-notice")
        expect(notice).to_contain_text("Making pat an admin needs a second admin's approval")
        expect(notice).to_contain_text("appliance users create NAME --admin")
        expect(admin.locator("body")).not_to_contain_text("Role changed")
        row = admin.locator('tr[data-username="pat"]')
        expect(row).to_contain_text("admin: waiting for approval")
        expect(row.get_by_role("button", name="Make admin: pat")).to_have_count(0)
        shot(admin, "admin-users-pending")

        # -- item 14: group membership from the users page ---------------------------------
        admin.goto("/admin/groups")
        admin.get_by_label("New group").fill("finance")
        admin.get_by_role("button", name="Create group").click()
        expect(admin.locator('section.group[data-name="finance"]')).to_be_visible()
        admin.goto("/admin/users")
        row = admin.locator('tr[data-username="pat"]')
        row.get_by_label("Group to add pat to").select_option(label="finance")
        row.get_by_role("button", name="Add pat to the chosen group").click()
        expect(row.locator(".chips")).to_contain_text("finance")
        shot(admin, "admin-users-groups")
        row.get_by_role("button", name="Remove pat from finance").click()
        expect(row.locator(".chips")).to_have_count(0)

        # -- item 14: Disable asks first ---------------------------------------------------
        row.get_by_role("button", name="Disable: pat").click()
        dialog = admin.get_by_role("dialog")
        expect(dialog).to_contain_text("Disable pat?")
        shot(admin, "admin-users-disable-confirm")
        dialog.get_by_role("button", name="Cancel").click()
        expect(row).to_contain_text("active")
        row.get_by_role("button", name="Disable: pat").click()
        admin.get_by_role("dialog").get_by_role("button", name="Disable").click()
        expect(row).to_contain_text("disabled")
        row.get_by_role("button", name="Enable: pat").click()
        expect(row).not_to_contain_text("disabled")

        # -- item 7 and 8: the approvals inbox in words, with the missing second admin -----
        admin.goto("/admin/approvals")
        expect(admin.locator("#second-admin-note")).to_contain_text(
            "appliance users create NAME --admin"
        )
        request = admin.locator("#approvals tr", has_text="Make pat an admin")
        expect(request).to_have_count(1)
        expect(request.get_by_role("link", name="pat")).to_have_attribute(
            "href", re.compile(r"^/admin/users#user-[0-9a-f]{32}$")
        )
        expect(admin.locator("#approvals")).not_to_contain_text("user:")
        shot(admin, "admin-approvals-lone")

        # -- item 8: legal hold by picking the document; its title is never shown ----------
        wait_indexed(site, doc_id, admin)
        admin.goto("/admin/retention")
        picker = admin.get_by_label("Document", exact=True)
        option = picker.locator("option", has_text="a confidential document owned by pat")
        expect(option).to_have_count(1)
        picker.select_option(value=doc_id)
        expect(admin.locator("#hold-summary")).to_contain_text("not under legal hold")
        admin.get_by_label("Reason", exact=True).fill("case 2026-14")
        admin.get_by_role("button", name="Place legal hold").click()
        expect(admin.locator("#hold-summary")).to_contain_text("under legal hold since")
        admin.get_by_role("button", name="Lift legal hold").click()
        expect(admin.locator("#toast")).to_contain_text("needs a second admin")
        expect(admin.locator("body")).not_to_contain_text("Falcon")
        shot(admin, "admin-retention-hold")
        admin.goto("/admin/approvals")
        lift = admin.locator("#approvals tr", has_text="Lift the legal hold on")
        expect(lift).to_contain_text("a confidential document owned by pat")
        expect(admin.locator("body")).not_to_contain_text("Falcon")
        # The request links to the document: its retention and hold, picked already.
        lift.get_by_role("link", name=re.compile("a confidential document owned by pat")).click()
        admin.wait_for_url(re.compile(r"/admin/retention\?doc=[0-9a-f]{32}$"))
        expect(admin.locator("#hold-summary")).to_contain_text("under legal hold since")

        # -- item 8: the audit log pages, export first, names not ids ----------------------
        for _ in range(30):  # every search is audited: more than one page of entries
            assert admin.request.get("/api/admin/audit?limit=1").ok
        admin.goto("/admin/audit")
        entries = admin.locator("#audit-entries tr")
        expect(entries).to_have_count(25)
        expect(admin.locator("#audit-range")).to_have_text("Entries 1–25, newest first")
        admin.get_by_role("button", name="Older").click()
        expect(admin.locator("#audit-range")).to_contain_text("Entries 26–")
        admin.get_by_role("button", name="Newer").click()
        expect(admin.locator("#audit-range")).to_contain_text("Entries 1–25")
        on_what = " ".join(admin.locator("#audit-entries td:nth-child(4)").all_text_contents())
        assert not HEX_ID.search(on_what), on_what
        expect(admin.locator("#audit-entries")).not_to_contain_text("Falcon")
        expect(admin.locator("#audit-entries dl.fields").first).to_be_visible()
        box = admin.locator("#export-box").bounding_box()
        table = admin.locator("#audit-entries").bounding_box()
        assert box is not None
        assert table is not None
        assert box["y"] < table["y"]
        height = admin.evaluate("document.documentElement.scrollHeight")
        assert height < 4000, height
        shot(admin, "admin-audit-paged")


def test_the_kill_switch_tells_users_why_and_until_when(contexts: Any, site: Site) -> None:
    boss = account(site, "boss", role="admin")
    quinn = account(site, "quinn")
    admin = contexts("boss").new_page()
    user = contexts("quinn").new_page()
    sign_in(admin, boss)
    sign_in(user, quinn)
    try:
        admin.goto("/admin/system")
        expect(admin.locator("body")).to_contain_text("every hour")
        expect(admin.locator("body")).not_to_contain_text("3600 s")
        admin.get_by_label("Pause answering").check()
        admin.get_by_role("button", name="Apply").click()
        expect(admin.locator("#switch-error")).to_contain_text("Give a reason")
        expect(admin.locator("#switches")).not_to_contain_text("ON")
        admin.get_by_label("Reason (shown to other admins").fill("Model upgrade")
        admin.get_by_label("Expected back by").fill("2031-05-01T14:05")
        admin.get_by_role("button", name="Apply").click()
        expect(admin.locator("#switches")).to_contain_text("ON")
        expect(admin.locator("#switches")).to_contain_text("Back by 1 May 2031, 14:05")
        admin.reload()
        expect(admin.locator(".paused-banner")).to_contain_text("Model upgrade")
        shot(admin, "admin-system-paused")

        for path in ("/", "/documents", "/account"):
            user.goto(path)
            banner = user.locator(".paused-banner")
            expect(banner).to_contain_text("Answering questions is paused.")
            expect(banner).to_contain_text("Reason: Model upgrade.")
            expect(banner.locator("time")).to_have_text("1 May 2031, 14:05")
        shot(user, "admin-paused-banner-user")
    finally:
        switches_off(site)
    user.goto("/")
    expect(user.locator(".paused-banner")).to_have_count(0)


def test_an_unknown_address_is_a_page_with_the_way_back(contexts: Any, site: Site) -> None:
    ivy = account(site, "ivy")
    page = contexts("ivy").new_page()
    sign_in(page, ivy)
    response = page.goto("/no/such/page")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text('{"detail"')
    shot(page, "admin-notfound")
    page.get_by_role("main").get_by_role("link", name="Chat").click()
    page.wait_for_url(re.compile(r"/$"))
    forbidden = page.goto("/admin/users")
    assert forbidden is not None
    assert forbidden.status == 403
    expect(page.get_by_role("heading", name="Not for this account")).to_be_visible()
