"""User erasure (right to be forgotten) and export (right of access), through the API."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from appliance.audit.tables import AuditEvent
from appliance.auth import service as users
from appliance.auth.tables import (
    ApiToken,
    AuthSession,
    Group,
    GroupMember,
    RecoveryCode,
    User,
)
from appliance.chat import pipeline
from appliance.chat.tables import Conversation
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput, PermissionDenied
from appliance.core.places import CHAT_KEY
from appliance.core.runtime import Runtime
from appliance.documents.tables import Document, DocumentGrant
from appliance.privacy import service as privacy
from appliance.retention import service as retention
from models.fakes import FakeGenerator
from tests.fixtures.app import inline_worker, submit
from tests.fixtures.auth import Account, signed_in
from tests.integration.test_retention import assert_gone


def _doc(
    rt: Runtime, tmp_path: Path, name: str, *, owner: str, grants: tuple[str, ...] = ()
) -> str:
    path = tmp_path / f"{name}.md"
    path.write_text(f"# {name}\n\nThe {name} memo is about the travel portal and meals.\n")
    doc_id = submit(rt, path, owner=owner, grants=grants)
    assert inline_worker(rt).run_until_idle(only={doc_id}) == 1
    return doc_id


def _ask(rt: Runtime, user_id: str, question: str) -> str:
    rt.settings.chat.min_score = -1.0
    rt._generator = FakeGenerator("The memo says so [1].")
    events = list(
        pipeline.answer(rt=rt, scheduler=rt.scheduler, user_id=user_id, question=question)
    )
    return str(next(e.data["id"] for e in events if e.kind == "conversation"))


def _search(rt: Runtime, principals: list[str]) -> set[str]:
    vector = rt.embedder().embed(["travel portal memo"])[0]
    return {h.doc_id for h in rt.index().search(vector, principals, k=50)}


def test_erasure_removes_everything_of_the_user(
    runtime: Runtime,
    tmp_path: Path,
    browser_factory: Any,
    alice: Account,
    root: Account,
) -> None:
    rt = runtime
    uid = alice.user.id
    mine = [_doc(rt, tmp_path, f"AliceOwn{i}Zq", owner="alice") for i in range(2)]
    shared = _doc(rt, tmp_path, "SharedMemoZq", owner="admin", grants=("user:alice",))
    with rt.sessions() as s:
        group = Group(name="hr")
        s.add(group)
        s.flush()
        s.add(GroupMember(group_id=group.id, user_id=uid))
        s.add(RecoveryCode(user_id=uid, code_hash="x"))
        s.commit()
    a = signed_in(browser_factory, alice)
    token = a.post("/api/auth/tokens", json={"name": "script", "scopes": ["read"], "days": 5})
    assert token.status_code == 201, token.text
    _ask(rt, uid, "What does the AliceOwn0Zq memo say about the travel portal?")
    assert rt.crypto.has_data_key(CHAT_KEY, uid)
    assert shared in _search(rt, [f"user:{uid}"])

    admin = signed_in(browser_factory, root)
    r = admin.post(f"/api/admin/users/{uid}/erase", json={"documents": "delete"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(body["documents_deleted"]) == sorted(mine)
    assert body["grants_removed"] >= 1
    assert body["conversations_deleted"] == 1
    assert body["tokens_deleted"] == 1
    assert body["memberships_removed"] == 1

    with rt.sessions() as s:
        assert s.get(User, uid) is None
        for table in (AuthSession, ApiToken, RecoveryCode, GroupMember):
            assert not s.execute(select(table).where(table.user_id == uid)).first()
        assert not s.execute(select(Conversation).where(Conversation.owner_id == uid)).first()
        assert not s.execute(
            select(DocumentGrant).where(DocumentGrant.principal == f"user:{uid}")
        ).first()
        assert s.get(Document, shared) is not None
        events = list(s.execute(select(AuditEvent)).scalars())
        erase = [e for e in events if e.action == "user.erase"]
        assert erase[0].target == f"user:{uid}"
        assert erase[0].actor == f"user:{root.user.id}"
        # Only the opaque id remains: no username anywhere in the log.
        assert not [e for e in events if "alice" in f"{e.actor}{e.target}{e.details}"]
    assert not rt.crypto.has_data_key(CHAT_KEY, uid)
    assert _search(rt, [f"user:{uid}"]) == set()
    for doc_id, name in zip(mine, ("AliceOwn0Zq", "AliceOwn1Zq"), strict=True):
        assert_gone(rt, doc_id, name)
    assert a.get("/api/auth/me").status_code == 401
    # Erasing again: the account is gone.
    assert (
        admin.post(f"/api/admin/users/{uid}/erase", json={"documents": "delete"}).status_code == 404
    )


def test_erasure_transfers_documents_and_respects_legal_hold(
    runtime: Runtime,
    tmp_path: Path,
    browser_factory: Any,
    alice: Account,
    bob: Account,
    root: Account,
) -> None:
    rt = runtime
    uid = alice.user.id
    kept = _doc(rt, tmp_path, "Evidence", owner="alice")
    with rt.sessions() as s:
        retention.place_hold(session=s, doc_id=kept, actor="operator:test", now=utcnow())
        s.commit()
    admin = signed_in(browser_factory, root)
    r = admin.post(f"/api/admin/users/{uid}/erase", json={"documents": "delete"})
    assert r.status_code == 403
    assert "legal hold" in r.json()["message"]
    with rt.sessions() as s:
        assert s.get(User, uid) is not None  # refused before anything changed
    r = admin.post(f"/api/admin/users/{uid}/erase", json={"documents": "transfer"})
    assert r.status_code == 422  # who receives them?
    r = admin.post(
        f"/api/admin/users/{uid}/erase",
        json={"documents": "transfer", "transfer_to": bob.user.id},
    )
    assert r.status_code == 200, r.text
    assert r.json()["documents_transferred"] == [kept]
    with rt.sessions() as s:
        doc = s.get_one(Document, kept)
        assert doc.owner_id == bob.user.id
        assert s.get_one(DocumentGrant, (kept, f"user:{bob.user.id}")).level == "manage"
        assert s.get(DocumentGrant, (kept, f"user:{uid}")) is None
    assert kept in _search(rt, [f"user:{bob.user.id}"])
    assert _search(rt, [f"user:{uid}"]) == set()


def test_erasure_refuses_self_and_the_last_admin(
    runtime: Runtime, browser_factory: Any, root: Account
) -> None:
    rt = runtime
    admin = signed_in(browser_factory, root)
    r = admin.post(f"/api/admin/users/{root.user.id}/erase", json={"documents": "delete"})
    assert r.status_code == 403
    with rt.sessions() as s:
        s.execute(update(User).where(User.username == "admin").values(is_active=False))
        s.commit()
    with pytest.raises(PermissionDenied, match="last active admin"):
        privacy.erase_user(
            rt=rt, user_id=root.user.id, documents="delete", actor="operator:t", now=utcnow()
        )


def test_export_is_the_users_own_data_without_secrets(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, alice: Account, root: Account
) -> None:
    rt = runtime
    uid = alice.user.id
    doc_id = _doc(rt, tmp_path, "AliceReport", owner="alice")
    _ask(rt, uid, "Where is the AliceReport travel portal memo?")
    a = signed_in(browser_factory, alice)
    r = a.get("/api/me/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(archive.namelist())
    assert {
        "profile.json",
        "conversations.json",
        "documents.json",
        "feedback.json",
        "audit.json",
    } <= names
    profile = json.loads(archive.read("profile.json"))
    assert profile["username"] == "alice"
    conversations = json.loads(archive.read("conversations.json"))
    assert "AliceReport travel portal" in json.dumps(conversations)
    documents = json.loads(archive.read("documents.json"))
    assert [d["id"] for d in documents] == [doc_id]
    assert documents[0]["filename"] == "AliceReport.md"
    events = json.loads(archive.read("audit.json"))
    assert any(e["action"] == "auth.login" for e in events)
    raw = b"".join(archive.read(n) for n in names)
    with rt.sessions() as s:
        user = users.get_user(s, uid)
        assert user.password_hash.encode() not in raw
    assert alice.secret.encode() not in raw
    assert b"password_hash" not in raw
    assert b"totp_secret" not in raw

    admin = signed_in(browser_factory, root)
    r = admin.get(f"/api/admin/users/{uid}/export")
    assert r.status_code == 200
    # Admins manage, they do not read: no conversation text, passage or document title.
    admin_archive = zipfile.ZipFile(io.BytesIO(r.content))
    admin_raw = b"".join(admin_archive.read(n) for n in admin_archive.namelist())
    assert b"AliceReport" not in admin_raw
    assert b"travel portal" not in admin_raw
    (conv,) = json.loads(admin_archive.read("conversations.json"))
    assert conv["messages"] == 2
    assert [d["id"] for d in json.loads(admin_archive.read("documents.json"))] == [doc_id]
    assert a.get(f"/api/admin/users/{uid}/export").status_code == 403
    with rt.sessions() as s:
        exports = s.execute(select(AuditEvent).where(AuditEvent.action == "user.export")).scalars()
        assert {e.actor for e in exports} == {f"user:{uid}", f"user:{root.user.id}"}


def test_an_interrupted_erasure_is_finished_by_running_it_again(
    runtime: Runtime, tmp_path: Path, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime
    uid = alice.user.id
    docs_of_alice = [_doc(rt, tmp_path, f"Interrupted{i}Zq", owner="alice") for i in range(3)]
    _ask(rt, uid, "What does the Interrupted0Zq memo say?")
    real = rt.crypto.delete_data_key
    calls = {"n": 0}

    def crash_on_second_document(kind: str, owner: str) -> None:
        calls["n"] += 1
        if kind == "doc" and calls["n"] == 2:
            raise OSError("the disk went away")
        real(kind, owner)

    monkeypatch.setattr(rt.crypto, "delete_data_key", crash_on_second_document)
    with pytest.raises(OSError, match="disk"):
        privacy.erase_user(rt=rt, user_id=uid, documents="delete", actor="operator:t", now=utcnow())
    monkeypatch.setattr(rt.crypto, "delete_data_key", real)
    with rt.sessions() as s:
        assert s.get(User, uid) is not None  # the account goes last, so it can be run again
        states = sorted(
            d.state for d in s.execute(select(Document).where(Document.owner_id == uid)).scalars()
        )
        assert states == ["deleting", "indexed"]  # the first is gone, the second hidden
    report = privacy.erase_user(
        rt=rt, user_id=uid, documents="delete", actor="operator:t", now=utcnow()
    )
    assert len(report.documents_deleted) == 2
    with rt.sessions() as s:
        assert s.get(User, uid) is None
    for i, doc_id in enumerate(docs_of_alice):
        assert_gone(rt, doc_id, f"Interrupted{i}Zq")
    assert not rt.crypto.has_data_key(CHAT_KEY, uid)


def test_erasure_ends_access_first_and_catches_what_arrives_meanwhile(
    runtime: Runtime, tmp_path: Path, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime
    uid = alice.user.id
    _ask(rt, uid, "Anything about the travel portal?")
    real = rt.crypto.delete_data_key
    seen: dict[str, object] = {}

    def meanwhile(kind: str, owner: str) -> None:
        real(kind, owner)
        if kind == CHAT_KEY and "late" not in seen:
            with rt.sessions() as s:  # access already ended when the chat key goes
                seen["active"] = s.get_one(User, uid).is_active
            # An upload and a question that were past their checks when access ended.
            seen["late"] = submit(rt, _late_file(tmp_path), owner="alice")
            with rt.sessions() as s:
                s.add(Conversation(owner_id=uid, title_ct=b""))
                s.commit()

    monkeypatch.setattr(rt.crypto, "delete_data_key", meanwhile)
    with pytest.raises(InvalidInput, match="arrived while erasing"):
        privacy.erase_user(rt=rt, user_id=uid, documents="delete", actor="operator:t", now=utcnow())
    assert seen["active"] is False
    report = privacy.erase_user(
        rt=rt, user_id=uid, documents="delete", actor="operator:t", now=utcnow()
    )
    assert seen["late"] in report.documents_deleted
    with rt.sessions() as s:
        assert s.get(User, uid) is None
        assert s.execute(select(Conversation).where(Conversation.owner_id == uid)).first() is None
    assert not rt.crypto.has_data_key(CHAT_KEY, uid)


def _late_file(tmp_path: Path) -> Path:
    path = tmp_path / "late.md"
    path.write_text("# Late\n\nUploaded while the account was being erased.\n")
    return path
