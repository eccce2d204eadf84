"""`appliance keys check`: every data key unwraps, every object has its key, no key is orphaned."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.auth.tables import User
from appliance.chat.tables import Conversation
from appliance.core.crypto import Crypto
from appliance.core.errors import ApplianceError
from appliance.core.places import (
    CHAT_KEY,
    DOC_KEY,
    FIELDS_OWNER,
    MAC_OWNER,
    SYSTEM_KIND,
    VECTORS_OWNER,
)
from appliance.documents.tables import DELETING, Document


@dataclass
class Problem:
    """One finding; names objects and keys, never key material."""

    what: str  # unwrap_failed | key_missing | orphan_key | stray_temp_file
    key: str  # "<kind>/<owner_id>" or a temp file name
    detail: str

    def public(self) -> dict[str, str]:
        """As JSON."""
        return {"what": self.what, "key": self.key, "detail": self.detail}


@dataclass
class CheckReport:
    """The key store against the key file and the database."""

    primary: str
    keks: dict[str, int]  # KEK id -> data keys it wraps (every KEK in the key file listed)
    data_keys: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong."""
        return not self.problems

    @property
    def rotation_pending(self) -> int:
        """Data keys still wrapped by a KEK other than the primary."""
        return sum(n for k, n in self.keks.items() if k != self.primary)

    def public(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "ok": self.ok,
            "primary": self.primary,
            "keks": self.keks,
            "data_keys": self.data_keys,
            "rotation_pending": self.rotation_pending,
            "problems": [p.public() for p in self.problems],
        }


def check_keys(*, session: Session, crypto: Crypto) -> CheckReport:
    """Unwrap every data key from disk and compare the key store with the database."""
    keyring = crypto.refresh_keyring()
    counts: Counter[str] = Counter(dict.fromkeys(keyring.keys, 0))
    report = CheckReport(primary=keyring.primary, keks={})
    present: dict[str, set[str]] = {}
    for entry in crypto.entries():
        report.data_keys += 1
        present.setdefault(entry.kind, set()).add(entry.owner_id)
        name = f"{entry.kind}/{entry.owner_id}"
        try:
            counts[crypto.verify_data_key(entry.kind, entry.owner_id)] += 1
        except ApplianceError as exc:
            counts[entry.kek_id or "?"] += 1
            report.problems.append(Problem("unwrap_failed", name, exc.message))
    report.keks = dict(sorted(counts.items()))

    docs: dict[str, str] = {
        str(i): str(st) for i, st in session.execute(select(Document.id, Document.state))
    }
    for doc_id, state in sorted(docs.items()):
        # A document being deleted has its key shredded first: its absence is expected.
        if state != DELETING and doc_id not in present.get(DOC_KEY, set()):
            report.problems.append(
                Problem(
                    "key_missing",
                    f"{DOC_KEY}/{doc_id}",
                    f"document {doc_id} ({state}) cannot be read: its data key is not in "
                    "the key store. Restore the key store from its backup, or delete it.",
                )
            )
    chatters = set(session.execute(select(Conversation.owner_id).distinct()).scalars())
    for user_id in sorted(chatters - present.get(CHAT_KEY, set())):
        report.problems.append(
            Problem(
                "key_missing",
                f"{CHAT_KEY}/{user_id}",
                f"the chat history of user {user_id} cannot be read: its data key is not "
                "in the key store. Restore the key store from its backup.",
            )
        )
    has_totp = session.execute(
        select(User.id).where(User.totp_secret_enc.is_not(None)).limit(1)
    ).first()
    if has_totp and FIELDS_OWNER not in present.get(SYSTEM_KIND, set()):
        report.problems.append(
            Problem(
                "key_missing",
                f"{SYSTEM_KIND}/{FIELDS_OWNER}",
                "second-factor secrets cannot be read: the system fields key is not in the "
                "key store. Restore it, or reset every user's second factor.",
            )
        )
    if docs and MAC_OWNER not in present.get(SYSTEM_KIND, set()):
        report.problems.append(
            Problem(
                "key_missing",
                f"{SYSTEM_KIND}/{MAC_OWNER}",
                "the duplicate-detection key is gone: files uploaded again will not be "
                "recognised as duplicates. Restore the key store from its backup.",
            )
        )

    users = set(session.execute(select(User.id)).scalars())
    expected = {
        DOC_KEY: set(docs),
        CHAT_KEY: users,
        SYSTEM_KIND: {MAC_OWNER, FIELDS_OWNER, VECTORS_OWNER},
    }
    for kind, owners in sorted(present.items()):
        for owner_id in sorted(owners - expected.get(kind, set())):
            report.problems.append(
                Problem(
                    "orphan_key",
                    f"{kind}/{owner_id}",
                    "no object in the database uses this data key any more; what it opens "
                    "stays readable in old backups until the entry is deleted.",
                )
            )
    for tmp in crypto.stray_temp_files():
        report.problems.append(
            Problem(
                "stray_temp_file",
                f"{tmp.parent.name}/{tmp.name}",
                "a write to the key store was interrupted; the file may hold a copy of a "
                f"wrapped data key. Remove it: rm {tmp}",
            )
        )
    return report
