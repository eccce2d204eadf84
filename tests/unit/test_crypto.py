"""Envelope encryption: round trips, binding to place, tamper detection, shredding."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.core.crypto import Crypto, Keyring, open_crypto
from appliance.core.errors import CryptoError, KeyMissing, UnsafeConfiguration


@pytest.fixture
def crypto(tmp_path: Path) -> Crypto:
    key_file = tmp_path / "etc" / "kek"
    Keyring.generate().save(key_file)
    return open_crypto(key_file, tmp_path / "keys")


def test_key_file_is_private(tmp_path: Path) -> None:
    key_file = tmp_path / "kek"
    Keyring.generate().save(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    os.chmod(key_file, 0o640)
    with pytest.raises(UnsafeConfiguration, match="chmod 600"):
        Keyring.load(key_file)


def test_round_trip_and_no_plaintext_at_rest(crypto: Crypto) -> None:
    crypto.create_data_key("doc", "d1")
    ct = crypto.encrypt_text("doc", "d1", "chunk:0:text", "Quarterly secret MARKER-123")
    assert b"MARKER-123" not in ct
    assert crypto.decrypt_text("doc", "d1", "chunk:0:text", ct) == "Quarterly secret MARKER-123"
    for f in crypto.keystore_dir.rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600


@given(data=st.binary(max_size=512), place=st.text(min_size=1, max_size=20))
@settings(max_examples=50, deadline=None)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, place: str
) -> None:
    root = tmp_path_factory.mktemp("c")
    Keyring.generate().save(root / "kek")
    c = open_crypto(root / "kek", root / "keys")
    c.create_data_key("doc", "p")
    assert c.decrypt("doc", "p", place, c.encrypt("doc", "p", place, data)) == data


def test_ciphertext_moved_to_another_place_fails(crypto: Crypto) -> None:
    crypto.create_data_key("doc", "d1")
    crypto.create_data_key("doc", "d2")
    ct = crypto.encrypt_text("doc", "d1", "chunk:0:text", "hello")
    with pytest.raises(CryptoError, match="chunk:1:text"):
        crypto.decrypt_text("doc", "d1", "chunk:1:text", ct)
    with pytest.raises(CryptoError):
        crypto.decrypt_text("doc", "d2", "chunk:0:text", ct)


@pytest.mark.parametrize("where", ["version", "nonce", "body", "tag"])
def test_any_flipped_bit_fails_loudly(crypto: Crypto, where: str) -> None:
    crypto.create_data_key("doc", "d1")
    ct = bytearray(crypto.encrypt_text("doc", "d1", "title", "a title"))
    index = {"version": 0, "nonce": 3, "body": 14, "tag": len(ct) - 1}[where]
    ct[index] ^= 0x01
    with pytest.raises(CryptoError, match="doc d1"):
        crypto.decrypt_text("doc", "d1", "title", bytes(ct))


def test_shredding_makes_content_unreadable_for_good(crypto: Crypto) -> None:
    crypto.create_data_key("doc", "gone")
    crypto.create_data_key("doc", "kept")
    gone = crypto.encrypt_text("doc", "gone", "blob", "erase me")
    kept = crypto.encrypt_text("doc", "kept", "blob", "keep me")
    crypto.delete_data_key("doc", "gone")
    crypto.delete_data_key("doc", "gone")  # idempotent
    fresh = Crypto(crypto.keyring, crypto.keystore_dir)  # no in-memory cache
    with pytest.raises(KeyMissing, match="gone"):
        fresh.decrypt_text("doc", "gone", "blob", gone)
    assert fresh.decrypt_text("doc", "kept", "blob", kept) == "keep me"


def test_wrapped_key_needs_the_key_file(crypto: Crypto, tmp_path: Path) -> None:
    crypto.create_data_key("doc", "d1")
    ct = crypto.encrypt("doc", "d1", "blob", b"x")
    other = Crypto(Keyring.generate(), crypto.keystore_dir)
    with pytest.raises(KeyMissing, match="not in the key file"):
        other.decrypt("doc", "d1", "blob", ct)


def test_data_key_is_created_once(crypto: Crypto) -> None:
    a = crypto.create_data_key("system", "mac")
    b = Crypto(crypto.keyring, crypto.keystore_dir).create_data_key("system", "mac")
    assert a == b


def test_keyed_hash_differs_from_plain_sha256(crypto: Crypto, tmp_path: Path) -> None:
    import hashlib

    f = tmp_path / "f.txt"
    f.write_bytes(b"content")
    mac = crypto.mac_file("document-content", f)
    assert mac == crypto.mac("document-content", b"content")
    assert mac != hashlib.sha256(b"content").hexdigest()
    other = tmp_path / "other"
    Keyring.generate().save(other / "kek")
    assert open_crypto(other / "kek", other / "keys").mac_file("document-content", f) != mac
