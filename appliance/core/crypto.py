"""Envelope encryption: a keyring of KEKs, a key store of wrapped data keys, AES-256-GCM.

Layout. The key file (JSON, 0600) holds the key-encryption keys, each with an id, one of
them primary. The key store is a directory outside the data dir with one file per data
key: ``<kind>/<owner_id>.json`` = the data key wrapped (AES-GCM) by a KEK, with that KEK's
id. Deleting that file crypto-shreds every copy of the content it opened. Rotation
(``rotation.py``) rewraps entries under a new primary KEK; a lock file in the key store
orders those rewrites against shredding, and a running process reloads a changed key file.

Ciphertext format: ``b"\\x01" || nonce(12) || AES-GCM(ciphertext || tag)``. The associated
data is ``"<kind>:<owner_id>:<place>"`` so a ciphertext moved to another place fails.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.core.errors import CryptoError, KeyMissing, UnsafeConfiguration
from appliance.core.places import MAC_OWNER, SYSTEM_KIND

FORMAT_VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
SAFE_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
LOCK_NAME = ".lock"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write a file atomically with mode 0600 (tmp file, fsync, rename, fsync dir).

    With ``exclusive`` the file is linked into place and FileExistsError is raised when
    another writer got there first, so two processes never create two different keys.
    """
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.geteuid() == 0:  # a new key-store kind dir belongs to the store's owner
            st = path.parent.parent.stat()
            os.chown(path.parent, st.st_uid, st.st_gid)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _keep_owner(fd, path)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _keep_owner(fd: int, path: Path) -> None:
    # root rewriting the key file or a key-store entry (or creating a lock file) must
    # leave it usable by the service account that owns it (or its directory), or the
    # service would fail on its next start or deletion.
    if os.geteuid() != 0:
        return
    try:
        st = path.stat()
    except FileNotFoundError:
        st = path.parent.stat()
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        os.fchown(fd, st.st_uid, st.st_gid)


