"""TOTP (RFC 6238) on top of pyotp: secrets, codes per time step, QR codes, recovery codes.

A code is matched to a time step; the caller accepts it only when that step is later than
the last accepted one (stored on the user), which makes every code single-use.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
from collections.abc import Callable
from typing import Any

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

STEP_SECONDS = 30
DIGITS = 6
SECRET_BYTES = 20  # 160 bits, the RFC 4226 recommendation for SHA-1
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"

_DIGESTS: dict[str, Callable[..., Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
# Recovery codes carry ~59 bits from a CSPRNG, so a light argon2id suffices; a sign-in
# with one checks up to ten hashes and must stay fast.
_recovery_hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


def new_secret() -> str:
    """A fresh base32 secret of 160 bits from the CSPRNG."""
    return pyotp.random_base32(length=32)


def hotp(secret_b32: str, counter: int, *, digits: int = DIGITS, digest: str = "sha1") -> str:
    """The HOTP value (RFC 4226) for a counter."""
    return pyotp.HOTP(secret_b32, digits=digits, digest=_DIGESTS[digest]).at(counter)


def time_step(unix_seconds: float) -> int:
    """The RFC 6238 time step T for a moment (T0 = 0, X = 30 s)."""
    return int(unix_seconds // STEP_SECONDS)


def code_at(
    secret_b32: str, unix_seconds: float, *, digits: int = DIGITS, digest: str = "sha1"
) -> str:
    """The TOTP value for a moment."""
    return hotp(secret_b32, time_step(unix_seconds), digits=digits, digest=digest)


def match_step(secret_b32: str, code: str, unix_seconds: float, *, drift: int) -> int | None:
    """The time step within ±drift of now whose code equals `code`, else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    now = time_step(unix_seconds)
    found = None
    for step in range(now - drift, now + drift + 1):
        # Compare every candidate (no early exit) in constant time.
        if hmac.compare_digest(hotp(secret_b32, step), code) and found is None:
            found = step
    return found


def provisioning_uri(secret_b32: str, *, username: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads."""
    return pyotp.TOTP(secret_b32).provisioning_uri(name=username, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The URI as a QR code in SVG, rendered locally (no external service)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=4, xmldecl=False, svgns=True)
    return buffer.getvalue().decode("utf-8")


def new_recovery_codes() -> list[str]:
    """Ten fresh recovery codes like 'abcd-efgh-jkmn' (~59 bits each)."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


def normalize_recovery_code(code: str) -> str:
    """Lower-case, without spaces or dashes: how a code is hashed and compared."""
    return "".join(ch for ch in code.lower() if ch.isalnum())


def hash_recovery_code(code: str) -> str:
    """Hash a recovery code for storage."""
    return _recovery_hasher.hash(normalize_recovery_code(code))


def recovery_code_matches(stored_hash: str, code: str) -> bool:
    """Whether a code matches a stored recovery-code hash."""
    try:
        return _recovery_hasher.verify(stored_hash, normalize_recovery_code(code))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
