"""Separation of duties over HTTP: one regression test per hole of issue 16 (1-4, 6, 7).

DESIGN invariant 4: admins manage, they do not read, and no single admin can change that.
Each test replays the exploit the security review found with one admin acting alone, and
checks that the change waits for a second admin (202 and an approval request), that the
document stays unreadable meanwhile, and that the approval path still works.
tests/integration/test_sod_property.py checks the same promise as a property.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, select

from appliance.audit.tables import AuditEvent
from appliance.auth.tables import GroupMember, User
from appliance.core.runtime import Runtime
from appliance.documents.tables import DocumentGrant
from models.fakes import FakeGenerator
from tests.fixtures.app import inline_worker
from tests.fixtures.auth import Account, Browser, make_user
from tests.fixtures.sod import document, reads, take_over


@pytest.fixture
def cast(runtime: Runtime) -> dict[str, Account]:
    """Three admins (the attacker `root`, and `second`, `third`) and two users."""
    with runtime.sessions() as s:
        return {
            "root": make_user(s, runtime.crypto, username="root", role="admin"),
            "second": make_user(s, runtime.crypto, username="second", role="admin"),
            "third": make_user(s, runtime.crypto, username="third", role="admin"),
            "alice": make_user(s, runtime.crypto, username="alice"),
            "bob": make_user(s, runtime.crypto, username="bob"),
        }


@pytest.fixture
def as_(browser_factory: Any, cast: dict[str, Account]) -> dict[str, Browser]:
    """A signed-in browser for each account of the cast."""
    browsers: dict[str, Browser] = {}
    for name, account in cast.items():
        browsers[name] = browser_factory()
        browsers[name].sign_in(account)
    return browsers


def _held(r: Any, kind: str) -> str:
    assert r.status_code == 202, r.text
    body = r.json()
    approval = body.get("approval", body)
    assert approval["kind"] == kind, body
    return str(approval.get("id") or approval["approval_id"])


def _requests(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.sessions() as s:
        rows = s.execute(
            select(AuditEvent).where(AuditEvent.action == "approval.request")
        ).scalars()
        return [json.loads(e.details) for e in rows]


# -- hole 1: a puppet account -------------------------------------------------------------


def test_hole1_a_puppet_account_reads_nothing_sensitive_without_a_second_admin(
    runtime: Runtime, as_: dict[str, Browser], browser_factory: Any, tmp_path: Path
) -> None:
    root = as_["root"]
    secret = document(runtime, tmp_path, "merger.md", owner="alice")
    inline_worker(runtime).run_until_idle()
    made = root.post("/api/admin/users", json={"username": "puppet"})
    assert made.status_code == 201
    puppet_id, otp = made.json()["user"]["id"], made.json()["one_time_password"]

    grant = root.post(f"/api/documents/{secret}/grants", json={"principal": "user:puppet"})
    grant_id = _held(grant, "grant")
    group = root.post("/api/admin/groups", json={"name": "deal-team"}).json()
    # A grant to a group with no account of root's circle in it is root's to make...
    ok = root.post(f"/api/documents/{secret}/grants", json={"principal": "group:deal-team"})
    assert ok.status_code == 200, ok.text
    # ...but putting the puppet in that group is the same grant by another road.
    join = root.post(f"/api/admin/groups/{group['id']}/members", json={"user_id": puppet_id})
    _held(join, "add_member")

    puppet = browser_factory()
    take_over(puppet, "puppet", otp)
    assert not reads(puppet, secret)
    why = {(d["held"], d["why"]) for d in _requests(runtime)}
    assert why == {("acl.grant", "controlled_account"), ("group.add_member", "controlled_account")}

    # The root cannot approve for its own puppet; a second admin can.
    assert root.post(f"/api/admin/approvals/{grant_id}/approve").status_code == 403
    approved = as_["second"].post(f"/api/admin/approvals/{grant_id}/approve")
    assert approved.status_code == 200, approved.text
    assert reads(puppet, secret)


# -- hole 2: account takeover --------------------------------------------------------------


def test_hole2_resetting_both_factors_of_a_reader_waits_for_a_second_admin(
    runtime: Runtime,
    as_: dict[str, Browser],
    cast: dict[str, Account],
    browser_factory: Any,
    tmp_path: Path,
) -> None:
    root, alice = as_["root"], cast["alice"]
    secret = document(runtime, tmp_path, "payroll.md", owner="alice", classification="personal")
    inline_worker(runtime).run_until_idle()
    # A password reset alone gives root nothing: alice's second factor is hers.
    r = root.post(f"/api/admin/users/{alice.user.id}/reset-password")
    assert r.status_code == 200, r.text
    otp = r.json()["one_time_password"]
    held = root.post(f"/api/admin/users/{alice.user.id}/reset-totp")
    _held(held, "reset_totp")
    attacker = browser_factory()
    assert attacker.login("alice", otp).json()["stage"] == "totp"  # stuck: no second factor
    with runtime.sessions() as s:
        assert s.get_one(User, alice.user.id).totp_enrolled

    # Chat history counts as much as documents: bob reads nothing sensitive, but has asked.
    runtime._generator = FakeGenerator("An answer.")
    assert as_["bob"].post("/api/chat", json={"question": "What is new?"}).status_code == 200
    bob = cast["bob"].user.id
    assert root.post(f"/api/admin/users/{bob}/reset-totp").status_code == 200  # no password
    _held(root.post(f"/api/admin/users/{bob}/reset-password"), "reset_password")

    # The owner took her password back with her own second factor: the reset is over, and
    # resetting her second factor now (root no longer knows the password) is fine.
    owner = browser_factory()
    taken = take_over(owner, "alice", otp, alice.secret)
    assert taken.password != otp
    assert reads(owner, secret)
    assert root.post(f"/api/admin/users/{alice.user.id}/reset-totp").status_code == 200


# -- hole 3: four eyes collapsing to one --------------------------------------------------


def test_hole3_an_admin_whose_credentials_the_requester_set_cannot_approve(
    runtime: Runtime,
    as_: dict[str, Browser],
    cast: dict[str, Account],
    browser_factory: Any,
) -> None:
    root, third = as_["root"], as_["third"]
    second = cast["second"].user.id
    # Resetting another admin's credentials always needs a third admin.
    pw = _held(root.post(f"/api/admin/users/{second}/reset-password"), "reset_password")
    totp = _held(root.post(f"/api/admin/users/{second}/reset-totp"), "reset_totp")
    for request_id in (pw, totp):
        assert root.post(f"/api/admin/approvals/{request_id}/approve").status_code == 403
        refused = as_["second"].post(f"/api/admin/approvals/{request_id}/approve")
        assert refused.status_code == 403  # the target is not the second pair of eyes
        assert "your own account" in refused.json()["message"]
    assert third.post(f"/api/admin/approvals/{totp}/approve").status_code == 200
    assert third.post(f"/api/admin/approvals/{pw}/approve").status_code == 200
    # Only the requester redeems the approved password reset, once.
    assert third.post(
        f"/api/admin/users/{second}/reset-password", params={"approval_id": pw}
    ).status_code in (403, 422)
    redeemed = root.post(f"/api/admin/users/{second}/reset-password", params={"approval_id": pw})
    assert redeemed.status_code == 200, redeemed.text
    again = root.post(f"/api/admin/users/{second}/reset-password", params={"approval_id": pw})
    assert again.status_code == 403

    # Now root can sign in as `second`; as `second`, root cannot approve root's requests.
    puppet = browser_factory()
    take_over(puppet, "second", redeemed.json()["one_time_password"])
    make_admin = root.patch(f"/api/admin/users/{cast['alice'].user.id}", json={"role": "admin"})
    request_id = _held(make_admin, "make_admin")
    refused = puppet.post(f"/api/admin/approvals/{request_id}/approve")
    assert refused.status_code == 403, refused.text
    assert "set or reset" in refused.json()["message"]
    export = root.post("/api/admin/audit/export-requests", json={"format": "jsonl"})
    assert export.status_code == 202, export.text
    assert puppet.post(f"/api/admin/approvals/{export.json()['id']}/approve").status_code == 403
    with runtime.sessions() as s:
        reasons = [
            json.loads(e.details)["reason"]
            for e in s.execute(
                select(AuditEvent).where(
                    AuditEvent.action == "approval.self_approve", AuditEvent.outcome == "refused"
                )
            ).scalars()
        ]
    assert "requester_controls_approver" in reasons
    assert "approver_is_subject" in reasons
    assert third.post(f"/api/admin/approvals/{request_id}/approve").status_code == 200


# -- hole 4: erasure with documents=transfer ----------------------------------------------


def test_hole4_erasure_handing_sensitive_documents_to_the_eraser_is_held(
    runtime: Runtime, as_: dict[str, Browser], cast: dict[str, Account], tmp_path: Path
) -> None:
    root = as_["root"]
    alice = cast["alice"].user.id
    secret = document(runtime, tmp_path, "diagnosis.md", owner="alice", classification="personal")
    plain = document(runtime, tmp_path, "menu.md", owner="alice", classification="internal")
    inline_worker(runtime).run_until_idle()
    to_self = root.post(
        f"/api/admin/users/{alice}/erase",
        json={"documents": "transfer", "transfer_to": cast["root"].user.id},
    )
    request_id = _held(to_self, "erase_user")
    puppet = root.post("/api/admin/users", json={"username": "heir"}).json()["user"]["id"]
    to_puppet = root.post(
        f"/api/admin/users/{alice}/erase", json={"documents": "transfer", "transfer_to": puppet}
    )
    _held(to_puppet, "erase_user")
    # Deleting them instead follows the deletion rule (they are not root's).
    _held(root.post(f"/api/admin/users/{alice}/erase", json={"documents": "delete"}), "erase_user")
    with runtime.sessions() as s:
        assert s.get_one(User, alice).is_active  # nothing started
    assert not reads(root, secret)

    approved = as_["second"].post(f"/api/admin/approvals/{request_id}/approve")
    assert approved.status_code == 200, approved.text
    assert reads(root, secret)
    assert reads(root, plain)
    with runtime.sessions() as s:
        assert s.get(User, alice) is None


# -- hole 6: join || grant ------------------------------------------------------------------


def test_hole6_joining_a_group_while_it_is_granted_cannot_both_pass(
    runtime: Runtime,
    as_: dict[str, Browser],
    cast: dict[str, Account],
    browser_factory: Any,
    tmp_path: Path,
) -> None:
    """Both orders, many times, with the checks' reads slowed to widen any window."""
    root = as_["root"]
    other_tab = browser_factory()  # the same admin in a second browser: its own thread
    other_tab.sign_in(cast["root"])
    secret = document(runtime, tmp_path, "board.md", owner="alice")
    inline_worker(runtime).run_until_idle()
    group = root.post("/api/admin/groups", json={"name": "board"}).json()
    admin_id = cast["root"].user.id

    def slow(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and (
            "group_members" in statement or "document_grants" in statement
        ):
            time.sleep(0.003)

    both = 0
    event.listen(runtime.engine, "before_cursor_execute", slow)
    try:
        for attempt in range(24):
            barrier = threading.Barrier(2)
            results: dict[str, int] = {}

            def join(barrier: threading.Barrier = barrier, out: dict[str, int] = results) -> None:
                barrier.wait()
                url = f"/api/admin/groups/{group['id']}/members"
                out["join"] = root.post(url, json={"user_id": admin_id}).status_code

            def grant(barrier: threading.Barrier = barrier, out: dict[str, int] = results) -> None:
                barrier.wait()
                url = f"/api/documents/{secret}/grants"
                out["grant"] = other_tab.post(url, json={"principal": "group:board"}).status_code

            order = (join, grant) if attempt % 2 else (grant, join)
            threads = [threading.Thread(target=f) for f in order]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert set(results.values()) <= {200, 202}, results
            with runtime.sessions() as s:
                member = s.get(GroupMember, (group["id"], admin_id)) is not None
                granted = s.get(DocumentGrant, (secret, f"group:{group['id']}")) is not None
                both += member and granted
                s.execute(delete(GroupMember).where(GroupMember.group_id == group["id"]))
                s.execute(
                    delete(DocumentGrant).where(DocumentGrant.principal == f"group:{group['id']}")
                )
                s.commit()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", slow)
    assert both == 0


# -- hole 7: deletion approvals --------------------------------------------------------------


def test_hole7_deleting_a_sensitive_document_not_ones_own_follows_one_rule(
    runtime: Runtime, as_: dict[str, Browser], tmp_path: Path
) -> None:
    root = as_["root"]
    one = document(runtime, tmp_path, "one.md", owner="alice")
    two = document(runtime, tmp_path, "two.md", owner="alice", classification="personal")
    menu = document(runtime, tmp_path, "menu.md", owner="alice", classification="internal")
    mine = document(runtime, tmp_path, "mine.md", owner="root")
    inline_worker(runtime).run_until_idle()

    request_id = _held(root.delete(f"/api/documents/{one}"), "delete_document")
    past = {"retain_until": "2000-01-01T00:00:00Z"}
    _held(root.request("PUT", f"/api/documents/{two}/retention", json=past), "retain_until")
    # Its owner sets a date alone; keeping it longer than that is not deleting it.
    owners = {"retain_until": "2990-01-01T00:00:00Z"}
    assert as_["alice"].request("PUT", f"/api/documents/{two}/retention", json=owners).is_success
    later = {"retain_until": "2999-01-01T00:00:00Z"}
    assert root.request("PUT", f"/api/documents/{two}/retention", json=later).status_code == 200
    bulk = root.post("/api/admin/documents/bulk-delete", json={"doc_ids": [one, two]})
    assert bulk.status_code == 202
    runtime.settings.approvals.required.remove("bulk_delete")  # the one rule still applies
    bulk = root.post("/api/admin/documents/bulk-delete", json={"doc_ids": [two]})
    assert bulk.status_code == 202
    assert reads(as_["alice"], one)
    assert reads(as_["alice"], two)

    # Not sensitive, or the admin's own: deleted at once.
    assert root.delete(f"/api/documents/{menu}").status_code == 204
    assert root.delete(f"/api/documents/{mine}").status_code == 204
    # The owner deletes her own alone; a second admin's approval deletes the other.
    assert as_["second"].post(f"/api/admin/approvals/{request_id}/approve").status_code == 200
    assert not reads(as_["alice"], one)
    assert as_["alice"].delete(f"/api/documents/{two}").status_code == 204
