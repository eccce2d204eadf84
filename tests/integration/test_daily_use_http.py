"""Daily use over HTTP (issue 17, items 1-4 and 12-14), through real sign-ins.

A re-upload says it is a duplicate and changes nothing until the person applies the new
sharing through the grant and classification routes (whose separation-of-duties checks
hold a grant to an account the admin controls); the same file sent twice at once makes one
document; a failed upload is retried from its stored file, or refused when nothing was
kept; the library names who each document is shared with (all grants for a manager, only
their own way in for a reader); the sharing picker lists names only and a bare name is
accepted when unambiguous; an over-long question is refused with its length and never
echoed; a wrong second-factor code says so; recovery codes can be replaced with a code or
the password, audited.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import select

from appliance.audit.tables import AuditEvent
from appliance.auth.signin import GENERIC_FAILURE
from appliance.auth.tables import Group, GroupMember, User
from appliance.core.runtime import Runtime
from appliance.documents.tables import Document
from tests.fixtures.app import inline_worker
from tests.fixtures.auth import Account, Browser, Clock, make_user, signed_in

NOTES = b"# Team notes\n\nThe offsite moves to the lighthouse in Porto on 14 May.\n"


def _audit(rt: Runtime, action: str) -> list[AuditEvent]:
    with rt.sessions() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def _group(rt: Runtime, name: str, *members: Account) -> str:
    with rt.sessions() as s:
        group = Group(name=name)
        s.add(group)
        s.flush()
        for m in members:
            s.add(GroupMember(group_id=group.id, user_id=m.user.id))
        s.commit()
        return group.id


def _account(rt: Runtime, name: str) -> Account:
    with rt.sessions() as s:
        return make_user(s, rt.crypto, username=name)


def _upload(b: Browser, name: str, data: bytes, **fields: Any) -> Any:
    return b.post("/api/documents", files={"file": (name, data, "text/markdown")}, data=fields)


# -- item 1: a re-upload is named a duplicate; the new sharing is applied only on request --


def test_a_re_upload_is_a_duplicate_that_changes_nothing_until_applied(
    runtime: Runtime, browser_factory: Any, alice: Account
) -> None:
    erin = _account(runtime, "erin")
    _group(runtime, "hr", alice)
    as_alice = signed_in(browser_factory, alice)
    first = _upload(as_alice, "notes.md", NOTES)
    assert first.status_code == 202, first.text
    assert first.json()["duplicate"] is False
    doc_id = first.json()["id"]
    inline_worker(runtime).run_until_idle()

    again = _upload(
        as_alice, "notes-copy.md", NOTES, grants=["user:erin"], classification="confidential"
    )
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["duplicate"] is True
    assert body["id"] == doc_id
    assert body["filename"] == "notes.md"  # the existing document, named
    assert body["classification"] == "internal"  # not silently changed...
    assert body["shared_with"] == ["user:alice"]  # ...and not silently shared
    (dup,) = [e for e in _audit(runtime, "document.upload") if e.outcome == "duplicate"]
    assert dup.target == f"doc:{doc_id}"
    as_erin = signed_in(browser_factory, erin)
    assert as_erin.get(f"/api/documents/{doc_id}").status_code == 404

    # Applying it: the access dialog's calls; a bare name that only a user has is accepted.
    r = as_alice.post(f"/api/documents/{doc_id}/grants", json={"principal": "erin"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "done"
    r = as_alice.patch(f"/api/documents/{doc_id}", json={"classification": "confidential"})
    assert r.status_code == 200, r.text
    shown = as_alice.get(f"/api/documents/{doc_id}").json()
    assert shown["classification"] == "confidential"
    assert shown["shared_with"] == ["user:alice", "user:erin"]
    assert as_erin.get(f"/api/documents/{doc_id}").status_code == 200

    # Or as a new version: a second document, queued.
    new = _upload(as_alice, "notes.md", NOTES, as_new="true")
    assert new.status_code == 202, new.text
    assert new.json()["duplicate"] is False
    assert new.json()["id"] != doc_id
    assert new.json()["state"] == "queued"
    assert _upload(as_alice, "n.md", NOTES, as_new="maybe").status_code == 422


def test_applying_new_sharing_to_an_admins_duplicate_is_held_for_a_second_admin(
    runtime: Runtime, browser_factory: Any, root: Account, root2: Account
) -> None:
    as_root = signed_in(browser_factory, root)
    made = as_root.post("/api/admin/users", json={"username": "erin"})
    assert made.status_code == 201, made.text  # erin's credentials are root's doing
    first = _upload(as_root, "pay.md", NOTES, classification="confidential")
    doc_id = first.json()["id"]
    inline_worker(runtime).run_until_idle()
    again = _upload(as_root, "pay.md", NOTES, grants=["user:erin"])
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["shared_with"] == ["user:root"]
    # The same grant route as the access dialog: held, and the answer says so.
    r = as_root.post(f"/api/documents/{doc_id}/grants", json={"principal": "user:erin"})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "approval_required"
    assert r.json()["approval"]["status"] == "pending"
    assert as_root.get(f"/api/documents/{doc_id}").json()["shared_with"] == ["user:root"]


# -- item 2: the same file twice at once makes one document --------------------------------


def test_the_same_file_sent_twice_at_once_makes_one_document(
    runtime: Runtime, browser_factory: Any, alice: Account
) -> None:
    browsers = [signed_in(browser_factory, alice)]
    browsers.append(browser_factory())
    browsers[1].client.cookies = browsers[0].client.cookies  # one person, two requests
    start = threading.Barrier(2)
    answers: list[Any] = [None, None]

    def send(i: int) -> None:
        start.wait()
        answers[i] = _upload(browsers[i], "twice.md", NOTES)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(a.status_code for a in answers) == [200, 202], [a.text for a in answers]
    assert {a.json()["id"] for a in answers} == {answers[0].json()["id"]}
    assert sorted(a.json()["duplicate"] for a in answers) == [False, True]
    with runtime.sessions() as s:
        assert len(s.execute(select(Document)).scalars().all()) == 1
    # A third upload still finds the one document (no "multiple rows" error).
    assert _upload(browsers[0], "twice.md", NOTES).json()["duplicate"] is True


# -- item 3: retry a failed upload from its stored file; remove it -------------------------


def test_a_failed_upload_is_retried_from_its_stored_file_or_removed(
    runtime: Runtime, browser_factory: Any, alice: Account, bob: Account
) -> None:
    as_alice = signed_in(browser_factory, alice)
    doc_id = _upload(as_alice, "notes.md", NOTES).json()["id"]
    # The worker stopped three times on this file (a crash, memory): failed, file kept.
    with runtime.sessions() as s:
        doc = s.get_one(Document, doc_id)
        doc.state, doc.error_code, doc.error_reason = "failed", "interrupted", "Interrupted."
        s.commit()
    as_bob = signed_in(browser_factory, bob)
    assert as_bob.post(f"/api/documents/{doc_id}/retry").status_code == 404
    r = as_alice.post(f"/api/documents/{doc_id}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "queued"
    assert r.json()["error_reason"] is None
    (retried,) = _audit(runtime, "document.retry")
    assert json.loads(retried.details or "{}") == {"previous_error": "interrupted"}
    # Only a failed upload can be retried.
    assert as_alice.post(f"/api/documents/{doc_id}/retry").status_code == 422
    inline_worker(runtime).run_until_idle()
    assert as_alice.get(f"/api/documents/{doc_id}").json()["state"] == "indexed"

    # An empty file was never stored: nothing to retry, pick it again; remove works.
    empty = _upload(as_alice, "empty.md", b"").json()
    assert empty["state"] == "failed"
    r = as_alice.post(f"/api/documents/{empty['id']}/retry")
    assert r.status_code == 422
    assert "Pick the file again" in r.json()["message"]
    assert as_alice.delete(f"/api/documents/{empty['id']}").status_code == 204
    assert as_alice.get(f"/api/documents/{empty['id']}").status_code == 404


# -- item 4: who it is shared with, by name; the picker's names; bare names ------------------


def test_the_library_names_who_a_document_is_shared_with_as_far_as_the_viewer_may_know(
    runtime: Runtime, browser_factory: Any, alice: Account, bob: Account
) -> None:
    carol = _account(runtime, "carol")
    hr = _group(runtime, "hr", alice, carol)
    as_alice = signed_in(browser_factory, alice)
    # `hr` alone: only a group has that name.
    doc_id = _upload(as_alice, "notes.md", NOTES, grants=["hr", "user:bob"]).json()["id"]
    inline_worker(runtime).run_until_idle()

    def shared(b: Browser) -> list[str]:
        (doc,) = b.get("/api/documents").json()["documents"]
        assert doc["id"] == doc_id
        return list(doc["shared_with"])

    assert sorted(shared(as_alice)) == ["group:hr", "user:alice", "user:bob"]
    # Readers who do not manage it see only their own way in: not the other grants.
    assert shared(signed_in(browser_factory, bob)) == ["user:bob"]
    assert shared(signed_in(browser_factory, carol)) == ["group:hr"]
    listing = as_alice.get("/api/documents").text
    assert hr not in listing
    assert bob.user.id not in listing  # names, never raw ids


def test_the_sharing_picker_lists_names_only_and_bare_names_must_be_unambiguous(
    runtime: Runtime, browser_factory: Any, alice: Account, bob: Account
) -> None:
    _group(runtime, "hr", alice)
    _group(runtime, "bob", alice)  # a group with a user's name
    with runtime.sessions() as s:
        gone = make_user(s, runtime.crypto, username="gone")
        s.get_one(User, gone.user.id).is_active = False
        s.commit()
    as_bob = signed_in(browser_factory, bob)
    r = as_bob.get("/api/principals")
    assert r.status_code == 200, r.text
    names = r.json()
    # Names only: no ids, no roles, no memberships; disabled accounts are not offered.
    assert all(set(n) == {"kind", "name"} for n in names), names
    assert {(n["kind"], n["name"]) for n in names} == {
        ("user", "admin"),  # the first admin, made by `appliance init`
        ("user", "alice"),
        ("user", "bob"),
        ("group", "bob"),
        ("group", "hr"),
    }
    assert alice.user.id not in r.text
    assert [n["name"] for n in as_bob.get("/api/principals", params={"q": "H"}).json()] == ["hr"]
    assert signed_in(browser_factory, alice).get("/api/principals").json() == names

    as_alice = signed_in(browser_factory, alice)
    doc_id = _upload(as_alice, "notes.md", NOTES).json()["id"]
    r = as_alice.post(f"/api/documents/{doc_id}/grants", json={"principal": "bob"})
    assert r.status_code == 422
    assert "user:bob or group:bob" in r.json()["message"]
    r = as_alice.post(f"/api/documents/{doc_id}/grants", json={"principal": "nobody"})
    assert r.status_code == 422
    assert "No user or group is named 'nobody'" in r.json()["message"]
    r = as_alice.post(f"/api/documents/{doc_id}/grants", json={"principal": "hr"})
    assert r.json()["status"] == "done"
    assert "group:hr" in [g["name"] for g in r.json()["grants"]]


# -- item 12: a long question is refused with its length, never echoed -----------------------


def test_a_question_over_the_limit_is_refused_with_its_length_and_never_echoed(
    runtime: Runtime, browser_factory: Any, alice: Account
) -> None:
    as_alice = signed_in(browser_factory, alice)
    pasted = "Quarterly figures follow. " * 200 + "So what is the bonus for Lisbon?"
    assert len(pasted) > 4000
    r = as_alice.post("/api/chat", json={"question": pasted})
    assert r.status_code == 422
    body = r.json()
    assert f"{len(pasted):,} characters" in body["message"]
    assert "4,000" in body["message"]
    assert "bonus for Lisbon" not in r.text
    assert "Quarterly figures" not in r.text
    assert all("input" not in d for d in body["detail"])
    # The same on the document routes: a principal too long is not repeated back.
    doc_id = _upload(as_alice, "notes.md", NOTES).json()["id"]
    r = as_alice.post(
        f"/api/documents/{doc_id}/grants", json={"principal": "user:" + "secretname" * 20}
    )
    assert r.status_code == 422
    assert "secretname" not in r.text
    # And on sign-in: a password too long is not echoed either.
    r = browser_factory().login("alice", "hunter2-" * 200)
    assert r.status_code == 422
    assert "hunter2" not in r.text


def test_no_route_echoes_an_invalid_value(admin_browser: Browser) -> None:
    """The app-wide 422 handler: the admin routes are as quiet as the chat and documents ones."""
    r = admin_browser.post("/api/admin/users", json={"username": "confidential-name-" * 10})
    assert r.status_code == 422
    assert "confidential-name" not in r.text
    assert "64" in r.json()["message"]


# -- item 13: a wrong code after the right password says so --------------------------------


def test_a_wrong_second_factor_code_says_the_code_was_wrong(
    browser: Browser, alice: Account, clock: Clock
) -> None:
    assert browser.login(alice.username, alice.password).json()["stage"] == "totp"
    wrong = f"{(int(alice.code(clock)) + 1) % 1_000_000:06d}"
    r = browser.post("/api/auth/totp", json={"code": wrong})
    assert r.status_code == 401
    assert r.json()["message"].startswith("The code was wrong.")
    assert r.json()["message"] != GENERIC_FAILURE
    r = browser.post("/api/auth/totp", json={"recovery_code": "aaaa-bbbb-cccc"})
    assert r.status_code == 401
    assert "recovery code is wrong" in r.json()["message"]
    # The password step still says nothing about which part was wrong.
    assert browser.login(alice.username, "not it at all").json()["message"] == GENERIC_FAILURE


# -- item 14: new recovery codes, with a code or the password, audited ---------------------


def test_new_recovery_codes_need_a_current_code_or_the_password(
    runtime: Runtime, browser_factory: Any, alice: Account, clock: Clock
) -> None:
    as_alice = signed_in(browser_factory, alice)
    assert as_alice.get("/api/auth/me").json()["recovery_codes_left"] == 0
    r = as_alice.post("/api/auth/recovery-codes", json={})
    assert r.status_code == 422
    r = as_alice.post("/api/auth/recovery-codes", json={"password": "not the password"})
    assert r.status_code == 401
    assert "password was wrong" in r.json()["message"]
    r = as_alice.post("/api/auth/recovery-codes", json={"password": alice.password})
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    assert as_alice.get("/api/auth/me").json()["recovery_codes_left"] == 10
    clock.advance(seconds=30)
    r = as_alice.post("/api/auth/recovery-codes", json={"code": alice.code(clock)})
    assert r.status_code == 200, r.text
    fresh = r.json()["recovery_codes"]
    assert set(fresh).isdisjoint(codes)
    # The code was used: the same one again is refused (a TOTP code works once).
    again = as_alice.post("/api/auth/recovery-codes", json={"code": alice.code(clock)})
    assert again.status_code == 401
    entries = _audit(runtime, "auth.recovery_codes")
    proofs = [json.loads(e.details or "{}")["proof"] for e in entries]
    assert proofs == ["password", "totp"]
    for e in entries:
        assert not any(c in (e.details or "") for c in codes + fresh)
    # An old code no longer signs in; a new one does.
    b = browser_factory()
    b.login(alice.username, alice.password)
    assert b.post("/api/auth/totp", json={"recovery_code": codes[0]}).status_code == 401
    clock.advance(seconds=5)  # past the back-off after three failures
    assert b.post("/api/auth/totp", json={"recovery_code": fresh[0]}).json()["stage"] == "done"
    # Not with an API token: only from a signed-in browser session.
    token = as_alice.post(
        "/api/auth/tokens", json={"name": "script", "scopes": ["read", "write"], "days": 1}
    ).json()["token"]
    r = browser_factory().client.post(
        "/api/auth/recovery-codes",
        json={"password": alice.password},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 403
