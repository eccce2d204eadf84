"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.auth import passwords
from appliance.core.errors import InvalidInput


def test_hash_is_argon2id_and_verifies() -> None:
    stored = passwords.hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(stored, "correct horse battery staple")
    assert not passwords.verify_password(stored, "correct horse battery stapl")


def test_unknown_user_is_never_verified() -> None:
    assert not passwords.verify_password(None, "anything at all")


def test_needs_rehash_when_parameters_change() -> None:
    stored = passwords.hash_password("a long enough password")
    assert not passwords.needs_rehash(stored)
    passwords.set_parameters(time_cost=2, memory_kib=2048, parallelism=1)
    assert passwords.needs_rehash(stored)


@pytest.mark.parametrize("pw", ["", "short", "elevenchars"])
def test_too_short(pw: str) -> None:
    with pytest.raises(InvalidInput, match="too short"):
        passwords.check_policy(pw)


def test_long_passwords_are_allowed_up_to_256() -> None:
    passwords.check_policy("x" * 128 + "unusual tail")
    passwords.check_policy("é" * 256)
    with pytest.raises(InvalidInput, match="too long"):
        passwords.check_policy("x" * 257)


@pytest.mark.parametrize("pw", ["password1234", "Qwertyuiop123", "iloveyou1234", "123456789012"])
def test_common_passwords_are_refused(pw: str) -> None:
    with pytest.raises(InvalidInput, match="common"):
        passwords.check_policy(pw)


def test_common_list_is_shipped_and_sizeable() -> None:
    assert len(passwords.common_passwords()) > 4000


def test_username_is_refused() -> None:
    with pytest.raises(InvalidInput, match="username"):
        passwords.check_policy("Marguerite-Dupont", username="marguerite-dupont")


def test_no_composition_rules() -> None:
    passwords.check_policy("all lower case words here")


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=12, max_size=64).filter(lambda s: len(s.strip()) >= 12))
def test_any_long_uncommon_password_round_trips(pw: str) -> None:
    if pw.strip().lower() in passwords.common_passwords():
        return
    passwords.check_policy(pw)
    assert passwords.verify_password(passwords.hash_password(pw), pw)


def test_one_time_passwords_are_random_and_pass_the_policy() -> None:
    a, b = passwords.one_time_password(), passwords.one_time_password()
    assert a != b
    assert len(a) == 23
    passwords.check_policy(a)
