"""Retention job: time travel through every policy, legal hold, leases, crash and resume.

The policy clock is injected (`run_job(..., now=...)`); documents, messages, sessions and
audit entries are dated by writing their timestamps. After a document is deleted or
expires, a full scan of the data dir, the key store and the index finds none of it.
DESIGN invariant 9.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.auth import service as users
from appliance.auth import sessions as auth_sessions
from appliance.auth.tables import AuthSession
from appliance.chat import conversations, pipeline
from appliance.chat.tables import Conversation, Message
from appliance.core.db import utcnow
from appliance.core.errors import LeaseLost, PermissionDenied
from appliance.core.places import CHAT_KEY
from appliance.core.runtime import Runtime
from appliance.documents.tables import Chunk, Document, DocumentGrant, LegalHold
from appliance.jobs import leases, registry
from appliance.jobs.registry import Job, run_job
from appliance.retention import service as retention
from models.fakes import FakeGenerator
from tests.fixtures.app import inline_worker, instance_env, submit
from tests.integration.test_canary import scan

DAY = dt.timedelta(days=1)


# -- helpers -------------------------------------------------------------------------------


def _ingest(rt: Runtime, tmp_path: Path, name: str, *, classification: str = "internal") -> str:
    """Ingest one markdown file whose filename, heading and text carry `name`."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    path = src / f"{name}.md"
    path.write_text(
        f"# Heading {name}\n\nThe {name} memo says the travel portal books flights.\n\n"
        f"# More {name}\n\nMeals for {name} are reimbursed up to forty euros.\n"
    )
    doc_id = submit(rt, path, grants=("everyone",))
    with rt.sessions() as s:
        s.get_one(Document, doc_id).classification = classification
        s.commit()
    inline_worker(rt).run_until_idle(only={doc_id})
    with rt.sessions() as s:
        assert s.get_one(Document, doc_id).state == "indexed"
    return doc_id


def _created(rt: Runtime, doc_id: str, when: dt.datetime) -> None:
    with rt.sessions() as s:
        s.execute(update(Document).where(Document.id == doc_id).values(created_at=when))
        s.commit()


def _policy(rt: Runtime, **values: int | None) -> None:
    with rt.sessions() as s:
        retention.set_policy(
            session=s,
            settings=rt.settings,
            changes=values,
            reset=[],
            actor="operator:test",
            now=utcnow(),
        )
        s.commit()


def _exists(rt: Runtime, doc_id: str) -> bool:
    with rt.sessions() as s:
        return s.get(Document, doc_id) is not None


def assert_gone(rt: Runtime, doc_id: str, marker: str) -> None:
    """Nothing of the document is left: rows, key, blob, index points, and no byte of its
    text, heading or filename anywhere in the data dir or the key store."""
    index = rt.index()
    with rt.sessions() as s:
        assert s.get(Document, doc_id) is None
        assert not s.execute(select(Chunk).where(Chunk.doc_id == doc_id)).first()
        assert not s.execute(select(DocumentGrant).where(DocumentGrant.doc_id == doc_id)).first()
        assert s.get(LegalHold, doc_id) is None
    assert not rt.crypto.has_data_key("doc", doc_id)
    assert not rt.blobs.exists(doc_id)
    assert doc_id not in index.document_ids()
    index.flush()
    roots = [rt.settings.data_dir, rt.settings.keystore_path]
    assert scan(roots, marker) == []
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    assert not any(doc_id in p.name for p in files)


def _last_job_audit(rt: Runtime, name: str) -> AuditEvent:
    with rt.sessions() as s:
        return s.execute(
            select(AuditEvent)
            .where(AuditEvent.action == f"job.{name}")
            .order_by(AuditEvent.id.desc())
            .limit(1)
        ).scalar_one()


def _marker() -> str:
    return "Keep" + secrets.token_hex(5) + "Qx"


# -- policies, with time travel ------------------------------------------------------------


