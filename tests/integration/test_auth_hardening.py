"""Sign-in hardening (issue 16, holes 12 and 13): atomic throttling, forwarded addresses,
API tokens that end with the password or with "end other sessions", admin pages' scope.

The throttling race runs on SQLite here and on PostgreSQL in test_postgres.py (which
imports it).
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from appliance.audit.tables import AuditEvent
from appliance.auth import sessions, signin, throttle, totp
from appliance.auth.signin import Client
from appliance.auth.tables import AuthSession, AuthThrottle
from appliance.core.config import ServerSettings
from appliance.core.errors import SignInFailed
from appliance.core.runtime import Runtime
from appliance.main import create_app
from tests.fixtures.auth import ORIGIN, Account, Browser, Clock

NEW_PASSWORD = "seven quiet herons over the weir"
ADMIN_PAGES = [
    f"/admin/{s}" for s in ("users", "groups", "approvals", "audit", "retention", "system")
]


def _events(runtime: Runtime, action: str) -> list[AuditEvent]:
    with runtime.sessions() as s:
        return list(
            s.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            ).scalars()
        )


# -- hole 12a: throttling counts atomically ------------------------------------------------


def test_concurrent_wrong_codes_get_no_more_tries_than_the_back_off_allows(
    runtime: Runtime, alice: Account, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = runtime.settings.auth
    attempts = 40
    with runtime.sessions() as s:
        pre_id = sessions.issue(
            s,
            user_id=alice.user.id,
            kind=sessions.PRE,
            stage="totp",
            now=clock(),
            settings=settings,
            client="10.0.0.1",
            user_agent=None,
        ).row.id
        s.commit()
    # Each attempt that reaches the code check is recorded; the check is made slow (as an
    # argon2 hash is for passwords) so that every attempt is in flight at once.
    checked: list[str] = []
    lock = threading.Lock()
    real_match_step = totp.match_step

    def slow_match_step(*args: Any, **kw: Any) -> int | None:
        with lock:
            checked.append(threading.current_thread().name)
        time.sleep(0.05)
        return real_match_step(*args, **kw)

    monkeypatch.setattr(totp, "match_step", slow_match_step)
    barrier = threading.Barrier(attempts)
    results: list[str] = []
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            with runtime.sessions() as s:
                pre = s.get(AuthSession, pre_id)
                assert pre is not None
                s.commit()  # hand the connection back: more threads than pooled connections
                barrier.wait(timeout=60)
                try:
                    signin.sign_in_second_factor(
                        s,
                        crypto=runtime.crypto,
                        pre=pre,
                        code="000000" if alice.code(clock) != "000000" else "111111",
                        recovery_code=None,
                        client=Client("10.0.0.1"),
                        now=clock(),
                        settings=settings,
                    )
                    results.append("won")
                except SignInFailed:
                    results.append("lost")
                s.commit()  # as the route does, so the failure's entries are kept
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=attempt, name=f"try{i}") for i in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == ["lost"] * attempts
    # The clock stands still: after `backoff_after` failures every further try must wait.
    assert len(checked) <= settings.backoff_after, f"{len(checked)} codes were checked"
    assert len(checked) == settings.backoff_after  # ... and no fewer than it allows
    with runtime.sessions() as s:
        row = s.get(AuthThrottle, throttle.account_key(alice.username))
        assert row is not None
        assert row.failures == settings.backoff_after
    reasons = [json.loads(e.details)["reason"] for e in _events(runtime, "auth.failure")]
    assert sorted(reasons) == sorted(
        ["totp"] * settings.backoff_after + ["throttled"] * (attempts - settings.backoff_after)
    )


def test_a_right_password_after_failures_does_not_delay_the_second_factor(
    runtime: Runtime, browser: Browser, alice: Account, clock: Clock
) -> None:
    after = runtime.settings.auth.backoff_after
    for _ in range(after):
        assert browser.login(alice.username, "wrong wrong wrong").status_code == 401
    clock.advance(seconds=runtime.settings.auth.backoff_base_seconds + 0.1)
    assert browser.login(alice.username, alice.password).json()["stage"] == "totp"
    # At once: the right password was counted while it was checked, then taken back.
    r = browser.post("/api/auth/totp", json={"code": alice.code(clock)})
    assert r.status_code == 200, r.text
    assert r.json()["stage"] == "done"


def test_a_refused_new_password_is_not_a_failed_attempt(
    runtime: Runtime, user_browser: Browser, alice: Account
) -> None:
    for _ in range(runtime.settings.auth.lockout_threshold + 1):
        weak = user_browser.post(
            "/api/auth/password", json={"old": alice.password, "new": "password1234"}
        )
        assert weak.status_code == 422
    r = user_browser.post("/api/auth/password", json={"old": alice.password, "new": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert _events(runtime, "auth.failure") == []


# -- hole 12b: forwarded addresses only from configured proxies ----------------------------


@pytest.fixture
def peer_browser(runtime: Runtime, clock: Clock) -> Iterator[Any]:
    """Make a browser whose requests come from `peer` with `headers`, on an app whose
    ``server`` settings are `server` (the test instance's others unchanged)."""
    clients: list[TestClient] = []

    def make(peer: str, headers: dict[str, str], **server: Any) -> Browser:
        settings = runtime.settings.model_copy(update={"server": ServerSettings(**server)})
        app: FastAPI = create_app(settings, runtime=runtime, background=False)
        client = TestClient(app, base_url=ORIGIN, client=(peer, 50123), headers=headers)
        client.__enter__()
        app.state.clock = clock
        clients.append(client)
        return Browser(client, clock)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _signed_in_from(b: Browser, account: Account) -> str | None:
    """Sign in, then the client address the appliance recorded for this session."""
    b.sign_in(account)
    (current,) = [s for s in b.get("/api/auth/sessions").json() if s["current"]]
    client: str | None = current["client"]
    return client


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    peer_browser: Any, alice: Account
) -> None:
    spoofed = {"X-Forwarded-For": "203.0.113.7"}
    # Default: nobody is trusted, not even a loopback peer.
    assert _signed_in_from(peer_browser("127.0.0.1", spoofed), alice) == "127.0.0.1"
    # A proxy is trusted, but this peer is not it.
    untrusted = peer_browser("127.0.0.1", spoofed, trusted_proxies=["10.0.0.2"])
    assert _signed_in_from(untrusted, alice) == "127.0.0.1"