def open_lock_file(path: Path) -> int:
    """Open (or create, 0600, owned like its directory) a file used only for flock."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    if os.geteuid() == 0:
        st = path.parent.stat()
        try:
            os.fchown(fd, st.st_uid, st.st_gid)
        except OSError:
            os.close(fd)
            raise
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Keyring:
    """The key-encryption keys from the key file."""

    primary: str
    keys: dict[str, bytes]

    @classmethod
    def generate(cls) -> Keyring:
        """A fresh keyring with one random primary KEK."""
        kek_id = "kek-" + secrets.token_hex(4)
        return cls(primary=kek_id, keys={kek_id: secrets.token_bytes(KEY_BYTES)})

    def to_json(self) -> bytes:
        """Serialise for the key file."""
        body = {
            "version": 1,
            "primary": self.primary,
            "keys": {kid: _b64(key) for kid, key in self.keys.items()},
        }
        return json.dumps(body, indent=2).encode()

    def save(self, path: Path) -> None:
        """Write the key file with mode 0600."""
        _write_private(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Read the key file, refusing one that others can read."""
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError as exc:
            raise UnsafeConfiguration(
                f"The key file {path} does not exist. Run `appliance init` to create it, "
                "or restore it from your vault."
            ) from exc
        if mode & 0o077:
            raise UnsafeConfiguration(
                f"The key file {path} is readable by others (mode {mode:o}). "
                f"Fix it with: chmod 600 {path}"
            )
        try:
            body = json.loads(path.read_bytes())
            keys = {str(kid): _unb64(val) for kid, val in body["keys"].items()}
            primary = str(body["primary"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UnsafeConfiguration(
                f"The key file {path} is not a valid appliance key file. Restore it from "
                "your vault; without it the encrypted data cannot be read."
            ) from exc
        if primary not in keys or any(len(k) != KEY_BYTES for k in keys.values()):
            raise UnsafeConfiguration(
                f"The key file {path} is damaged. Restore it from your vault."
            )
        return cls(primary=primary, keys=keys)


@dataclass(frozen=True)
class KeyEntry:
    """One wrapped data key in the key store (no key material: names only)."""

    kind: str
    owner_id: str
    kek_id: str | None  # None when the entry cannot be parsed


class Crypto:
    """Data keys (wrapped in the key store) and authenticated encryption of content."""

    def __init__(self, keyring: Keyring, keystore_dir: Path, key_file: Path | None = None) -> None:
        self.keyring = keyring
        self.keystore_dir = keystore_dir
        self.key_file = key_file
        self._key_file_stamp = _stamp(key_file)
        self._cache: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    # -- the keyring ----------------------------------------------------------------

    def refresh_keyring(self) -> Keyring:
        """Reload the key file if it changed on disk (a rotation by another process)."""
        if self.key_file is None:
            return self.keyring
        stamp = _stamp(self.key_file)
        if stamp != self._key_file_stamp:
            self.keyring = Keyring.load(self.key_file)
            self._key_file_stamp = stamp
        return self.keyring

    def use_keyring(self, keyring: Keyring) -> None:
        """Adopt a keyring this process just saved to the key file."""
        self.keyring = keyring
        self._key_file_stamp = _stamp(self.key_file)

    @contextmanager
    def store_lock(self) -> Iterator[None]:
        """Exclusive lock over key-store writes, across processes (flock on a lock file).

        Rotation holds it while it rewrites an entry, and shredding while it deletes one,
        so a rewrap can never write back a key that was deleted meanwhile.
        """
        self.keystore_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = open_lock_file(self.keystore_dir / LOCK_NAME)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- data keys ----------------------------------------------------------------

    def _key_path(self, kind: str, owner_id: str) -> Path:
        if not kind or not owner_id or not set(kind + owner_id) <= SAFE_ID:
            raise ValueError(f"unsafe key name {kind!r}/{owner_id!r}")
        return self.keystore_dir / kind / f"{owner_id}.json"

    @staticmethod
    def _wrap_aad(kind: str, owner_id: str) -> bytes:
        return f"dek:{kind}:{owner_id}".encode()

    def create_data_key(self, kind: str, owner_id: str) -> bytes:
        """Make and store a new data key; refuses to replace an existing one."""
        path = self._key_path(kind, owner_id)
        if path.exists():
            return self.data_key(kind, owner_id)
        dek = secrets.token_bytes(KEY_BYTES)
        keyring = self.refresh_keyring()
        try:
            self._store(kind, owner_id, dek, keyring, keyring.primary, exclusive=True)
        except FileExistsError:
            return self.data_key(kind, owner_id)
        with self._lock:
            self._cache[(kind, owner_id)] = dek
        return dek

    def _store(
        self,
        kind: str,
        owner_id: str,
        dek: bytes,
        keyring: Keyring,
        kek_id: str,
        *,
        exclusive: bool = False,
    ) -> None:
        nonce = secrets.token_bytes(NONCE_BYTES)
        wrapped = AESGCM(keyring.keys[kek_id]).encrypt(nonce, dek, self._wrap_aad(kind, owner_id))
        body = {"kek_id": kek_id, "nonce": _b64(nonce), "wrapped": _b64(wrapped)}
        _write_private(
            self._key_path(kind, owner_id), json.dumps(body).encode(), exclusive=exclusive
        )

    def _read_entry(self, kind: str, owner_id: str) -> dict[str, str]:
        path = self._key_path(kind, owner_id)
        try:
            body = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise KeyMissing(
                f"The data key for {kind} {owner_id} is not in the key store "
                f"{self.keystore_dir}: the content was erased, or the key store was not restored."
            ) from exc
        except ValueError as exc:
            raise CryptoError(
                f"The data key for {kind} {owner_id} is not readable JSON: the key store entry "
                "is damaged. Restore the key store from its backup."
            ) from exc
        if not isinstance(body, dict):
            raise CryptoError(f"The data key for {kind} {owner_id} is damaged.")
        return {str(k): str(v) for k, v in body.items()}

    def _unwrap(self, kind: str, owner_id: str, body: dict[str, str]) -> bytes:
        kek_id = body.get("kek_id", "")
        kek = self.keyring.keys.get(kek_id)
        if kek is None:
            kek = self.refresh_keyring().keys.get(kek_id)
        if kek is None:
            raise KeyMissing(
                f"The data key for {kind} {owner_id} is wrapped by KEK {kek_id!r}, "
                "which is not in the key file. Restore the key file that holds it."
            )
        try:
            return AESGCM(kek).decrypt(
                _unb64(body["nonce"]), _unb64(body["wrapped"]), self._wrap_aad(kind, owner_id)
            )
        except (InvalidTag, KeyError, ValueError) as exc:
            raise CryptoError(
                f"The data key for {kind} {owner_id} failed to unwrap: the key store entry "
                "is damaged or was moved. Restore the key store from its backup."
            ) from exc

    def data_key(self, kind: str, owner_id: str) -> bytes:
        """Unwrap a data key; KeyMissing when it was shredded."""
        with self._lock:
            cached = self._cache.get((kind, owner_id))
        if cached is not None:
            return cached
        dek = self._unwrap(kind, owner_id, self._read_entry(kind, owner_id))
        with self._lock:
            self._cache[(kind, owner_id)] = dek
        return dek

    def verify_data_key(self, kind: str, owner_id: str) -> str:
        """Unwrap a data key from disk (not the cache); returns the id of the KEK that wraps it."""
        body = self._read_entry(kind, owner_id)
        self._unwrap(kind, owner_id, body)
        return body.get("kek_id", "")

    def rewrap(self, kind: str, owner_id: str) -> bool:
        """Wrap a data key under the primary KEK; False if it is gone or already there."""
        keyring = self.keyring
        with self.store_lock():
            try:
                body = self._read_entry(kind, owner_id)
            except KeyMissing:
                return False  # shredded meanwhile: never write it back
            if body.get("kek_id") == keyring.primary:
                return False
            dek = self._unwrap(kind, owner_id, body)
            self._store(kind, owner_id, dek, keyring, keyring.primary)
        return True

    def entries(self) -> Iterator[KeyEntry]:
        """Every wrapped data key in the key store, sorted by kind and owner."""
        if not self.keystore_dir.is_dir():
            return
        for kind_dir in sorted(self.keystore_dir.iterdir()):
            if not kind_dir.is_dir() or kind_dir.name.startswith("."):
                continue
            for path in sorted(kind_dir.glob("*.json")):
                if path.name.startswith("."):
                    continue
                try:
                    kek_id: str | None = str(json.loads(path.read_bytes())["kek_id"])
                except FileNotFoundError:
                    continue
                except (ValueError, KeyError, TypeError):
                    kek_id = None
                yield KeyEntry(kind_dir.name, path.name.removesuffix(".json"), kek_id)

    def stray_temp_files(self) -> list[Path]:
        """Temp files a crash left mid-write; each may hold a copy of a wrapped key."""
        if not self.keystore_dir.is_dir():
            return []
        return sorted(self.keystore_dir.glob("*/.*.tmp"))

    def has_data_key(self, kind: str, owner_id: str) -> bool:
        """Whether the key store holds this data key."""
        return self._key_path(kind, owner_id).exists()

    def delete_data_key(self, kind: str, owner_id: str) -> None:
        """Crypto-shred: remove the wrapped data key and any temp copy of it (idempotent)."""
        path = self._key_path(kind, owner_id)
        with self._lock:
            self._cache.pop((kind, owner_id), None)
        with self.store_lock():
            # A write interrupted by a crash leaves ".<name>.<random>.tmp": a full copy of
            # the wrapped key that would otherwise survive the shredding.
            for tmp in path.parent.glob(f".{path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
            try:
                path.unlink()
            except FileNotFoundError:
                return
            _fsync_dir(path.parent)

    # -- content ------------------------------------------------------------------

    @staticmethod
    def _aad(kind: str, owner_id: str, place: str) -> bytes:
        return f"{kind}:{owner_id}:{place}".encode()

    def encrypt(self, kind: str, owner_id: str, place: str, plaintext: bytes) -> bytes:
        """Encrypt content bound to (kind, owner, place) with that owner's data key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.data_key(kind, owner_id)).encrypt(
            nonce, plaintext, self._aad(kind, owner_id, place)
        )
        return FORMAT_VERSION + nonce + sealed

    def decrypt(self, kind: str, owner_id: str, place: str, blob: bytes) -> bytes:
        """Decrypt, or raise CryptoError naming the object (never return garbage)."""
        dek = self.data_key(kind, owner_id)
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT_VERSION:
            raise CryptoError(f"The ciphertext of {kind} {owner_id} ({place}) is malformed.")
        try:
            return AESGCM(dek).decrypt(
                blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], self._aad(kind, owner_id, place)
            )
        except InvalidTag as exc:
            raise CryptoError(
                f"The ciphertext of {kind} {owner_id} ({place}) failed authentication: it was "
                "altered, damaged, or moved from another place."
            ) from exc

    def encrypt_text(self, kind: str, owner_id: str, place: str, text: str) -> bytes:
        """Encrypt a string (UTF-8)."""
        return self.encrypt(kind, owner_id, place, text.encode("utf-8"))

    def decrypt_text(self, kind: str, owner_id: str, place: str, blob: bytes) -> str:
        """Decrypt a string (UTF-8)."""
        return self.decrypt(kind, owner_id, place, blob).decode("utf-8")

    def mac(self, purpose: str, data: bytes) -> str:
        """Keyed hash (HMAC-SHA256) for equality checks without a plain, guessable hash."""
        key = self.create_data_key(SYSTEM_KIND, MAC_OWNER)
        return hmac.new(key, purpose.encode() + b"\x00" + data, hashlib.sha256).hexdigest()

    def mac_file(self, purpose: str, path: Path) -> str:
        """Keyed hash of a file's content, streamed."""
        key = self.create_data_key(SYSTEM_KIND, MAC_OWNER)
        h = hmac.new(key, purpose.encode() + b"\x00", hashlib.sha256)
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return h.hexdigest()


def open_crypto(key_file: Path, keystore_dir: Path) -> Crypto:
    """Load the keyring and attach the key store."""
    keyring = Keyring.load(key_file)
    keystore_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Crypto(keyring, keystore_dir, key_file)


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