def test_document_retention_per_classification(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    t0 = utcnow()
    names = {c: _marker() for c in ("public", "internal", "confidential", "personal")}
    ids = {c: _ingest(rt, tmp_path, n, classification=c) for c, n in names.items()}
    for doc_id in ids.values():
        _created(rt, doc_id, t0)
    _policy(rt, internal_days=30, confidential_days=90, personal_days=0)

    result = run_job(rt, "retention", now=t0 + 29 * DAY)
    assert result.counts["documents_deleted"] == 0
    assert all(_exists(rt, d) for d in ids.values())

    result = run_job(rt, "retention", now=t0 + 31 * DAY)
    assert result.counts["documents_deleted"] == 1
    assert_gone(rt, ids["internal"], names["internal"])
    assert _exists(rt, ids["confidential"])

    run_job(rt, "retention", now=t0 + 91 * DAY)
    assert_gone(rt, ids["confidential"], names["confidential"])
    # public has no policy, personal is 0 (keep forever): both stay, years later.
    run_job(rt, "retention", now=t0 + 3650 * DAY)
    assert _exists(rt, ids["public"])
    assert _exists(rt, ids["personal"])
    event = _last_job_audit(rt, "retention")
    assert event.actor == "system:retention"
    assert json.loads(event.details)["documents_deleted"] == 0


def test_retain_until_replaces_the_classification_period(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    t0 = utcnow()
    early, late = _marker(), _marker()
    early_id = _ingest(rt, tmp_path, early)
    late_id = _ingest(rt, tmp_path, late)
    for doc_id in (early_id, late_id):
        _created(rt, doc_id, t0)
    _policy(rt, internal_days=30)
    with rt.sessions() as s:
        retention.set_retain_until(
            session=s, doc_id=early_id, until=t0 + 10 * DAY, actor="operator:test"
        )
        retention.set_retain_until(
            session=s, doc_id=late_id, until=t0 + 100 * DAY, actor="operator:test"
        )
        s.commit()
    run_job(rt, "retention", now=t0 + 9 * DAY)
    assert _exists(rt, early_id)
    run_job(rt, "retention", now=t0 + 11 * DAY)
    assert_gone(rt, early_id, early)
    run_job(rt, "retention", now=t0 + 31 * DAY)  # past its classification's period
    assert _exists(rt, late_id)
    run_job(rt, "retention", now=t0 + 101 * DAY)
    assert_gone(rt, late_id, late)


def test_legal_hold_blocks_the_job_until_lifted(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    t0 = utcnow()
    name = _marker()
    doc_id = _ingest(rt, tmp_path, name)
    with rt.sessions() as s:
        retention.set_retain_until(session=s, doc_id=doc_id, until=t0, actor="operator:test")
        assert retention.place_hold(
            session=s, doc_id=doc_id, actor="operator:test", now=t0, reason="case 12"
        )
        s.commit()
    result = run_job(rt, "retention", now=t0 + DAY)
    assert result.counts["documents_deleted"] == 0
    assert result.counts["documents_held"] == 1
    assert _exists(rt, doc_id)
    with rt.sessions() as s:
        assert retention.lift_hold(session=s, doc_id=doc_id, actor="operator:test")
        s.commit()
    run_job(rt, "retention", now=t0 + DAY)
    assert_gone(rt, doc_id, name)


def test_legal_hold_blocks_the_deletion_path_itself(runtime: Runtime, tmp_path: Path) -> None:
    from appliance.acl import service as acl

    rt = runtime
    doc_id = _ingest(rt, tmp_path, _marker())
    with rt.sessions() as s:
        retention.place_hold(session=s, doc_id=doc_id, actor="operator:test", now=utcnow())
        s.commit()
    with rt.sessions() as s, pytest.raises(PermissionDenied, match="legal hold"):
        acl.delete_document(
            session=s,
            index=rt.index(),
            crypto=rt.crypto,
            blobs=rt.blobs,
            doc=s.get_one(Document, doc_id),
            actor="operator:test",
        )
    with rt.sessions() as s:
        assert s.get_one(Document, doc_id).state == "indexed"
        refused = s.execute(
            select(AuditEvent).where(
                AuditEvent.action == "document.delete", AuditEvent.outcome == "refused"
            )
        ).scalar_one()
        assert refused.target == f"doc:{doc_id}"
    assert retention.delete_one(rt, doc_id, actor="system:retention") is False
    assert _exists(rt, doc_id)


def _converse(rt: Runtime, user_id: str, question: str) -> str:
    rt.settings.chat.min_score = -1.0
    rt._generator = FakeGenerator("It is in the memo [1].")
    events = list(
        pipeline.answer(rt=rt, scheduler=rt.scheduler, user_id=user_id, question=question)
    )
    return str(next(e.data["id"] for e in events if e.kind == "conversation"))


def test_deleted_document_leaves_conversations_sources(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    t0 = utcnow()
    name = _marker()
    doc_id = _ingest(rt, tmp_path, name)
    with rt.sessions() as s:
        admin = users.get_user_by_name(s, "admin")
    conv_id = _converse(rt, admin.id, "What does the memo say about the travel portal?")
    with rt.sessions() as s:
        shown = conversations.show_conversation(rt, s, admin, conv_id)
        cited = [src for m in shown["messages"] for src in m["sources"]]
        assert cited
        assert all(src["doc_id"] == doc_id for src in cited)
        assert name in json.dumps(cited)

    with rt.sessions() as s:
        retention.set_retain_until(session=s, doc_id=doc_id, until=t0, actor="operator:test")
        s.commit()
    result = run_job(rt, "retention", now=t0 + DAY)
    assert result.counts["documents_deleted"] == 1
    assert result.counts["sources_scrubbed"] >= 1
    with rt.sessions() as s:
        shown = conversations.show_conversation(rt, s, admin, conv_id)
        cited = [src for m in shown["messages"] for src in m["sources"]]
        assert cited
        assert all(src["status"] == "no longer available" for src in cited)
        # Stored, not just shown: the sources no longer carry its filename or snippet.
        for m in s.execute(select(Message).where(Message.sources_ct.is_not(None))).scalars():
            stored = conversations.decrypt_for(
                rt, admin.id, f"conversation:{conv_id}:sources:{m.id}", m.sources_ct or b""
            )
            assert name not in stored
    assert_gone(rt, doc_id, name)


def _message(rt: Runtime, user_id: str, when: dt.datetime, n: int = 1) -> str:
    with rt.sessions() as s:
        conv = Conversation(owner_id=user_id, title_ct=b"", created_at=when, updated_at=when)
        s.add(conv)
        s.flush()
        conv.title_ct = conversations.encrypt_for(rt, user_id, f"conversation:{conv.id}:title", "t")
        for i in range(n):
            msg = Message(conversation_id=conv.id, role="user", content_ct=b"", created_at=when)
            s.add(msg)
            s.flush()
            msg.content_ct = conversations.encrypt_for(
                rt, user_id, f"conversation:{conv.id}:message:{msg.id}", f"question {i}"
            )
        s.commit()
        return conv.id


def test_chat_history_expiry(runtime: Runtime) -> None:
    rt = runtime
    t0 = utcnow()
    with rt.sessions() as s:
        uid = users.get_user_by_name(s, "admin").id
    old = _message(rt, uid, t0 - 40 * DAY, n=2)
    recent = _message(rt, uid, t0 - 5 * DAY)
    mixed = _message(rt, uid, t0 - 40 * DAY)
    with rt.sessions() as s:  # a conversation continued recently keeps its recent messages
        conv = s.get_one(Conversation, mixed)
        s.add(Message(conversation_id=mixed, role="user", content_ct=b"x", created_at=t0))
        conv.updated_at = t0
        s.commit()

    result = run_job(rt, "retention", now=t0)
    assert result.counts["messages_deleted"] == 0  # no policy: kept forever
    _policy(rt, chat_history_days=30)
    result = run_job(rt, "retention", now=t0)
    assert result.counts["messages_deleted"] == 3
    assert result.counts["conversations_deleted"] == 1
    with rt.sessions() as s:
        assert s.get(Conversation, old) is None
        assert s.get(Conversation, recent) is not None
        assert s.get(Conversation, mixed) is not None
        left = s.execute(
            select(func.count()).select_from(Message).where(Message.conversation_id == mixed)
        ).scalar_one()
        assert left == 1
    # Time passes: everything expires, the chat key stays for new history.
    result = run_job(rt, "retention", now=t0 + 60 * DAY)
    with rt.sessions() as s:
        assert s.execute(select(func.count()).select_from(Conversation)).scalar_one() == 0
    assert rt.crypto.has_data_key(CHAT_KEY, uid)


def test_session_purge(runtime: Runtime) -> None:
    rt = runtime
    t0 = utcnow()
    with rt.sessions() as s:
        uid = users.get_user_by_name(s, "admin").id
        for days_ago in (1, 10):
            issued = auth_sessions.issue(
                s,
                user_id=uid,
                kind=auth_sessions.FULL,
                stage=None,
                now=t0 - (days_ago + 1) * DAY,
                settings=rt.settings.auth,
                client=None,
                user_agent=None,
            )
            issued.row.expires_at = t0 - days_ago * DAY
        live = auth_sessions.issue(
            s,
            user_id=uid,
            kind=auth_sessions.FULL,
            stage=None,
            now=t0,
            settings=rt.settings.auth,
            client=None,
            user_agent=None,
        )
        s.commit()
        live_id = live.row.id
    _policy(rt, session_days=7)
    assert run_job(rt, "retention", now=t0).counts["sessions_deleted"] == 1
    _policy(rt, session_days=0)
    assert run_job(rt, "retention", now=t0).counts["sessions_deleted"] == 1
    with rt.sessions() as s:
        assert [r.id for r in s.execute(select(AuthSession)).scalars()] == [live_id]
    # Idle for a day: the live one has ended too.
    assert run_job(rt, "retention", now=t0 + DAY).counts["sessions_deleted"] == 1


def test_audit_log_retention(runtime: Runtime) -> None:
    rt = runtime
    with rt.sessions() as s:
        for i in range(5):
            audit.record(s, actor="operator:test", action="test.old", details={"i": i})
        s.commit()
        before = s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    t0 = utcnow()
    result = run_job(rt, "retention", now=t0 + 365 * DAY)  # default 2555 days: nothing
    assert result.counts["audit_entries_pruned"] == 0
    _policy(rt, audit_log_days=30)
    result = run_job(rt, "retention", now=t0 + 31 * DAY)
    assert result.counts["audit_entries_pruned"] >= before
    with rt.sessions() as s:
        assert not s.execute(select(AuditEvent).where(AuditEvent.action == "test.old")).first()
        assert audit.verify(s).ok
    assert _last_job_audit(rt, "retention").details


def test_policy_overrides_are_audited_and_resettable(runtime: Runtime) -> None:
    rt = runtime
    with rt.sessions() as s:
        assert retention.effective_policy(s, rt.settings)["audit_log_days"] == 2555
        after = retention.set_policy(
            session=s,
            settings=rt.settings,
            changes={"internal_days": 10, "audit_log_days": None},
            reset=[],
            actor="user:x",
            now=utcnow(),
        )
        assert after["internal_days"] == 10
        assert after["audit_log_days"] is None
        after = retention.set_policy(
            session=s,
            settings=rt.settings,
            changes={},
            reset=["audit_log_days"],
            actor="user:x",
            now=utcnow(),
        )
        assert after["audit_log_days"] == 2555
        s.commit()
        events = list(
            s.execute(select(AuditEvent).where(AuditEvent.action == "retention.policy")).scalars()
        )
        assert json.loads(events[0].details)["changed"]["internal_days"] == {
            "from": None,
            "to": 10,
        }
        assert len(events) == 2


# -- leases --------------------------------------------------------------------------------


def test_two_runners_in_threads_run_a_job_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime
    calls: list[str] = []
    started = threading.Event()

    def slow(ctx: registry.JobContext) -> dict[str, object]:
        calls.append(ctx.holder)
        started.set()
        time.sleep(0.5)
        return {"done": 1}

    monkeypatch.setitem(registry.JOBS, "slow", Job("slow", "test", lambda s: 60, slow))
    results: list[registry.RunResult] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        barrier.wait()
        results.append(run_job(rt, "slow"))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(r.outcome for r in results) == ["busy", "busy", "busy", "ok"]
    assert {r.holder for r in results if r.outcome == "busy"} == {calls[0]}
    # Released: the next run goes ahead, and the status shows the last result.
    assert run_job(rt, "slow").outcome == "ok"
    status = {j.name: j for j in registry.status(rt)}
    assert status["slow"].last_result == {"done": 1}
    assert status["slow"].running_by is None


def test_lease_expires_and_a_dead_holder_is_taken_over(runtime: Runtime) -> None:
    rt = runtime
    now = utcnow()
    assert leases.acquire(rt.sessions, name="x", holder="otherhost:1:a", now=now, ttl=60)
    assert not leases.acquire(rt.sessions, name="x", holder="me", now=now, ttl=60)
    assert leases.acquire(
        rt.sessions, name="x", holder="me", now=now + dt.timedelta(seconds=61), ttl=60
    )
    with pytest.raises(LeaseLost):
        leases.renew(rt.sessions, name="x", holder="otherhost:1:a", now=now, ttl=60)
    # A holder on this host whose process is gone is replaced at once.
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    child.wait()
    import socket

    dead = f"{socket.gethostname()}:{child.pid}:b"
    assert leases.acquire(rt.sessions, name="y", holder=dead, now=now, ttl=600)
    assert leases.acquire(rt.sessions, name="y", holder="me", now=now, ttl=600)


def test_a_failed_run_is_audited_and_releases_the_lease(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime

    def boom(ctx: registry.JobContext) -> dict[str, object]:
        raise OSError("disk")

    monkeypatch.setitem(registry.JOBS, "boom", Job("boom", "test", lambda s: 60, boom))
    with pytest.raises(OSError, match="disk"):
        run_job(rt, "boom")
    event = _last_job_audit(rt, "boom")
    assert event.outcome == "failed"
    with rt.sessions() as s:
        row = leases.get(s, "boom")
        assert row is not None
        assert row.holder is None
        assert row.last_outcome == "failed"


def test_cleanup_job_is_audited_with_counts(runtime: Runtime) -> None:
    result = run_job(runtime, "cleanup")
    assert result.outcome == "ok"
    assert "expired_sessions_removed" in result.counts
    assert json.loads(_last_job_audit(runtime, "cleanup").details) == result.counts


# -- crash and resume ------------------------------------------------------------------------

CRASH_SCRIPT = """
import os, signal, sys
from appliance.core.config import get_settings
from appliance.documents import service as docs
from appliance.jobs.registry import run_job
from appliance.core.runtime import open_runtime

real_finish = docs.finish_delete
calls = 0

def finish_then_die(**kw):
    global calls
    calls += 1
    if calls == 2:  # the second document is hidden (DELETING) but not yet removed
        os.kill(os.getpid(), signal.SIGKILL)
    real_finish(**kw)

docs.finish_delete = finish_then_die
rt = open_runtime(get_settings())
import datetime as dt
run_job(rt, "retention", now=dt.datetime.fromisoformat(sys.argv[1]))
"""


@pytest.mark.slow
def test_a_run_killed_mid_way_is_finished_by_the_next(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    t0 = utcnow()
    names = [_marker() for _ in range(4)]
    ids = [_ingest(rt, tmp_path, n) for n in names]
    keep_name = _marker()
    keep = _ingest(rt, tmp_path, keep_name)
    with rt.sessions() as s:
        for doc_id in ids:
            retention.set_retain_until(session=s, doc_id=doc_id, until=t0, actor="operator:t")
        s.commit()
    rt.index().flush()
    rt.close()  # the child opens the shard itself

    env = {**os.environ, **instance_env(tmp_path / "instance")}
    child = subprocess.run(  # noqa: S603
        [sys.executable, "-c", CRASH_SCRIPT, (t0 + DAY).isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr

    with rt.sessions() as s:
        states = {d: s.get(Document, d) for d in ids}
        assert states[ids[0]] is None  # finished before the crash
        assert states[ids[1]] is not None
        assert states[ids[1]].state == "deleting"
        assert all(states[d] is not None and states[d].state == "indexed" for d in ids[2:])
        row = leases.get(s, "retention")
        assert row is not None
        assert row.holder is not None
    # Hidden already: the half-deleted document is in no search.
    vector = rt.embedder().embed(["travel portal"])[0]
    hits = {h.doc_id for h in rt.index().search(vector, ["everyone"], k=50)}
    assert ids[1] not in hits
    assert keep in hits

    result = run_job(rt, "retention", now=t0 + DAY)  # takes over the dead child's lease
    assert result.outcome == "ok"
    assert result.counts["deletions_finished"] == 1
    assert result.counts["documents_deleted"] == 2
    for doc_id, name in zip(ids, names, strict=True):
        assert_gone(rt, doc_id, name)
    assert _exists(rt, keep)
    assert scan([rt.settings.data_dir], keep_name) == []  # encrypted, but still there
    assert rt.crypto.has_data_key("doc", keep)
    # Idempotent: once more, nothing to do.
    again = run_job(rt, "retention", now=t0 + DAY)
    assert again.counts["documents_deleted"] == 0
    assert again.counts["deletions_finished"] == 0


def test_scrub_keeps_sources_of_live_documents(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    live = _ingest(rt, tmp_path, _marker())
    gone = "f" * 32
    with rt.sessions() as s:
        uid = users.get_user_by_name(s, "admin").id
    conv = _message(rt, uid, utcnow(), n=0)
    cited = [
        {"doc_id": live, "marker": 1, "filename": "live.md", "snippet": "kept"},
        {"doc_id": gone, "marker": 2, "filename": "SecretName.md", "snippet": "SecretText"},
    ]
    with rt.sessions() as s:
        ids = []
        for sources in ([cited[0]], [cited[1]], cited):
            msg = Message(conversation_id=conv, role="assistant", content_ct=b"")
            s.add(msg)
            s.flush()
            place = f"conversation:{conv}:"
            msg.content_ct = conversations.encrypt_for(rt, uid, place + f"message:{msg.id}", "a")
            msg.sources_ct = conversations.encrypt_for(
                rt, uid, place + f"sources:{msg.id}", json.dumps(sources)
            )
            ids.append(msg.id)
        s.commit()
    assert retention.scrub_sources(rt, batch_size=1) == 2
    assert retention.scrub_sources(rt, batch_size=1) == 0  # idempotent
    with rt.sessions() as s:
        stored = [
            json.loads(
                conversations.decrypt_for(
                    rt, uid, f"conversation:{conv}:sources:{i}", s.get_one(Message, i).sources_ct
                )
            )
            for i in ids
        ]
    assert stored[0] == [cited[0]]
    assert stored[1] == [{"doc_id": gone, "marker": 2, "status": "no longer available"}]
    assert stored[2] == [cited[0], stored[1][0]]
