"""The documents and approvals API withholds what it should, through real sign-ins.

A document the caller cannot read is 404 on every route, with the same body as a document
that does not exist; downloads and previews need `read`; counts cover only what the caller
may see; changing access needs `manage`; an admin's self-grant on a confidential document
waits for a second admin, who approves it once, before it expires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from appliance.acl import service as acl
from appliance.acl.principals import add_member
from appliance.audit.tables import AuditEvent
from appliance.core.config import Settings
from appliance.core.runtime import Runtime
from appliance.documents.tables import Document
from tests.fixtures.app import inline_worker, submit
from tests.fixtures.auth import Account, signed_in

SECRET_WORDS = "The merger code name is Bluefin-Otter-4417."


def _document(
    rt: Runtime,
    tmp_path: Path,
    *,
    owner: str,
    grants: tuple[str, ...] = (),
    classification: str = "internal",
    name: str = "merger-plan.md",
) -> str:
    path = tmp_path / name
    # The name goes into the text too: the same content from one owner is a duplicate.
    path.write_text(f"# Merger Plan\n\n{SECRET_WORDS}\n\n# Timeline\n\nSee {name}.\n")
    doc_id = submit(rt, path, owner=owner, grants=grants)
    assert inline_worker(rt).run_until_idle(only={doc_id}) == 1
    with rt.sessions() as s:
        doc = s.get_one(Document, doc_id)
        assert doc.state == "indexed", doc.error_reason
        if classification != doc.classification:
            acl.classify(
                session=s,
                index=rt.index(),
                doc=doc,
                classification=classification,
                actor="operator:test",
            )
    return doc_id


def _routes(doc_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", f"/api/documents/{doc_id}", {}),
        ("GET", f"/api/documents/{doc_id}/download", {}),
        ("GET", f"/api/documents/{doc_id}/chunks/0", {}),
        ("GET", f"/api/documents/{doc_id}/grants", {}),
        ("POST", f"/api/documents/{doc_id}/grants", {"json": {"principal": "everyone"}}),
        ("DELETE", f"/api/documents/{doc_id}/grants", {"params": {"principal": "everyone"}}),
        ("PATCH", f"/api/documents/{doc_id}", {"json": {"classification": "public"}}),
        ("DELETE", f"/api/documents/{doc_id}", {}),
    ]


def _audit(rt: Runtime, action: str) -> list[AuditEvent]:
    with rt.sessions() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def test_an_unreadable_document_is_not_found_on_every_route(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, alice: Account, bob: Account
) -> None:
    doc_id = _document(runtime, tmp_path, owner="bob")
    as_alice = signed_in(browser_factory, alice)
    for method, url, kw in _routes(doc_id):
        r = as_alice.request(method, url, **kw)
        missing = as_alice.request(method, url.replace(doc_id, "0" * 32), **kw)
        assert r.status_code == 404, (method, url, r.text)
        assert r.json() == missing.json(), (method, url)
        assert SECRET_WORDS not in r.text
        assert "merger" not in r.text.lower()
    listing = as_alice.get("/api/documents").json()
    assert listing["total"] == 0
    assert listing["documents"] == []
    assert listing["by_state"] == {}
    assert listing["by_classification"] == {}
    # Still there for its owner: nothing was deleted by the refused requests.
    as_bob = signed_in(browser_factory, bob)
    assert as_bob.get(f"/api/documents/{doc_id}").status_code == 200


def test_read_grant_opens_view_download_and_preview_and_revoke_closes_them(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, alice: Account, bob: Account
) -> None:
    doc_id = _document(runtime, tmp_path, owner="bob", name="Plan für Q3.md")
    as_alice = signed_in(browser_factory, alice)
    as_bob = signed_in(browser_factory, bob)
    assert (
        as_bob.post(f"/api/documents/{doc_id}/grants", json={"principal": "user:alice"}).json()[
            "status"
        ]
        == "done"
    )

    meta = as_alice.get(f"/api/documents/{doc_id}")
    assert meta.status_code == 200
    assert meta.json()["filename"] == "Plan für Q3.md"
    assert meta.json()["can_manage"] is False
    assert meta.json()["yours"] is False
    download = as_alice.get(f"/api/documents/{doc_id}/download")
    assert download.status_code == 200
    assert SECRET_WORDS in download.text
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Plan%20f%C3%BCr%20Q3.md" in disposition
    assert download.headers["content-type"] == "application/octet-stream"
    passage = as_alice.get(f"/api/documents/{doc_id}/chunks/0")
    assert passage.status_code == 200
    assert passage.json()["doc_id"] == doc_id
    assert as_alice.get(f"/api/documents/{doc_id}/chunks/999").status_code == 404
    listing = as_alice.get("/api/documents").json()
    assert [d["id"] for d in listing["documents"]] == [doc_id]
    assert listing["by_state"] == {"indexed": 1}
    assert listing["by_classification"] == {"internal": 1}
    assert len(_audit(runtime, "document.download")) == 1

    # Reading is not managing: 403 here is no leak, alice knows the document.
    assert as_alice.get(f"/api/documents/{doc_id}/grants").status_code == 403
    r = as_alice.post(f"/api/documents/{doc_id}/grants", json={"principal": "everyone"})
    assert r.status_code == 403
    assert as_alice.delete(f"/api/documents/{doc_id}").status_code == 403
    assert (
        as_alice.patch(f"/api/documents/{doc_id}", json={"classification": "public"}).status_code
        == 403
    )

    r = as_bob.delete(f"/api/documents/{doc_id}/grants", params={"principal": "user:alice"})
    assert r.status_code == 200
    assert {g["name"] for g in r.json()["grants"]} == {"user:bob"}
    for url in ("", "/download", "/chunks/0"):
        assert as_alice.get(f"/api/documents/{doc_id}{url}").status_code == 404
    assert as_alice.get("/api/documents").json()["total"] == 0


def test_search_filters_and_counts_cover_only_readable_documents(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, alice: Account, bob: Account
) -> None:
    mine = _document(runtime, tmp_path, owner="alice", name="budget.md")
    shared = _document(
        runtime,
        tmp_path,
        owner="bob",
        grants=("user:alice",),
        name="roadmap.md",
        classification="confidential",
    )
    _document(runtime, tmp_path, owner="bob", name="salaries.md", classification="confidential")
    as_alice = signed_in(browser_factory, alice)
    listing = as_alice.get("/api/documents").json()
    assert {d["id"] for d in listing["documents"]} == {mine, shared}
    assert listing["total"] == 2
    assert listing["by_classification"] == {"internal": 1, "confidential": 1}
    found = as_alice.get("/api/documents", params={"q": "ROAD"}).json()
    assert [d["id"] for d in found["documents"]] == [shared]
    assert found["total"] == 1
    assert as_alice.get("/api/documents", params={"q": "salaries"}).json()["total"] == 0
    narrowed = as_alice.get("/api/documents", params={"classification": "confidential"}).json()
    assert [d["id"] for d in narrowed["documents"]] == [shared]
    assert narrowed["by_classification"] == {"internal": 1, "confidential": 1}
    assert as_alice.get("/api/documents", params={"state": "failed"}).json()["total"] == 0


def test_upload_with_grants_shows_progress_to_its_owner_then_the_library(
    runtime: Runtime, browser_factory: Any, alice: Account, bob: Account
) -> None:
    as_alice = signed_in(browser_factory, alice)
    as_bob = signed_in(browser_factory, bob)
    r = as_alice.post(
        "/api/documents",
        files={"file": ("notes.md", b"# Notes\n\nThe launch is on Tuesday.\n", "text/markdown")},
        data={"grants": ["user:bob"], "classification": "confidential"},
    )
    assert r.status_code == 202, r.text
    doc = r.json()
    assert doc["state"] == "queued"
    assert doc["yours"]
    assert doc["can_manage"]
    assert doc["classification"] == "confidential"
    assert as_alice.get(f"/api/documents/{doc['id']}").json()["state"] == "queued"
    # Not yet readable: the grantee sees nothing until it is indexed.
    assert as_bob.get(f"/api/documents/{doc['id']}").status_code == 404
    assert as_bob.get("/api/documents").json()["total"] == 0

    inline_worker(runtime).run_until_idle()
    done = as_alice.get(f"/api/documents/{doc['id']}").json()
    assert done["state"] == "indexed"
    assert done["chunks_done"] == done["chunks_total"] >= 1
    assert [d["id"] for d in as_bob.get("/api/documents").json()["documents"]] == [doc["id"]]


def test_failed_upload_reason_is_shown_to_its_owner_only(
    runtime: Runtime, browser_factory: Any, alice: Account, bob: Account
) -> None:
    as_alice = signed_in(browser_factory, alice)
    r = as_alice.post(
        "/api/documents",
        files={"file": ("empty.txt", b"", "text/plain")},
        data={"grants": ["everyone"]},
    )
    assert r.status_code == 202
    assert r.json()["state"] == "failed"
    assert "empty" in r.json()["error_reason"]
    listing = as_alice.get("/api/documents", params={"state": "failed"}).json()
    assert listing["total"] == 1
    as_bob = signed_in(browser_factory, bob)
    assert as_bob.get(f"/api/documents/{r.json()['id']}").status_code == 404


def test_upload_over_the_limit_is_413_and_stores_nothing(
    settings: Settings, runtime: Runtime, browser_factory: Any, alice: Account
) -> None:
    settings.ingest.max_upload_mb = 1
    as_alice = signed_in(browser_factory, alice)
    big = b"x" * (1024 * 1024 + 10)
    r = as_alice.post("/api/documents", files={"file": ("big.txt", big, "text/plain")})
    assert r.status_code == 413
    assert "ingest.max_upload_mb" in r.json()["message"]
    with runtime.sessions() as s:
        assert s.execute(select(Document)).first() is None
    assert runtime.blobs.ids() == set()
    r = as_alice.post("/api/documents", data={"grants": ["everyone"]})
    assert r.status_code == 422


def test_managing_grants_needs_manage_and_keeps_one_manager(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, alice: Account, bob: Account
) -> None:
    doc_id = _document(runtime, tmp_path, owner="alice", grants=("user:bob",))
    as_alice = signed_in(browser_factory, alice)
    as_bob = signed_in(browser_factory, bob)
    grants_url = f"/api/documents/{doc_id}/grants"
    assert as_bob.post(grants_url, json={"principal": "everyone"}).status_code == 403
    r = as_alice.post(grants_url, json={"principal": "user:bob", "level": "manage"})
    assert r.status_code == 200
    assert r.json()["status"] == "done"
    assert as_bob.post(grants_url, json={"principal": "everyone"}).json()["status"] == "done"
    assert as_bob.post(grants_url, json={"principal": "everyone"}).json()["status"] == "unchanged"
    assert {g["name"]: g["level"] for g in as_bob.get(grants_url).json()} == {
        "user:alice": "manage",
        "user:bob": "manage",
        "everyone": "read",
    }
    assert as_bob.delete(grants_url, params={"principal": "user:alice"}).status_code == 200
    r = as_bob.delete(grants_url, params={"principal": "user:bob"})
    assert r.status_code == 422
    assert "last" in r.json()["message"]
    assert as_bob.delete(grants_url, params={"principal": "group:nobody"}).status_code == 404
    assert as_bob.post(grants_url, json={"principal": "bogus"}).status_code == 422
    assert len(_audit(runtime, "acl.grant")) == 2
    assert len(_audit(runtime, "acl.revoke")) == 1
    r = as_bob.patch(f"/api/documents/{doc_id}", json={"classification": "personal"})
    assert r.status_code == 200
    assert r.json()["classification"] == "personal"
    assert as_bob.delete(f"/api/documents/{doc_id}").status_code == 204
    assert as_bob.get(f"/api/documents/{doc_id}").status_code == 404
    assert runtime.index().count(doc_id) == 0


def test_admins_manage_but_do_not_read(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, root: Account, bob: Account
) -> None:
    doc_id = _document(runtime, tmp_path, owner="bob", classification="internal")
    as_root = signed_in(browser_factory, root)
    for url in ("", "/download", "/chunks/0"):
        assert as_root.get(f"/api/documents/{doc_id}{url}").status_code == 404
    assert as_root.get("/api/documents").json()["total"] == 0
    grants = as_root.get(f"/api/documents/{doc_id}/grants")
    assert grants.status_code == 200
    assert [g["name"] for g in grants.json()] == ["user:bob"]
    # Not confidential: the self-grant goes through, and the audit log says what it was.
    r = as_root.post(f"/api/documents/{doc_id}/grants", json={"principal": "user:root"})
    assert r.status_code == 200
    assert r.json()["status"] == "done"
    (event,) = _audit(runtime, "acl.grant")
    assert '"self_grant":true' in event.details
    assert as_root.get(f"/api/documents/{doc_id}/download").status_code == 200


def test_admin_self_grant_on_confidential_needs_another_admin_once(
    runtime: Runtime,
    tmp_path: Path,
    browser_factory: Any,
    root: Account,
    root2: Account,
    bob: Account,
) -> None:
    doc_id = _document(runtime, tmp_path, owner="bob", classification="confidential")
    as_root = signed_in(browser_factory, root)
    as_root2 = signed_in(browser_factory, root2)
    r = as_root.post(f"/api/documents/{doc_id}/grants", json={"principal": "everyone"})
    assert r.status_code == 202
    assert r.json()["status"] == "approval_required"
    approval = r.json()["approval"]
    assert approval["status"] == "pending"
    assert approval["requester"] == "root"
    assert as_root.get(f"/api/documents/{doc_id}").status_code == 404  # nothing granted yet
    assert _audit(runtime, "acl.grant") == []
    # Asking again does not pile up requests.
    again = as_root.post(f"/api/documents/{doc_id}/grants", json={"principal": "everyone"})
    assert again.json()["approval"]["id"] == approval["id"]

    r = as_root.post(f"/api/admin/approvals/{approval['id']}/approve")
    assert r.status_code == 403
    assert "own" in r.json()["message"]
    listed = as_root2.get("/api/admin/approvals", params={"status": "pending"}).json()
    assert [a["id"] for a in listed] == [approval["id"]]
    r = as_root2.post(f"/api/admin/approvals/{approval['id']}/approve")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    assert r.json()["decided_by"] == "root2"
    assert r.json()["executed_at"] is not None
    assert as_root.get(f"/api/documents/{doc_id}").status_code == 200
    # Exactly once: a second approval is refused and grants nothing more.
    assert as_root2.post(f"/api/admin/approvals/{approval['id']}/approve").status_code == 422
    assert as_root2.post(f"/api/admin/approvals/{approval['id']}/reject").status_code == 422
    (grant,) = _audit(runtime, "acl.grant")
    assert approval["id"] in grant.details
    assert len(_audit(runtime, "approval.request")) == 1
    assert len(_audit(runtime, "approval.approve")) == 1


def test_rejected_and_expired_requests_grant_nothing(
    runtime: Runtime,
    tmp_path: Path,
    settings: Settings,
    browser_factory: Any,
    root: Account,
    root2: Account,
    bob: Account,
    alice: Account,
) -> None:
    doc_id = _document(runtime, tmp_path, owner="bob", classification="personal")
    as_root = signed_in(browser_factory, root)
    as_root2 = signed_in(browser_factory, root2)
    first = as_root.post(f"/api/documents/{doc_id}/grants", json={"principal": "user:root"}).json()[
        "approval"
    ]
    assert (
        as_root2.post(f"/api/admin/approvals/{first['id']}/reject").json()["status"] == "rejected"
    )
    assert as_root2.post(f"/api/admin/approvals/{first['id']}/approve").status_code == 422
    assert as_root.get(f"/api/documents/{doc_id}").status_code == 404

    # Lowering the classification to dodge the approval is held too.
    r = as_root.patch(f"/api/documents/{doc_id}", json={"classification": "internal"})
    assert r.status_code == 202
    assert r.json()["approval"]["kind"] == "classify"

    second = as_root.post(
        "/api/admin/approvals",
        json={"doc_id": doc_id, "kind": "grant", "principal": "user:root", "reason": "audit"},
    )
    assert second.status_code == 201
    as_root.clock.advance(hours=settings.acl.approval_expiry_hours + 1)
    as_root, as_root2 = (signed_in(browser_factory, a) for a in (root, root2))  # sessions ended
    r = as_root2.post(f"/api/admin/approvals/{second.json()['id']}/approve")
    assert r.status_code == 422
    assert "expired" in r.json()["message"]
    statuses = {a["id"]: a["status"] for a in as_root2.get("/api/admin/approvals").json()}
    assert statuses[second.json()["id"]] == "expired"
    assert as_root.get(f"/api/documents/{doc_id}").status_code == 404
    assert _audit(runtime, "acl.grant") == []
    # Approvals are for admins only.
    as_alice = signed_in(browser_factory, alice)
    assert as_alice.get("/api/admin/approvals").status_code == 403
    assert as_alice.post(f"/api/admin/approvals/{first['id']}/approve").status_code == 403


def test_granting_to_a_group_the_admin_is_in_is_a_self_grant(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, root: Account, bob: Account
) -> None:
    from appliance.auth import service as users

    with runtime.sessions() as s:
        group = users.create_group(s, name="board", actor="operator:test")
        add_member(s, group_id=group.id, user_id=root.user.id, actor="operator:test")
        s.commit()
    doc_id = _document(runtime, tmp_path, owner="bob", classification="confidential")
    as_root = signed_in(browser_factory, root)
    r = as_root.post(f"/api/documents/{doc_id}/grants", json={"principal": "group:board"})
    assert r.status_code == 202
    # A group the admin is not in is an ordinary grant.
    with runtime.sessions() as s:
        users.create_group(s, name="legal", actor="operator:test")
        s.commit()
    r = as_root.post(f"/api/documents/{doc_id}/grants", json={"principal": "group:legal"})
    assert r.status_code == 200
    assert r.json()["status"] == "done"


def test_a_no_op_change_reveals_no_name_and_is_audited(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, root: Account, bob: Account
) -> None:
    """Hole 5: PATCH with the current classification used to return the decrypted filename
    and title of any document to an admin, and wrote no audit entry."""
    doc_id = _document(runtime, tmp_path, owner="bob", classification="confidential")
    as_root = signed_in(browser_factory, root)
    before = len(_audit(runtime, "acl.classify"))
    r = as_root.patch(f"/api/documents/{doc_id}", json={"classification": "confidential"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["filename"] is None
    assert body["title"] is None
    assert "merger" not in r.text.lower()
    entries = _audit(runtime, "acl.classify")
    assert len(entries) == before + 1
    assert entries[-1].outcome == "unchanged"
    assert entries[-1].actor == f"user:{root.user.id}"


def test_passage_reads_are_audited_once_per_passage_and_session(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, alice: Account
) -> None:
    """Hole 9: reading a passage was not audited at all (downloads were)."""
    doc_id = _document(runtime, tmp_path, owner="alice")
    as_alice = signed_in(browser_factory, alice)
    for _ in range(3):  # a preview reopened, as a person clicks back and forth
        assert as_alice.get(f"/api/documents/{doc_id}/chunks/0").status_code == 200
    entries = _audit(runtime, "document.passage_read")
    assert len(entries) == 1
    assert entries[0].actor == f"user:{alice.user.id}"
    assert entries[0].target == f"doc:{doc_id}"
    assert SECRET_WORDS not in (entries[0].details or "")
    again = signed_in(browser_factory, alice)  # a new sign-in session is counted apart
    assert again.get(f"/api/documents/{doc_id}/chunks/0").status_code == 200
    assert len(_audit(runtime, "document.passage_read")) == 2
