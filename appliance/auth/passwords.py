"""Password hashing (argon2id), the password policy, and one-time passwords.

argon2-cffi's PasswordHasher is used directly rather than passlib's CryptContext: passlib
is unmaintained and warns on Python 3.11+, while argon2-cffi is the maintained reference
binding, defaults to argon2id with RFC 9106 parameters, and reports (check_needs_rehash)
when a stored hash was made with other parameters, so sign-in can rehash it.
"""

from __future__ import annotations

import secrets
import unicodedata
from functools import cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance.core.errors import InvalidInput

MIN_LENGTH = 12
MAX_LENGTH = 256  # well above the required 128; bounds the work one request can ask for

_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o/1/l/i: read aloud and typed once


class _State:
    hasher = PasswordHasher()
    # Verified against for unknown users so that timing does not reveal which names exist.
    dummy_hash = hasher.hash(secrets.token_urlsafe(16))


def set_parameters(*, time_cost: int, memory_kib: int, parallelism: int) -> None:
    """Use other argon2id parameters from now on (stored hashes are rehashed at sign-in)."""
    _State.hasher = PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
    )
    _State.dummy_hash = _State.hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """Hash with argon2id."""
    return _State.hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant-work check; an unknown user (None) is checked against a dummy hash."""
    try:
        return (
            _State.hasher.verify(stored_hash or _State.dummy_hash, password)
            and stored_hash is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with other parameters than the current ones."""
    return _State.hasher.check_needs_rehash(stored_hash)


def one_time_password() -> str:
    """A 20-character random password in groups of five, ~98 bits."""
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(20))
    return "-".join(chars[i : i + 5] for i in range(0, 20, 5))


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower-cased."""
    text = resources.files("appliance.auth").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def check_policy(password: str, *, username: str | None = None) -> None:
    """Refuse a password that is too short, too long, common, or the username (NIST 800-63B)."""
    length = len(unicodedata.normalize("NFC", password))
    if length < MIN_LENGTH:
        raise InvalidInput(
            f"The password is too short: use at least {MIN_LENGTH} characters. "
            "A few unrelated words make a good one."
        )
    if length > MAX_LENGTH:
        raise InvalidInput(f"The password is too long: use at most {MAX_LENGTH} characters.")
    folded = password.strip().lower()
    if folded in common_passwords():
        raise InvalidInput("This password is on a list of common passwords. Choose another one.")
    if username and folded == username.strip().lower():
        raise InvalidInput("The password must not be the username. Choose another one.")
