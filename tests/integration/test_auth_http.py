"""Sign-in over HTTP: enrolment, second factor, replay, lockout, sessions, CSRF, tokens, admin."""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from typing import Any

import pyotp
from sqlalchemy import select

from appliance.approvals import service as approvals
from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.auth import passwords, service, sessions, signin
from appliance.auth.signin import GENERIC_FAILURE, Client
from appliance.auth.tables import AuthSession, User
from appliance.core.errors import SignInFailed
from appliance.core.runtime import Runtime
from tests.fixtures.auth import GOOD_PASSWORD, Account, Browser, Clock, make_user

NEW_PASSWORD = "seven quiet herons over the weir"


def _cookie_header(response: Any, name: str) -> str:
    return next(v for v in response.headers.get_list("set-cookie") if v.startswith(name + "="))


# -- enrolment and first sign-in -----------------------------------------------------------


def test_first_sign_in_enrols_totp_then_changes_password(
    runtime: Runtime, browser: Browser, clock: Clock
) -> None:
    with runtime.sessions() as s:
        user, otp = service.create_user(s, username="carol", actor="test")
        s.commit()
    r = browser.login("carol", otp)
    assert r.status_code == 200
    body = r.json()
    assert body["stage"] == "enrol"
    secret = body["enrolment"]["secret"]
    assert body["enrolment"]["uri"].startswith("otpauth://totp/")
    assert body["enrolment"]["qr_svg"].startswith("<svg")
    assert "http" not in body["enrolment"]["qr_svg"].replace("http://www.w3.org/2000/svg", "")
    # The pre-sign-in state opens nothing else.
    assert browser.get("/api/auth/me").status_code == 401
    assert browser.post("/api/auth/totp", json={"code": "123456"}).status_code == 401
    wrong = browser.post("/api/auth/enrol/confirm", json={"code": "000000"})
    assert wrong.status_code == 401
    code = pyotp.TOTP(secret).at(clock())
    r = browser.post("/api/auth/enrol/confirm", json={"code": code})
    assert r.status_code == 200, r.text
    assert r.json()["stage"] == "password"
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert browser.get("/api/auth/me").status_code == 401
    weak = browser.post("/api/auth/password", json={"old": otp, "new": "password1234"})
    assert weak.status_code == 422
    short = browser.post("/api/auth/password", json={"old": otp, "new": "short"})
    assert short.status_code == 422
    r = browser.post("/api/auth/password", json={"old": otp, "new": NEW_PASSWORD})
    assert r.status_code == 200
    assert r.json()["stage"] == "done"
    me = browser.get("/api/auth/me").json()
    assert me["user"]["username"] == "carol"
    assert me["recovery_codes_left"] == 10
    with runtime.sessions() as s:
        stored = s.get(User, user.id)
        assert stored is not None
        assert stored.totp_secret_enc is not None
        assert secret.encode() not in stored.totp_secret_enc  # encrypted at rest
        details = " ".join(e.details for e in s.execute(select(AuditEvent)).scalars())
    for secret_value in (otp, NEW_PASSWORD, secret, code, *codes):
        assert secret_value not in details


def test_session_cookie_flags(browser: Browser, alice: Account) -> None:
    r = browser.sign_in(alice)
    cookie = _cookie_header(r, "__Host-session")
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "secure" in lowered
    assert "samesite=strict" in lowered
    assert "path=/" in lowered
    assert "domain" not in lowered
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 43  # 32 random bytes, base64url
    csrf = _cookie_header(r, "__Host-csrf").lower()
    assert "secure" in csrf
    assert "samesite=strict" in csrf
    assert "httponly" not in csrf


def test_session_token_is_stored_only_hashed_and_renewed_on_sign_in(
    runtime: Runtime, browser: Browser, alice: Account
) -> None:
    first = browser.sign_in(alice)
    first_token = _cookie_header(first, "__Host-session").split(";")[0].split("=", 1)[1]
    second = browser.sign_in(alice)
    second_token = _cookie_header(second, "__Host-session").split(";")[0].split("=", 1)[1]
    assert first_token != second_token
    with runtime.sessions() as s:
        hashes = set(s.execute(select(AuthSession.token_hash)).scalars())
    assert sessions.hash_token(second_token) in hashes
    assert second_token not in hashes


# -- second factor -------------------------------------------------------------------------


