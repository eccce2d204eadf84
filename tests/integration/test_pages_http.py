"""Page routes: sign-in required, admin pages checked on the server, CSP-clean markup."""

from __future__ import annotations

import re

import pytest

from tests.fixtures.auth import Browser

USER_PAGES = ["/", "/documents", "/account"]
ADMIN_PAGES = [
    f"/admin/{s}" for s in ("users", "groups", "approvals", "audit", "retention", "system")
]


@pytest.mark.parametrize("path", USER_PAGES + ADMIN_PAGES)
def test_pages_send_strangers_to_sign_in(browser: Browser, path: str) -> None:
    r = browser.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/signin?next={path}"


def test_sign_in_page_only_returns_to_local_paths(browser: Browser) -> None:
    for bad in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil.example"):
        page = browser.get("/signin", params={"next": bad})
        assert page.status_code == 200
        assert 'data-next="/"' in page.text
    assert 'data-next="/documents"' in browser.get("/signin?next=/documents").text


def test_users_get_their_pages_and_not_the_admin_ones(user_browser: Browser) -> None:
    for path in USER_PAGES:
        page = user_browser.get(path)
        assert page.status_code == 200, path
        assert "Signed in as" in page.text
        assert 'href="/admin/users"' not in page.text
    for path in ADMIN_PAGES:
        r = user_browser.get(path)
        assert r.status_code == 403, path
        assert "for administrators" in r.text
    assert user_browser.get("/signin", follow_redirects=False).status_code == 303


def test_admins_get_every_page(admin_browser: Browser) -> None:
    for path in USER_PAGES + ADMIN_PAGES:
        page = admin_browser.get(path)
        assert page.status_code == 200, path
        assert page.headers["cache-control"] == "no-store"
    assert admin_browser.get("/admin/nope").status_code == 404
    assert "smollm2" in admin_browser.get("/admin/system").text.lower()


def test_markup_has_no_inline_script_or_style_and_only_local_assets(
    admin_browser: Browser, browser: Browser
) -> None:
    pages = [admin_browser.get(p).text for p in USER_PAGES + ADMIN_PAGES]
    pages.append(browser.get("/signin").text)
    for text in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), "inline script"
        assert not re.search(r"\sstyle=", text), "inline style attribute (CSP refuses it)"
        assert not re.search(r"\son[a-z]+=", text), "inline event handler"
        assert "http://" not in text
        assert "https://" not in text
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', text):
            assert browser.get(asset).status_code == 200, asset


def test_the_system_page_says_the_bundled_chat_model_is_for_trying(
    admin_browser: Browser,
) -> None:
    page = admin_browser.get("/admin/system").text
    assert "small model for trying the appliance" in page
    assert "appliance models add NAME PATH --sha256 HEX" in page