def test_a_trusted_proxy_forwards_the_client_address_and_scheme(
    peer_browser: Any, alice: Account
) -> None:
    # nginx appends the address it saw to whatever the client sent ($proxy_add_x_forwarded_for).
    headers = {"X-Forwarded-For": "198.51.100.1, 192.0.2.44", "X-Forwarded-Proto": "https"}
    proxied = peer_browser("10.0.0.2", headers, trusted_proxies=["10.0.0.0/24"])
    assert _signed_in_from(proxied, alice) == "192.0.2.44"


def test_trusted_proxies_must_be_addresses() -> None:
    for bad in ("*", "proxy.corp.example", "127.0.0.1, 10.0.0.2"):
        with pytest.raises(ValueError, match="not an IP address or network"):
            ServerSettings(trusted_proxies=[bad])


# -- hole 13a: API tokens end with the password and with "end other sessions" -------------


def _token(b: Browser, scopes: list[str]) -> dict[str, str]:
    created = b.post("/api/auth/tokens", json={"name": "script", "scopes": scopes, "days": 7})
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['token']}"}


def test_changing_the_password_revokes_the_accounts_api_tokens(
    runtime: Runtime, user_browser: Browser, browser: Browser, alice: Account
) -> None:
    bearer = _token(user_browser, ["read"])
    assert browser.client.get("/api/auth/me", headers=bearer).status_code == 200
    r = user_browser.post("/api/auth/password", json={"old": alice.password, "new": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert browser.client.get("/api/auth/me", headers=bearer).status_code == 401
    assert user_browser.get("/api/auth/me").status_code == 200  # this browser stays in
    (changed,) = _events(runtime, "auth.password_change")
    assert json.loads(changed.details)["tokens_revoked"] == 1
    listed = user_browser.get("/api/auth/tokens").json()
    assert [t["revoked_at"] is not None for t in listed] == [True]


def test_ending_other_sessions_revokes_the_accounts_api_tokens(
    runtime: Runtime, browser_factory: Any, browser: Browser, alice: Account
) -> None:
    laptop: Browser = browser_factory()
    phone: Browser = browser_factory()
    laptop.sign_in(alice)
    phone.sign_in(alice)
    bearer = _token(phone, ["read", "write"])
    assert browser.client.get("/api/auth/me", headers=bearer).status_code == 200
    ended = laptop.delete("/api/auth/sessions")
    assert ended.status_code == 200, ended.text
    assert ended.json() == {"ended": 1, "tokens_revoked": 1}
    assert browser.client.get("/api/auth/me", headers=bearer).status_code == 401
    assert phone.get("/api/auth/me").status_code == 401
    assert laptop.get("/api/auth/me").status_code == 200
    (event,) = _events(runtime, "auth.end_sessions")
    assert json.loads(event.details) == {"ended": 1, "tokens_revoked": 1}


# -- hole 13b: admin pages check the admin API's scope -------------------------------------


def test_admin_pages_refuse_an_admins_token_without_the_admin_scope(
    admin_browser: Browser, browser: Browser
) -> None:
    read_only = _token(admin_browser, ["read"])
    assert browser.client.get("/api/admin/users", headers=read_only).status_code == 403
    for path in ADMIN_PAGES:
        page = browser.client.get(path, headers=read_only)
        assert page.status_code == 403, path
        assert "lacks the 'admin' scope" in html.unescape(page.text), path
    admin_scope = _token(admin_browser, ["read", "admin"])
    for path in ADMIN_PAGES:
        assert browser.client.get(path, headers=admin_scope).status_code == 200, path