def test_a_code_is_accepted_once(browser: Browser, alice: Account, clock: Clock) -> None:
    browser.sign_in(alice)
    used = alice.code(clock)
    assert browser.post("/api/auth/logout").status_code == 204
    assert browser.login(alice.username, alice.password).json()["stage"] == "totp"
    replay = browser.post("/api/auth/totp", json={"code": used})
    assert replay.status_code == 401
    assert replay.json()["message"] == GENERIC_FAILURE
    clock.advance(seconds=30)
    assert browser.post("/api/auth/totp", json={"code": alice.code(clock)}).status_code == 200


def test_one_step_of_drift_is_allowed_two_are_not(
    browser: Browser, alice: Account, clock: Clock
) -> None:
    browser.login(alice.username, alice.password)
    too_old = browser.post("/api/auth/totp", json={"code": alice.code(clock, steps=-2)})
    assert too_old.status_code == 401
    clock.advance(seconds=1)
    assert browser.post("/api/auth/totp", json={"code": alice.code(clock, steps=-1)}).is_success


def test_concurrent_requests_with_one_code_exactly_one_wins(
    runtime: Runtime, alice: Account, clock: Clock
) -> None:
    settings = runtime.settings.auth
    code = alice.code(clock)
    pres = []
    with runtime.sessions() as s:
        for _ in range(8):
            pres.append(
                sessions.issue(
                    s,
                    user_id=alice.user.id,
                    kind=sessions.PRE,
                    stage="totp",
                    now=clock(),
                    settings=settings,
                    client="10.0.0.1",
                    user_agent=None,
                ).row.id
            )
        s.commit()
    barrier = threading.Barrier(len(pres))
    results: list[str] = []

    def attempt(pre_id: str) -> None:
        with runtime.sessions() as s:
            pre = s.get(AuthSession, pre_id)
            assert pre is not None
            barrier.wait()
            try:
                signin.sign_in_second_factor(
                    s,
                    crypto=runtime.crypto,
                    pre=pre,
                    code=code,
                    recovery_code=None,
                    client=Client("10.0.0.1"),
                    now=clock(),
                    settings=settings,
                )
                s.commit()
                results.append("won")
            except SignInFailed:
                s.commit()
                results.append("lost")

    threads = [threading.Thread(target=attempt, args=(p,)) for p in pres]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]


def test_recovery_code_works_once(runtime: Runtime, browser_factory: Any, clock: Clock) -> None:
    with runtime.sessions() as s:
        _, otp = service.create_user(s, username="dave", actor="test")
        s.commit()
    b: Browser = browser_factory()
    secret = b.login("dave", otp).json()["enrolment"]["secret"]
    codes = b.post("/api/auth/enrol/confirm", json={"code": pyotp.TOTP(secret).at(clock())}).json()[
        "recovery_codes"
    ]
    assert b.post("/api/auth/password", json={"old": otp, "new": NEW_PASSWORD}).is_success
    b.post("/api/auth/logout")
    assert b.login("dave", NEW_PASSWORD).json()["stage"] == "totp"
    r = b.post("/api/auth/totp", json={"recovery_code": codes[3].upper()})
    assert r.status_code == 200
    assert r.json()["stage"] == "done"
    assert b.get("/api/auth/me").json()["recovery_codes_left"] == 9
    b.post("/api/auth/logout")
    b.login("dave", NEW_PASSWORD)
    again = b.post("/api/auth/totp", json={"recovery_code": codes[3]})
    assert again.status_code == 401


# -- throttling and lockout ----------------------------------------------------------------


def _fail_password(browser: Browser, clock: Clock, username: str, times: int) -> None:
    for _ in range(times):
        clock.advance(seconds=61)  # past any back-off, so each attempt is counted
        r = browser.login(username, "not the password at all")
        assert r.status_code == 401
        assert r.json()["message"] == GENERIC_FAILURE


def test_lockout_refuses_correct_credentials_with_the_same_message(
    runtime: Runtime, browser: Browser, alice: Account, clock: Clock
) -> None:
    threshold = runtime.settings.auth.lockout_threshold
    assert threshold == 10
    _fail_password(browser, clock, alice.username, threshold)
    clock.advance(seconds=61)
    locked = browser.login(alice.username, alice.password)
    assert locked.status_code == 401
    assert locked.json()["message"] == GENERIC_FAILURE
    # Attempts during the lockout do not extend it.
    clock.advance(minutes=runtime.settings.auth.lockout_minutes - 3)
    assert browser.login(alice.username, alice.password).status_code == 401
    clock.advance(minutes=3)
    assert browser.login(alice.username, alice.password).json()["stage"] == "totp"
    with runtime.sessions() as s:
        actions = [e.action for e in s.execute(select(AuditEvent)).scalars()]
    assert "auth.lockout" in actions
    with runtime.sessions() as s:
        assert audit.verify(s).ok


