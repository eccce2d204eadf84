"""Credential provenance: who may sign in as an account besides its owner (invariant 4).

Each case plays a history of creations, resets, enrolments and password changes, and checks
the derived controller against what each party really knows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from appliance.auth import provenance
from appliance.auth.provenance import ABSENT, Credentials
from appliance.auth.tables import User

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
A, B = "user:a", "user:b"


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def created(by: str) -> Credentials:
    return Credentials(
        principal="user:x",
        password_set_by=by,
        password_set_at=T0,
        password_changed_at=None,
        totp_enrolled=False,
        totp_reset_by=by,
        password_set_kept_totp=False,
        kept_totp_known_by=None,
    )


def enrol(c: Credentials) -> Credentials:
    return replace(c, totp_enrolled=True)


def change(c: Credentials, minutes: int) -> Credentials:
    return replace(c, password_changed_at=at(minutes))


def test_an_account_an_admin_created_stays_theirs() -> None:
    c = created(A)
    assert c.controller() == A  # no second factor yet: whoever has the password enrols
    c = change(enrol(c), 5)  # the owner (or the admin) enrols and changes the password
    assert c.controller() == A


def test_a_password_reset_alone_of_an_enrolled_account_ends_when_the_owner_changes_it() -> None:
    c = change(enrol(created("operator:ops")), 1)
    assert c.controller() is None  # operators control nothing
    c = c.after_password_reset(by=A, now=at(10))
    assert c.totp_known_by() != A
    assert c.controller() is None  # A knows the password, not the owner's second factor
    c = change(c, 20)
    assert c.password_known_by() is None
    c = c.after_totp_reset(by=A)  # now A knows neither factor
    assert c.controller() is None
    assert c.totp_known_by() == ABSENT


def test_both_resets_give_control_in_either_order() -> None:
    base = change(enrol(created("operator:ops")), 1)
    first = base.after_password_reset(by=A, now=at(10)).after_totp_reset(by=A)
    second = base.after_totp_reset(by=A).after_password_reset(by=A, now=at(10))
    assert first.controller() == second.controller() == A
    # The owner enrolling and changing the password does not end it: A could have done both.
    assert change(enrol(first), 30).controller() == A


def test_a_second_factor_an_admin_enrolled_long_ago_counts_when_they_reset_the_password() -> None:
    c = change(enrol(created(A)), 1)  # A's puppet: A enrolled it
    c = c.after_password_reset(by=B, now=at(10))  # another admin resets the password
    assert c.controller() is None  # B lacks the factor, A lacks the password
    c = change(c, 20)  # the owner changes it with the old factor (which A knows)
    assert c.controller() is None
    c = c.after_password_reset(by=A, now=at(30))
    assert c.controller() == A  # A knows that factor and the new password


def test_another_admins_totp_reset_leaves_the_password_setter_in_control() -> None:
    c = change(enrol(created(A)), 1).after_totp_reset(by=B)
    assert c.controller() == A  # A still knows the password and can enrol
    c = change(enrol(c), 20)
    assert c.controller() == A


def test_settling_keeps_what_is_known_of_the_kept_factor() -> None:
    c = change(enrol(created(A)), 1).after_password_reset(by=B, now=at(10))
    c = change(c, 20).settled()
    assert c.password_set_by is None
    assert c.totp_known_by() == A


def test_an_account_resetting_its_own_password_stays_its_controllers() -> None:
    user = User(id="x", username="x", role="admin", password_hash="-")
    provenance.record_created(user, by=A, now=T0)
    user.totp_enrolled = True
    user.password_changed_at = at(1)
    assert provenance.controller(user) == A
    provenance.record_password_reset(user, by=user.principal, now=at(5))
    assert provenance.controller(user) == A  # A, signed in as x, learnt the new password
