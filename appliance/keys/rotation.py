"""Key-encryption key rotation: a new primary KEK, every data key rewrapped, old KEKs retired.

Only the wrapped data keys change; no content is re-encrypted. Each key-store entry is
rewritten atomically, so a rotation stopped at any point leaves every data key readable
(wrapped by the old or by the new KEK, both in the key file) and running ``rotate`` again
finishes the rest before it would start another rotation.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.core.crypto import KEY_BYTES, Crypto, Keyring, open_lock_file
from appliance.core.errors import ApplianceError, InvalidInput, NotFound, UnsafeConfiguration

ROTATION_LOCK = ".rotation.lock"
ProgressFn = Callable[[int, int], None]  # done, total


@dataclass
class RotationReport:
    """What one `rotate` run did."""

    primary: str
    new_kek: str | None  # None when this run finished an interrupted rotation instead
    previous_keks: list[str]
    rewrapped: int = 0
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)  # "kind/owner: reason", no key material

    @property
    def resumed(self) -> bool:
        """Whether this run finished an earlier, interrupted rotation."""
        return self.new_kek is None


@dataclass(frozen=True)
class RetireReport:
    """What `retire` did."""

    retired: str
    remaining: list[str]


@contextmanager
def rotation_lock(crypto: Crypto) -> Iterator[None]:
    """One rotation or retirement at a time on this key store (refuse, do not wait)."""
    crypto.keystore_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = open_lock_file(crypto.keystore_dir / ROTATION_LOCK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise InvalidInput(
                "Another `appliance keys rotate` or `keys retire` is running on this key "
                "store. Wait for it to finish, then try again."
            ) from exc
        yield
    finally:
        os.close(fd)


def _check_owner(key_file: Path) -> None:
    owner = key_file.stat().st_uid
    if os.geteuid() not in (0, owner):
        raise UnsafeConfiguration(
            f"The key file {key_file} belongs to another user (uid {owner}); rewriting it as "
            "this user would lock the service out. Run the command as that user, e.g. "
            "`sudo -u appliance appliance keys rotate`."
        )


def _save(keyring: Keyring, key_file: Path) -> None:
    try:
        keyring.save(key_file)
    except PermissionError as exc:
        raise UnsafeConfiguration(
            f"Cannot replace the key file {key_file}: {exc.strerror}. The user running this "
            f"command needs write access to {key_file.parent} (the file is replaced atomically)."
        ) from exc


def rotate(
    crypto: Crypto, key_file: Path, *, on_progress: ProgressFn | None = None
) -> RotationReport:
    """Make a new primary KEK (unless one rotation is unfinished) and rewrap every data key."""
    with rotation_lock(crypto):
        _check_owner(key_file)
        keyring = Keyring.load(key_file)
        entries = list(crypto.entries())
        # Entries under a KEK the key file lacks, or damaged ones, cannot be rewrapped by
        # any run; they are reported as failed and never hold up a new rotation.
        unfinished = any(e.kek_id in keyring.keys and e.kek_id != keyring.primary for e in entries)
        new_kek: str | None = None
        if not unfinished:
            new_kek = "kek-" + secrets.token_hex(4)
            while new_kek in keyring.keys:
                new_kek = "kek-" + secrets.token_hex(4)
            keyring = Keyring(
                primary=new_kek,
                keys={**keyring.keys, new_kek: secrets.token_bytes(KEY_BYTES)},
            )
            # The key file holds the new KEK before any data key is wrapped by it.
            _save(keyring, key_file)
        crypto.use_keyring(keyring)
        report = RotationReport(
            primary=keyring.primary,
            new_kek=new_kek,
            previous_keks=sorted(k for k in keyring.keys if k != keyring.primary),
        )
        for done, entry in enumerate(entries, start=1):
            try:
                if crypto.rewrap(entry.kind, entry.owner_id):
                    report.rewrapped += 1
                else:
                    report.unchanged += 1
            except ApplianceError as exc:
                report.failed.append(f"{entry.kind}/{entry.owner_id}: {type(exc).__name__}")
            if on_progress is not None:
                on_progress(done, len(entries))
        return report


def retire(crypto: Crypto, key_file: Path, kek_id: str) -> RetireReport:
    """Remove an old KEK from the key file, only when no data key is wrapped by it."""
    with rotation_lock(crypto):
        _check_owner(key_file)
        keyring = Keyring.load(key_file)
        if kek_id not in keyring.keys:
            raise NotFound(
                f"No KEK {kek_id!r} in the key file {key_file}. "
                f"It holds: {', '.join(sorted(keyring.keys))}."
            )
        if kek_id == keyring.primary:
            raise InvalidInput(
                f"{kek_id} is the primary KEK. Run `appliance keys rotate` first; "
                "then the previous primary can be retired."
            )
        still = [e for e in crypto.entries() if e.kek_id == kek_id]
        if still:
            shown = ", ".join(f"{e.kind}/{e.owner_id}" for e in still[:5])
            more = f" and {len(still) - 5} more" if len(still) > 5 else ""
            raise InvalidInput(
                f"{len(still)} data key(s) are still wrapped by {kek_id} ({shown}{more}); "
                "retiring it would make them unreadable. Run `appliance keys rotate` to "
                "finish rewrapping them, then retire again."
            )
        keyring = Keyring(
            primary=keyring.primary,
            keys={k: v for k, v in keyring.keys.items() if k != kek_id},
        )
        _save(keyring, key_file)
        crypto.use_keyring(keyring)
        return RetireReport(retired=kek_id, remaining=sorted(keyring.keys))


def rotate_audited(
    *,
    session: Session,
    crypto: Crypto,
    key_file: Path,
    actor: str,
    on_progress: ProgressFn | None = None,
) -> RotationReport:
    """Rotate and audit the outcome (also an interrupted one); commits the audit entry."""
    try:
        report = rotate(crypto, key_file, on_progress=on_progress)
    except BaseException as exc:
        audit.record(
            session,
            actor=actor,
            action="keys.rotate",
            outcome="interrupted",
            details={"error": type(exc).__name__},
        )
        session.commit()
        raise
    audit.record(
        session,
        actor=actor,
        action="keys.rotate",
        target=f"kek:{report.primary}",
        outcome="failed" if report.failed else "ok",
        details={
            "new_kek": report.new_kek,
            "resumed": report.resumed,
            "rewrapped": report.rewrapped,
            "unchanged": report.unchanged,
            "failed": len(report.failed),
        },
    )
    session.commit()
    return report


def retire_audited(
    *, session: Session, crypto: Crypto, key_file: Path, kek_id: str, actor: str
) -> RetireReport:
    """Retire a KEK and audit it (a refusal too); commits the audit entry."""
    try:
        report = retire(crypto, key_file, kek_id)
    except ApplianceError as exc:
        audit.record(
            session,
            actor=actor,
            action="keys.retire",
            target=f"kek:{kek_id}",
            outcome="refused",
            details={"error": exc.code},
        )
        session.commit()
        raise
    audit.record(
        session,
        actor=actor,
        action="keys.retire",
        target=f"kek:{kek_id}",
        details={"remaining": report.remaining},
    )
    session.commit()
    return report
