"""The admin pages as the first admin meets them (issue 17, items 6-11 and 14).

Over HTTP with the real app: a role change that files a request says so and shows on the
user's row; a lone admin is told why nothing can be approved and how to get a second admin;
approvals, the audit log and legal hold name people, groups and documents, and a document's
title reaches only an admin who may read it (DESIGN invariant 4); the kill switch refuses a
blank reason and users who meet a paused service read its reason and estimate; unknown
addresses and errors are pages for browsers and JSON for API clients.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from appliance.auth.tables import User
from appliance.core.runtime import Runtime
from appliance.documents.tables import Document
from appliance.jobs.registry import run_job
from models.fakes import FakeGenerator
from tests.fixtures.app import inline_worker, submit
from tests.fixtures.auth import ORIGIN, Account, Browser, make_user, signed_in

SECRET_TITLE = "Project Nightingale acquisition"
OPEN_TITLE = "Canteen opening hours"
HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")


def _doc(
    rt: Runtime, tmp: Path, title: str, *, owner: str, classification: str, grants: tuple = ()
) -> str:
    path = tmp / f"{title.replace(' ', '-').lower()}.md"  # the filename is content too
    path.write_text(f"# {title}\n\nThe {title} memo is about the travel portal.\n")
    doc_id = submit(rt, path, owner=owner, grants=grants)
    assert inline_worker(rt).run_until_idle(only={doc_id}) == 1
    with rt.sessions() as s:
        s.get_one(Document, doc_id).classification = classification
        s.commit()
    return doc_id


def _only_admin(rt: Runtime, keep: Account) -> None:
    """Leave `keep` the one active admin (init's first admin is switched off)."""
    with rt.sessions() as s:
        for user in s.execute(select(User).where(User.role == "admin")).scalars():
            user.is_active = user.id == keep.user.id
        s.commit()


# -- item 6: "Make admin" files a request and says so -----------------------------------------


def test_make_admin_files_a_request_shown_on_the_users_row(
    admin_browser: Browser, bob: Account, runtime: Runtime
) -> None:
    r = admin_browser.patch(f"/api/admin/users/{bob.user.id}", json={"role": "admin"})
    assert r.status_code == 202, r.text
    held = r.json()
    assert held["status"] == "pending"
    assert held["summary"] == "Make bob an admin"
    row = next(u for u in admin_browser.get("/api/admin/users").json() if u["username"] == "bob")
    assert row["role"] == "user"
    assert row["pending_admin"] == held["id"]
    listed = admin_browser.get("/api/admin/approvals").json()
    assert [a["summary"] for a in listed] == ["Make bob an admin"]
    assert listed[0]["about"][0] == {"text": "bob", "href": f"/admin/users#user-{bob.user.id}"}
    script = admin_browser.get("/static/js/admin-users.js").text
    assert "Role changed." not in script
    assert "needs a second admin's approval" in script


# -- item 7: a lone admin is told a second admin is needed, and how ---------------------------


def test_a_lone_admin_is_told_how_to_get_a_second_admin(
    admin_browser: Browser, root: Account, bob: Account, runtime: Runtime
) -> None:
    _only_admin(runtime, root)
    r = admin_browser.patch(f"/api/admin/users/{bob.user.id}", json={"role": "admin"})
    note = r.json()["waiting_note"]
    assert "only active admin" in note
    assert "appliance users create NAME --admin" in note
    page = admin_browser.get("/admin/approvals").text
    assert 'id="second-admin-note"' in page
    assert "appliance users create NAME --admin" in page
    created = admin_browser.post("/api/admin/users", json={"username": "carol", "role": "admin"})
    assert created.status_code == 201
    assert "only active admin" in created.json()["waiting_note"]

    # Once a second admin exists and has signed in, nothing says so any more.
    with runtime.sessions() as s:
        make_user(s, runtime.crypto, username="second", role="admin")
    assert admin_browser.get("/api/admin/approvals").json()[0]["waiting_note"] is None
    assert 'id="second-admin-note"' not in admin_browser.get("/admin/approvals").text


def test_an_admin_who_has_not_signed_in_yet_is_named(
    admin_browser: Browser, root: Account, bob: Account, runtime: Runtime
) -> None:
    # init's first admin exists but never signed in: it cannot approve yet.
    r = admin_browser.patch(f"/api/admin/users/{bob.user.id}", json={"role": "admin"})
    assert "admin has not finished signing in" in r.json()["waiting_note"]


# -- item 8: names, not ids; titles only where the admin may read -----------------------------


def _every_admin_view(admin: Browser) -> str:
    views = [
        "/api/admin/approvals?status=pending",
        "/api/admin/approvals",
        "/api/admin/users",
        "/api/admin/retention/documents",
        "/api/admin/audit?limit=1000",
        "/admin/approvals",
        "/admin/audit",
        "/admin/retention",
        "/admin/users",
    ]
    texts = []
    for url in views:
        r = admin.get(url)
        assert r.status_code == 200, (url, r.text)
        texts.append(r.text)
    return "\n".join(texts)


def test_documents_are_named_as_the_admin_may_see_them(
    admin_browser: Browser, alice: Account, root: Account, runtime: Runtime, tmp_path: Path
) -> None:
    secret = _doc(runtime, tmp_path, SECRET_TITLE, owner="alice", classification="confidential")
    public = _doc(
        runtime,
        tmp_path,
        OPEN_TITLE,
        owner="alice",
        classification="public",
        grants=("everyone",),
    )
    assert admin_browser.post(f"/api/admin/documents/{secret}/legal-hold", json={}).is_success
    lifted = admin_browser.delete(f"/api/admin/documents/{secret}/legal-hold")
    assert lifted.status_code == 202, lifted.text

    # Legal hold: pick from a list, by allowed name.
    candidates = {d["id"]: d for d in admin_browser.get("/api/admin/retention/documents").json()}
    assert re.fullmatch(
        r"a confidential document owned by alice, uploaded \d{1,2} [A-Z][a-z]{2} \d{4}",
        candidates[secret]["label"],
    )
    assert candidates[secret]["legal_hold"] is True
    assert candidates[public]["label"] == f"\u201c{OPEN_TITLE}\u201d"

    # Approvals: the action in words, the document by its allowed name, with a link.
    held = admin_browser.get("/api/admin/approvals").json()[0]
    assert held["summary"].startswith("Lift the legal hold on a confidential document owned by")
    assert held["about"][0]["href"] == f"/admin/retention?doc={secret}"
    assert not HEX_ID.search(held["summary"])

    # The audit log: targets and details by name, never a bare id.
    entries = admin_browser.get(f"/api/admin/audit?target=doc:{secret}").json()["entries"]
    assert entries
    for e in entries:
        assert e["target_name"].startswith("a confidential document owned by alice"), e
        assert e["target_href"] == f"/admin/retention?doc={secret}"
    request = admin_browser.get("/api/admin/audit?action=approval.request").json()["entries"][0]
    values = " ".join(f["value"] for f in request["fields"])
    assert "a confidential document owned by alice" in values
    assert not HEX_ID.search(values), values
    assert request["actor_name"] == "root"
    assert request["actor_href"] == f"/admin/users#user-{root.user.id}"

    # Invariant 4: the title of the document the admin cannot read is in no view at all.
    seen = _every_admin_view(admin_browser)
    assert "nightingale" not in seen.lower()  # neither title nor filename
    assert OPEN_TITLE in seen  # ...while a document they may read is named by its title


def test_the_audit_page_pages_and_puts_export_first(admin_browser: Browser) -> None:
    page = admin_browser.get("/admin/audit").text
    assert page.index('id="export-form"') < page.index('id="audit-entries"')
    assert 'id="audit-newer"' in page
    script = admin_browser.get("/static/js/admin-audit.js").text
    assert "const PAGE = 25;" in script
    assert "JSON.stringify" not in script  # details are fields, not raw JSON


# -- item 9: the System page in words -------------------------------------------------------


def test_the_system_page_reads_as_sentences(
    browser_factory: Any, root: Account, runtime: Runtime
) -> None:
    # Before signing in: the job ends sessions that are old by the wall clock (the test's
    # clock is months behind it).
    assert run_job(runtime, "cleanup").outcome == "ok"
    page = signed_in(browser_factory, root).get("/admin/system").text
    assert "every hour" in page
    assert "3600 s" not in page
    assert re.search(
        r'<time datetime="\d{4}-\d\d-\d\dT[\d:.]+Z">\d{1,2} [A-Z][a-z]{2} \d{4}, ', page
    )
    assert "Nothing to do." in page or "removed" in page
    assert '"requeued"' not in page  # no raw JSON
    assert "{&#34;" not in page
    assert "Original files and the database are not counted" in page


# -- item 10: the kill switch's reason, for admins and for users ------------------------------


def test_a_blank_reason_is_refused(admin_browser: Browser) -> None:
    for reason in ("", "   "):
        r = admin_browser.request(
            "PUT", "/api/admin/system/switches", json={"answering_paused": True, "reason": reason}
        )
        assert r.status_code == 422, r.text
        assert "Give a reason" in r.text
    # Left out altogether, when a switch is turned on, is refused too; turning off needs none.
    r = admin_browser.request("PUT", "/api/admin/system/switches", json={"read_only": True})
    assert r.status_code == 422, r.text
    assert "Give a reason when you turn a switch on" in r.text
    state = admin_browser.get("/api/admin/system/switches").json()
    assert state["answering_paused"]["on"] is False
    assert state["read_only"]["on"] is False
    r = admin_browser.request("PUT", "/api/admin/system/switches", json={"read_only": False})
    assert r.status_code == 200, r.text


def test_users_meet_the_reason_and_estimate(
    admin_browser: Browser, user_browser: Browser, runtime: Runtime
) -> None:
    runtime._generator = FakeGenerator("An answer.")
    r = admin_browser.request(
        "PUT",
        "/api/admin/system/switches",
        json={
            "answering_paused": True,
            "reason": "Model upgrade",
            "back_by": "2026-03-02T15:30:00Z",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["answering_paused"]["back_by"].startswith("2026-03-02T15:30")
    refused = user_browser.post("/api/chat", json={"question": "Anything?"})
    assert refused.status_code == 503
    message = refused.json()["message"]
    assert "Reason: Model upgrade." in message
    assert "Back by 2 Mar 2026, 15:30 UTC." in message
    for page in ("/", "/documents", "/account"):
        html = user_browser.get(page).text
        assert 'class="paused-banner"' in html, page
        assert "Model upgrade" in html
        assert '<time datetime="2026-03-02T15:30:00Z">2 Mar 2026, 15:30 UTC</time>' in html

    admin_browser.request(
        "PUT",
        "/api/admin/system/switches",
        json={"answering_paused": False, "read_only": True, "reason": "Disk swap"},
    )
    refused = user_browser.post("/api/auth/tokens", json={"name": "x"})
    assert refused.status_code == 503
    assert refused.json()["error"] == "read_only"
    assert "Reason: Disk swap." in refused.json()["message"]
    assert "Back by" not in refused.json()["message"]
    html = user_browser.get("/").text
    assert "Disk swap" in html
    assert "Model upgrade" not in html

    admin_browser.request(
        "PUT", "/api/admin/system/switches", json={"read_only": False, "reason": "Done"}
    )
    assert 'class="paused-banner"' not in user_browser.get("/").text


# -- item 11: error pages for browsers, JSON for API clients ----------------------------------

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def test_unknown_addresses_are_pages_for_browsers(user_browser: Browser, browser: Browser) -> None:
    r = user_browser.get("/no/such/page", headers=HTML)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "Page not found" in r.text
    assert '<a href="/">Chat</a>' in r.text
    assert "Signed in as <strong>alice</strong>" in r.text
    assert '{"detail"' not in r.text

    anonymous = browser.get("/no/such/page", headers=HTML)
    assert anonymous.status_code == 404
    assert '<a href="/signin">Sign in</a>' in anonymous.text

    api = user_browser.get("/api/no/such/thing", headers=HTML)
    assert api.status_code == 404
    assert api.json() == {"detail": "Not Found"}
    plain = user_browser.get("/no/such/page", headers={"Accept": "application/json"})
    assert plain.json() == {"detail": "Not Found"}

    forbidden = user_browser.get("/admin/users", headers=HTML)
    assert forbidden.status_code == 403
    assert "Not for this account" in forbidden.text
    assert '<a href="/">Chat</a>' in forbidden.text
    assert user_browser.get("/api/admin/users").json()["error"] == "permission_denied"


def test_a_server_error_is_a_page_without_a_traceback(app: FastAPI, alice: Account) -> None:
    def boom() -> Any:
        raise RuntimeError("secret internals")

    app.add_api_route("/broken", boom)
    app.add_api_route("/api/broken", boom)
    with TestClient(app, base_url=ORIGIN, raise_server_exceptions=False) as client:
        page = client.get("/broken", headers=HTML)
        assert page.status_code == 500
        assert "Something went wrong" in page.text
        assert "secret internals" not in page.text
        assert '<a href="/signin">Sign in</a>' in page.text
        api = client.get("/api/broken", headers=HTML)
        assert api.status_code == 500
        assert api.json()["error"] == "internal_error"
        assert "secret internals" not in api.text


# -- item 14 (part): group membership on the users page ---------------------------------------


def test_each_user_lists_their_groups(admin_browser: Browser, alice: Account) -> None:
    group = admin_browser.post("/api/admin/groups", json={"name": "staff"}).json()
    r = admin_browser.post(
        f"/api/admin/groups/{group['id']}/members", json={"user_id": alice.user.id}
    )
    assert r.status_code == 200, r.text
    row = next(u for u in admin_browser.get("/api/admin/users").json() if u["username"] == "alice")
    assert row["groups"] == [{"id": group["id"], "name": "staff"}]
    admin_browser.delete(f"/api/admin/groups/{group['id']}/members/{alice.user.id}")
    row = next(u for u in admin_browser.get("/api/admin/users").json() if u["username"] == "alice")
    assert row["groups"] == []
    script = admin_browser.get("/static/js/admin-users.js").text
    assert "confirmDialog(`Disable ${u.username}?" in script