def test_admin_unlocks_a_locked_account(
    runtime: Runtime,
    browser_factory: Any,
    alice: Account,
    admin_browser: Browser,
    clock: Clock,
) -> None:
    b: Browser = browser_factory()
    _fail_password(b, clock, alice.username, 10)
    clock.advance(seconds=61)
    assert b.login(alice.username, alice.password).status_code == 401
    listed = admin_browser.get(f"/api/admin/users/{alice.user.id}").json()
    assert listed["locked_until"] is not None
    assert admin_browser.post(f"/api/admin/users/{alice.user.id}/unlock").json()["changed"]
    assert b.login(alice.username, alice.password).json()["stage"] == "totp"


def test_back_off_after_a_few_failures(
    browser: Browser, alice: Account, clock: Clock, runtime: Runtime
) -> None:
    after = runtime.settings.auth.backoff_after
    for _ in range(after):
        assert browser.login(alice.username, "wrong wrong wrong").status_code == 401
    assert browser.login(alice.username, alice.password).status_code == 401  # backing off
    clock.advance(seconds=runtime.settings.auth.backoff_base_seconds + 0.1)
    assert browser.login(alice.username, alice.password).json()["stage"] == "totp"


def test_wrong_totp_codes_count_towards_lockout(
    browser: Browser, alice: Account, clock: Clock
) -> None:
    for _ in range(10):
        clock.advance(seconds=61)
        browser.login(alice.username, alice.password)
        r = browser.post("/api/auth/totp", json={"code": "000000"})
        assert r.status_code == 401
    clock.advance(seconds=61)
    assert browser.login(alice.username, alice.password).status_code == 401


def test_no_user_enumeration_by_message(browser: Browser, alice: Account, clock: Clock) -> None:
    unknown = browser.login("nobody-here", "whatever it may be")
    clock.advance(seconds=61)
    wrong = browser.login(alice.username, "whatever it may be")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


def test_no_user_enumeration_by_timing(runtime: Runtime, browser: Browser) -> None:
    # Realistic work factor for this test, so that the hash dominates as in production.
    passwords.set_parameters(time_cost=2, memory_kib=32768, parallelism=1)
    runtime.settings.auth.backoff_after = 1000
    runtime.settings.auth.lockout_threshold = 1000
    runtime.settings.auth.client_lockout_threshold = 1000
    with runtime.sessions() as s:
        make_user(s, runtime.crypto, username="known")

    def timed(name: str) -> float:
        start = time.perf_counter()
        assert browser.login(name, "a wrong password!").status_code == 401
        return time.perf_counter() - start

    timed("known")  # warm-up
    known = statistics.median(timed("known") for _ in range(7))
    unknown = statistics.median(timed(f"ghost{i}") for i in range(7))
    assert 0.6 < unknown / known < 1.6


def test_password_is_rehashed_when_parameters_change(
    runtime: Runtime, browser: Browser, alice: Account
) -> None:
    passwords.set_parameters(time_cost=2, memory_kib=2048, parallelism=1)
    browser.login(alice.username, alice.password)
    with runtime.sessions() as s:
        stored = s.get(User, alice.user.id)
        assert stored is not None
        assert "m=2048,t=2,p=1" in stored.password_hash
        assert passwords.verify_password(stored.password_hash, GOOD_PASSWORD)


# -- sessions ------------------------------------------------------------------------------


def test_idle_timeout(runtime: Runtime, user_browser: Browser, clock: Clock) -> None:
    idle = runtime.settings.auth.session_idle_minutes
    clock.advance(minutes=idle - 1)
    assert user_browser.get("/api/auth/me").status_code == 200
    clock.advance(minutes=idle - 1)  # activity above kept it alive
    assert user_browser.get("/api/auth/me").status_code == 200
    clock.advance(minutes=idle)
    assert user_browser.get("/api/auth/me").status_code == 401


def test_absolute_timeout(runtime: Runtime, user_browser: Browser, clock: Clock) -> None:
    signed_in = clock()
    hours = runtime.settings.auth.session_absolute_hours
    while clock() - signed_in < dt.timedelta(hours=hours, minutes=-15):
        clock.advance(minutes=15)  # steady activity: the idle timeout never strikes
        assert user_browser.get("/api/auth/me").status_code == 200
    clock.advance(minutes=15)
    assert user_browser.get("/api/auth/me").status_code == 401


