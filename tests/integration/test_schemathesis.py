"""Schemathesis against the appliance's own OpenAPI schema: anonymous, as a user, as an admin.

No answer is a 5xx, and nothing but sign-in and health answers successfully without a
session. Bounded: a few examples per operation and a deadline for the whole run.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.case import Case

from tests.fixtures.auth import Browser

PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/api/auth/csrf"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/totp"),
    ("POST", "/api/auth/enrol/confirm"),
    ("POST", "/api/auth/password"),
}
EXAMPLES_PER_OPERATION = 6
BUDGET_SECONDS = 25.0


def _operations(browser: Browser) -> list[Any]:
    raw = browser.client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    return [result.ok() for result in schema.get_all_operations()]


def _exercise(browser: Browser, *, anonymous: bool) -> dict[int, int]:
    """Send generated requests for every operation; return a count per status code."""
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + BUDGET_SECONDS
    operations = _operations(browser)
    assert len(operations) >= 20
    for operation in operations:
        if time.monotonic() > deadline:
            break
        key = (operation.method.upper(), operation.path)
        if key == ("POST", "/api/auth/logout") and not anonymous:
            continue  # would end the session the rest of the run needs
        if key == ("PUT", "/api/admin/system/switches") and not anonymous:
            continue  # the kill switch would answer the rest of the run with 503 on purpose

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Case) -> None:
            kwargs = case.as_transport_kwargs(base_url="https://testserver")
            method = kwargs.pop("method")
            url = kwargs.pop("url")
            headers = {**(kwargs.pop("headers", None) or {})}
            for name in list(headers):
                if name.lower() in ("authorization", "cookie", "x-csrf-token", "origin"):
                    headers.pop(name)
            kwargs.pop("cookies", None)
            if isinstance(kwargs.get("data"), bytes | str):
                # Transport kwargs are shaped for requests; httpx takes raw bodies as content.
                kwargs["content"] = kwargs.pop("data")
            response = browser.request(method, url, headers=headers, **kwargs)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (method, url, response.text)
            # check() runs within this iteration, so the loop variable is current.
            if anonymous and key not in PUBLIC:  # noqa: B023
                assert response.status_code in (401, 403, 404, 405, 422), (method, url)
                assert not (200 <= response.status_code < 300)

        check()
    return statuses


@pytest.mark.timeout(120)
def test_anonymous(browser: Browser) -> None:
    statuses = _exercise(browser, anonymous=True)
    assert sum(statuses.values()) >= 40


@pytest.mark.timeout(120)
def test_as_user(user_browser: Browser) -> None:
    statuses = _exercise(user_browser, anonymous=False)
    assert any(200 <= code < 300 for code in statuses)
    assert statuses.get(403, 0) > 0  # the admin routes
    assert user_browser.get("/api/auth/me").status_code == 200


@pytest.mark.timeout(120)
def test_as_admin(admin_browser: Browser) -> None:
    statuses = _exercise(admin_browser, anonymous=False)
    assert any(200 <= code < 300 for code in statuses)
