"""TOTP and HOTP against the RFC test vectors, and single-step matching with drift."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.auth import totp

SEED_SHA1 = b"12345678901234567890"  # 20 bytes
SEED_SHA256 = b"12345678901234567890123456789012"  # 32 bytes
SEED_SHA512 = (b"1234567890" * 7)[:64]  # 64 bytes
SEEDS = {"sha1": SEED_SHA1, "sha256": SEED_SHA256, "sha512": SEED_SHA512}

# RFC 6238 Appendix B: (time, TOTP for SHA1, SHA256, SHA512), 8 digits.
RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]

# RFC 4226 Appendix D: HOTP values for counters 0..9 with the 20-byte seed, 6 digits.
RFC4226 = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]


def b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode()


@pytest.mark.parametrize(("t", "sha1", "sha256", "sha512"), RFC6238)
def test_rfc6238_appendix_b(t: int, sha1: str, sha256: str, sha512: str) -> None:
    for digest, expected in (("sha1", sha1), ("sha256", sha256), ("sha512", sha512)):
        assert totp.code_at(b32(SEEDS[digest]), t, digits=8, digest=digest) == expected


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226)))
def test_rfc4226_hotp(counter: int, expected: str) -> None:
    assert totp.hotp(b32(SEED_SHA1), counter) == expected


def test_seed_lengths() -> None:
    assert [len(SEEDS[d]) for d in ("sha1", "sha256", "sha512")] == [20, 32, 64]


def test_new_secret_has_160_bits() -> None:
    secret = totp.new_secret()
    assert len(base64.b32decode(secret)) == 20
    assert secret != totp.new_secret()


@given(t=st.integers(min_value=300, max_value=4_000_000_000), offset=st.integers(-3, 3))
def test_match_step_accepts_exactly_the_drift_window(t: int, offset: int) -> None:
    secret = b32(SEED_SHA1)
    code = totp.hotp(secret, totp.time_step(t) + offset)
    step = totp.match_step(secret, code, t, drift=1)
    if abs(offset) <= 1:
        assert step is not None
        assert totp.hotp(secret, step) == code
    else:
        # Another step in the window could share the code by chance (10^-6): then it matches
        # that step, never the one outside the window.
        assert step is None or abs(step - totp.time_step(t)) <= 1


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "12 34 5x"])
def test_malformed_codes_never_match(bad: str) -> None:
    assert totp.match_step(b32(SEED_SHA1), bad, 59, drift=1) is None


def test_recovery_codes_are_single_format_and_hashed() -> None:
    codes = totp.new_recovery_codes()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    stored = totp.hash_recovery_code(codes[0])
    assert codes[0] not in stored
    assert totp.recovery_code_matches(stored, codes[0].upper().replace("-", " "))
    assert not totp.recovery_code_matches(stored, codes[1])


def test_qr_code_is_local_svg() -> None:
    uri = totp.provisioning_uri(b32(SEED_SHA1), username="alice", issuer="Appliance")
    assert uri.startswith("otpauth://totp/Appliance:alice?")
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg")
    assert "<image" not in svg
    assert "href" not in svg