def test_preauth_state_is_short_lived(
    runtime: Runtime, browser: Browser, alice: Account, clock: Clock
) -> None:
    browser.login(alice.username, alice.password)
    clock.advance(minutes=runtime.settings.auth.preauth_minutes, seconds=1)
    r = browser.post("/api/auth/totp", json={"code": alice.code(clock)})
    assert r.status_code == 401


def test_ending_another_session_takes_effect_on_its_next_request(
    browser_factory: Any, alice: Account
) -> None:
    laptop: Browser = browser_factory()
    phone: Browser = browser_factory()
    laptop.sign_in(alice)
    phone.sign_in(alice)
    listed = laptop.get("/api/auth/sessions").json()
    assert len(listed) == 2
    other = next(s for s in listed if not s["current"])
    assert laptop.delete(f"/api/auth/sessions/{other['id']}").status_code == 200
    assert phone.get("/api/auth/me").status_code == 401
    assert laptop.get("/api/auth/me").status_code == 200


def test_logout_ends_the_session_on_the_server(user_browser: Browser) -> None:
    stolen = dict(user_browser.client.cookies.items())
    assert user_browser.post("/api/auth/logout").status_code == 204
    user_browser.client.cookies.clear()
    for name, value in stolen.items():
        user_browser.client.cookies.set(name, value)
    assert user_browser.get("/api/auth/me").status_code == 401


def test_password_change_ends_other_sessions(browser_factory: Any, alice: Account) -> None:
    a: Browser = browser_factory()
    b: Browser = browser_factory()
    a.sign_in(alice)
    b.sign_in(alice)
    r = a.post("/api/auth/password", json={"old": alice.password, "new": NEW_PASSWORD})
    assert r.status_code == 200
    assert b.get("/api/auth/me").status_code == 401
    assert a.get("/api/auth/me").status_code == 200


def test_disable_and_totp_reset_end_sessions_at_once(
    browser_factory: Any, alice: Account, admin_browser: Browser
) -> None:
    b: Browser = browser_factory()
    b.sign_in(alice)
    assert admin_browser.post(f"/api/admin/users/{alice.user.id}/disable").is_success
    assert b.get("/api/auth/me").status_code == 401
    assert admin_browser.post(f"/api/admin/users/{alice.user.id}/enable").is_success
    b.sign_in(alice)
    assert admin_browser.post(f"/api/admin/users/{alice.user.id}/reset-totp").is_success
    assert b.get("/api/auth/me").status_code == 401
    assert b.login(alice.username, alice.password).json()["stage"] == "enrol"


# -- CSRF ----------------------------------------------------------------------------------


def test_csrf_rejections(user_browser: Browser) -> None:
    c = user_browser.client
    token = user_browser.csrf()
    origin = {"Origin": "https://testserver"}
    missing = c.post("/api/auth/logout", headers=origin)
    assert missing.status_code == 403
    assert missing.json()["error"] == "csrf_failed"
    assert missing.headers["x-frame-options"] == "DENY"
    mismatched = c.post("/api/auth/logout", headers={**origin, "X-CSRF-Token": "x" + token})
    assert mismatched.status_code == 403
    foreign = c.post(
        "/api/auth/logout", headers={"Origin": "https://evil.example", "X-CSRF-Token": token}
    )
    assert foreign.status_code == 403
    no_origin = c.post("/api/auth/logout", headers={"X-CSRF-Token": token})
    assert no_origin.status_code == 403
    referer = c.post(
        "/api/auth/logout",
        headers={"Referer": "https://testserver/chat", "X-CSRF-Token": token},
    )
    assert referer.status_code == 204


def test_csrf_token_must_belong_to_the_session(user_browser: Browser) -> None:
    # A cookie and header that match each other but were not issued with this session.
    user_browser.client.cookies.set("__Host-csrf", "planted-token-value")
    r = user_browser.client.post(
        "/api/auth/logout",
        headers={"Origin": "https://testserver", "X-CSRF-Token": "planted-token-value"},
    )
    assert r.status_code == 403


def test_login_itself_needs_csrf(browser: Browser, alice: Account) -> None:
    r = browser.client.post(
        "/api/auth/login",
        json={"username": alice.username, "password": alice.password},
        headers={"Origin": "https://testserver"},
    )
    assert r.status_code == 403


# -- API tokens ----------------------------------------------------------------------------


