"""Every page fits a 390 px phone: no sideways scrolling, and every control has a name.

Visits sign-in (signed out), chat, documents, account, each admin section and the page for
an unknown address in a 390x844 viewport, with some data on the site (a second user, a
group, an approval request, an audit trail) so tables are not empty. A page fails when the
document is wider than the viewport (anything but a table inside its own scrolling
wrapper) or when a button, link, input, select or textarea has no accessible name (the
check in conftest.py's `shot`). Screenshots: test-artifacts/screenshots/fit-*.png.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page

from tests.e2e.conftest import SCREENSHOTS, UNLABELLED, Site
from tests.e2e.test_admin_journeys import account, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAGES = [
    ("chat", "/"),
    ("documents", "/documents"),
    ("account", "/account"),
    ("admin-users", "/admin/users"),
    ("admin-groups", "/admin/groups"),
    ("admin-approvals", "/admin/approvals"),
    ("admin-audit", "/admin/audit"),
    ("admin-retention", "/admin/retention"),
    ("admin-system", "/admin/system"),
    ("notfound", "/no/such/page"),
]

# What sticks out past the right edge of the viewport, outside a scrolling table wrapper.
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const inside = el.parentElement && el.parentElement.closest(".table-wrap, dialog");
    if (inside || el.closest(".offscreen, .visually-hidden, [hidden]")) continue;
    const box = el.getBoundingClientRect();
    if (box.width && box.right > width + 1) {
      out.push(`${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className}`.slice(0, 80)
        + ` right=${Math.round(box.right)}`);
    }
  }
  return { scroll: document.documentElement.scrollWidth, width, out: out.slice(0, 8) };
}"""


def fits(page: Page, name: str) -> list[str]:
    """Problems of the page at this width (none: it fits and every control is named)."""
    page.wait_for_load_state("networkidle")
    problems = []
    found = page.evaluate(OVERFLOW)
    if found["scroll"] > found["width"] or found["out"]:
        problems.append(f"{name}: {found['scroll']} px wide in {found['width']}: {found['out']}")
    unlabelled = page.evaluate(UNLABELLED)
    if unlabelled:
        problems.append(f"{name}: controls without an accessible name: {unlabelled}")
    return problems


def test_every_page_fits_a_phone(contexts: Any, site: Site) -> None:
    fit = account(site, "fitadmin", role="admin")
    other = account(site, "fituser")
    problems: list[str] = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    visitor = contexts("visitor", phone=True).new_page()
    visitor.goto("/signin")
    problems += fits(visitor, "signin")
    visitor.screenshot(path=str(SCREENSHOTS / "fit-signin.png"), full_page=True)

    page = contexts("fitadmin", phone=True).new_page()
    sign_in(page, fit)
    # Some data, so the admin tables have rows: a group with a member, a held request.
    assert page.request.post(
        "/api/admin/groups", data={"name": "fit-group"}, headers=_csrf(page)
    ).ok
    held = page.request.patch(
        f"/api/admin/users/{other.user.id}", data={"role": "admin"}, headers=_csrf(page)
    )
    assert held.status in (200, 202), held.text()
    for name, path in PAGES:
        page.goto(path)
        problems += fits(page, name)
        page.screenshot(path=str(SCREENSHOTS / f"fit-{name}.png"), full_page=True)
    assert not problems, "\n".join(problems)


def _csrf(page: Page) -> dict[str, str]:
    """The headers the page's own script sends with a change (CSRF token from the cookie)."""
    token = next((c["value"] for c in page.context.cookies() if c["name"].endswith("csrf")), "")
    return {"X-CSRF-Token": token, "Origin": page.evaluate("location.origin")}
