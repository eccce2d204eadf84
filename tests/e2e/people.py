"""Signing in through the page, shared by the browser journeys."""

from __future__ import annotations

import re

import pyotp
from playwright.sync_api import Page, expect

from tests.fixtures.auth import Account


def sign_in(page: Page, who: Account) -> None:
    """Sign in through the page: password, then the authenticator's current code."""
    page.goto("/signin")
    page.get_by_label("Username").fill(who.username)
    page.get_by_label("Password", exact=True).fill(who.password)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Code", exact=True).fill(pyotp.TOTP(who.secret).now())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/(\?.*)?$"))
    expect(page.locator("#sign-out")).to_be_visible()