def test_api_tokens(user_browser: Browser, browser_factory: Any, clock: Clock) -> None:
    created = user_browser.post(
        "/api/auth/tokens", json={"name": "script", "scopes": ["read"], "days": 1}
    )
    assert created.status_code == 201, created.text
    secret = created.json()["token"]
    script: Browser = browser_factory()
    bearer = {"Authorization": f"Bearer {secret}"}
    me = script.client.get("/api/auth/me", headers=bearer)
    assert me.status_code == 200
    assert me.json()["via"] == "token"
    # Exempt from CSRF (no ambient credential) but limited by scope.
    assert script.client.delete("/api/auth/sessions", headers=bearer).status_code == 403
    # A token cannot mint tokens.
    assert (
        script.client.post(
            "/api/auth/tokens", json={"name": "x", "scopes": ["read"]}, headers=bearer
        ).status_code
        == 403
    )
    assert script.client.get("/api/admin/users", headers=bearer).status_code == 403
    token_id = created.json()["info"]["id"]
    assert user_browser.delete(f"/api/auth/tokens/{token_id}").status_code == 200
    assert script.client.get("/api/auth/me", headers=bearer).status_code == 401
    second = user_browser.post(
        "/api/auth/tokens", json={"name": "short", "scopes": ["read"], "days": 1}
    ).json()["token"]
    clock.advance(days=1, seconds=1)
    expired = script.client.get("/api/auth/me", headers={"Authorization": f"Bearer {second}"})
    assert expired.status_code == 401
    anonymous = browser_factory()
    assert (
        anonymous.post("/api/auth/tokens", json={"name": "x", "scopes": ["read"]}).status_code
        == 401
    )


# -- administration ------------------------------------------------------------------------


def test_admin_api_and_last_admin(
    admin_browser: Browser,
    user_browser: Browser,
    root: Account,
    alice: Account,
    runtime: Runtime,
    clock: Clock,
) -> None:
    assert user_browser.get("/api/admin/users").status_code == 403
    created = admin_browser.post("/api/admin/users", json={"username": "erin"})
    assert created.status_code == 201
    assert len(created.json()["one_time_password"]) == 23
    erin = created.json()["user"]["id"]
    group = admin_browser.post("/api/admin/groups", json={"name": "eng"}).json()
    added = admin_browser.post(f"/api/admin/groups/{group['id']}/members", json={"user_id": erin})
    assert [m["username"] for m in added.json()["members"]] == ["erin"]
    # The init admin is still active and never signed in; disable it so root is the last one.
    users = admin_browser.get("/api/admin/users").json()
    init_admin = next(u for u in users if u["username"] == "admin")
    assert admin_browser.post(f"/api/admin/users/{init_admin['id']}/disable").is_success
    refused = admin_browser.patch(f"/api/admin/users/{root.user.id}", json={"role": "user"})
    assert refused.status_code == 403
    assert admin_browser.post(f"/api/admin/users/{root.user.id}/disable").status_code == 403
    assert admin_browser.delete(f"/api/admin/users/{root.user.id}").status_code == 403
    held = admin_browser.patch(f"/api/admin/users/{alice.user.id}", json={"role": "admin"})
    assert held.status_code == 202  # making an admin waits for a second admin's approval
    assert user_browser.get("/api/admin/users").status_code == 403
    with runtime.sessions() as s:
        second = make_user(s, runtime.crypto, username="second", role="admin").user
        approvals.approve(
            session=s, request_id=held.json()["id"], approver=second, now=clock(), runtime=runtime
        )
    promoted = admin_browser.get(f"/api/admin/users/{alice.user.id}")
    assert promoted.json()["role"] == "admin"
    # Role is read fresh per request: alice is admin on her very next request.
    assert user_browser.get("/api/admin/users").status_code == 200
    assert admin_browser.delete(f"/api/admin/groups/{group['id']}").status_code == 204
    assert admin_browser.delete(f"/api/admin/users/{erin}").status_code == 204


def test_cleanup_purges_expired_sessions(runtime: Runtime, browser: Browser, clock: Clock) -> None:
    """The cleanup job deletes session rows past their absolute timeout."""
    from sqlalchemy import func

    with runtime.sessions() as s:
        account = make_user(s, runtime.crypto, username="purgee")
    browser.sign_in(account)
    with runtime.sessions() as s:
        assert s.execute(select(func.count()).select_from(AuthSession)).scalar_one() >= 1
        later = clock() + dt.timedelta(
            hours=runtime.settings.auth.session_absolute_hours, minutes=1
        )
        assert sessions.purge_expired(s, now=later, settings=runtime.settings.auth) >= 1
        s.commit()
        assert s.execute(select(func.count()).select_from(AuthSession)).scalar_one() == 0
