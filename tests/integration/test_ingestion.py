"""Ingestion end to end on real parts (SQLite file, Qdrant Edge shard, unstructured), fake embedder.

Covers states and progress, atomic publication (invariant 3), ACL filtering inside the
search (invariant 1), encryption of stored text (invariant 5), failure reasons for bad
input, duplicates, deletion, and recovery after an interrupted run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

from appliance.acl.principals import principals_for
from appliance.audit import service as audit
from appliance.auth import service as users
from appliance.core.runtime import Runtime
from appliance.documents import service as docs
from appliance.documents.tables import Chunk, Document
from ingest.index import ChunkPoint
from tests.fixtures.app import add_user, inline_worker, submit

MARKER = "Zebrafish-Quokka-7731"


def _principals(rt: Runtime, username: str) -> list[str]:
    with rt.sessions() as s:
        return principals_for(s, users.get_user_by_name(s, username))


def _visible_docs(rt: Runtime, principals: list[str], query: str = "policy") -> set[str]:
    vec = rt.embedder().embed([query])[0]
    return {h.doc_id for h in rt.index().search(vec, principals, k=100)}


def _write_policy(tmp_path: Path, name: str = "policy.md") -> Path:
    path = tmp_path / name
    path.write_text(
        "# Travel Policy\n\nEmployees book flights through the travel portal. "
        f"The code word is {MARKER}.\n\n"
        "# Expense Limits\n\nMeals are reimbursed up to forty euros per day.\n"
    )
    return path


def test_ingest_indexes_encrypts_and_filters_by_acl(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    add_user(rt, "hannah", group="hr")
    add_user(rt, "oscar")
    doc_id = submit(rt, _write_policy(tmp_path), grants=("group:hr",))
    events: list[tuple[str, str, int, int]] = []
    worker = inline_worker(rt, on_progress=lambda *e: events.append(e))
    assert worker.run_until_idle() == 1

    with rt.sessions() as s:
        doc = s.get_one(Document, doc_id)
        assert doc.state == "indexed", doc.error_reason
        assert doc.chunks_total >= 1
        assert doc.chunks_done == doc.chunks_total
        chunks = s.execute(select(Chunk).where(Chunk.doc_id == doc_id)).scalars().all()
        texts = [
            rt.crypto.decrypt_text("doc", doc_id, f"chunk:{c.chunk_no}:text", c.text_ct)
            for c in chunks
        ]
        assert any(MARKER in t for t in texts)
        assert all(MARKER.encode() not in c.text_ct for c in chunks)
        assert audit.verify(s).ok
    assert [e[1] for e in events][0] == "parsing"
    assert events[-1][1] == "indexed"
    assert rt.index().count(doc_id) == len(chunks)

    assert doc_id in _visible_docs(rt, _principals(rt, "admin"))  # owner
    assert doc_id in _visible_docs(rt, _principals(rt, "hannah"))  # via group hr
    assert doc_id not in _visible_docs(rt, _principals(rt, "oscar"))  # no grant
    with pytest.raises(ValueError, match="principal"):
        rt.index().search(rt.embedder().embed(["policy"])[0], [], k=5)

    # Nothing under the data dir or key store holds the text in the clear.
    rt.index().flush()
    for root in (rt.settings.data_dir, rt.settings.keystore_path):
        for f in root.rglob("*"):
            if f.is_file():
                assert MARKER.encode() not in f.read_bytes(), f


def test_chunks_stay_invisible_until_the_whole_document_is_published(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    rt.settings.models.embed_batch_size = 1  # one chunk per step: observe the partial state
    text = "\n\n".join(
        f"# Section {i}\n\n" + " ".join(["policy words about travel and expenses"] * 30)
        for i in range(6)
    )
    path = tmp_path / "long.md"
    path.write_text(text)
    doc_id = submit(rt, path, grants=("everyone",))
    owner = _principals(rt, "admin")
    seen_partial = []

    def check(d: str, state: str, done: int, total: int) -> None:
        if state == "embedding" and 0 < done < total:
            seen_partial.append(done)
            assert rt.index().count(d) == done  # written...
            assert d not in _visible_docs(rt, owner)  # ...but hidden

    inline_worker(rt, on_progress=check).run_until_idle()
    assert seen_partial, "the document should have several chunks"
    assert doc_id in _visible_docs(rt, owner)


def test_bad_files_fail_with_reasons_and_the_worker_carries_on(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    rt.settings.ingest.max_upload_mb = 1
    files = {
        "empty.txt": b"",
        "corrupt.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 4,
        "program.exe": b"MZ\x90\x00" + bytes(4000),
        "huge.txt": b"word " * 300_000,
    }
    ids = {}
    for name, data in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        ids[name] = submit(rt, p)
    good = submit(rt, _write_policy(tmp_path))
    inline_worker(rt).run_until_idle()
    with rt.sessions() as s:
        got = {name: s.get_one(Document, i) for name, i in ids.items()}
        assert s.get_one(Document, good).state == "indexed"
    for name, doc in got.items():
        assert doc.state == "failed", name
        assert len(doc.error_reason or "") > 20, name
        assert rt.index().count(doc.id) == 0
    assert got["empty.txt"].error_code == "empty"
    assert got["huge.txt"].error_code == "too_large"
    assert "ingest.max_upload_mb" in (got["huge.txt"].error_reason or "")
    assert got["corrupt.pdf"].error_code in ("corrupt", "empty")
    assert got["program.exe"].error_code == "unsupported_type"


def test_same_content_is_detected_as_duplicate(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    first = submit(rt, _write_policy(tmp_path, "a.md"))
    second = submit(rt, _write_policy(tmp_path, "b.md"))
    assert first == second
    with rt.sessions() as s:
        macs = s.execute(select(Document.content_mac)).scalars().all()
    import hashlib

    assert hashlib.sha256(_write_policy(tmp_path).read_bytes()).hexdigest() not in macs


def test_delete_hides_then_shreds_and_removes_everything(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    doc_id = submit(rt, _write_policy(tmp_path), grants=("everyone",))
    inline_worker(rt).run_until_idle()
    owner = _principals(rt, "admin")
    assert doc_id in _visible_docs(rt, owner)
    with rt.sessions() as s:
        docs.begin_delete(session=s, index=rt.index(), doc=s.get_one(Document, doc_id), actor="t")
    assert doc_id not in _visible_docs(rt, owner)
    assert rt.index().count(doc_id) > 0  # hidden, not yet removed
    with rt.sessions() as s:
        docs.finish_delete(
            session=s, index=rt.index(), crypto=rt.crypto, blobs=rt.blobs, doc_id=doc_id
        )
    assert rt.index().count(doc_id) == 0
    assert not rt.blobs.exists(doc_id)
    assert not rt.crypto.has_data_key("doc", doc_id)
    with rt.sessions() as s:
        assert s.get(Document, doc_id) is None
        assert s.execute(select(Chunk).where(Chunk.doc_id == doc_id)).first() is None


def test_recovery_resets_dead_work_finishes_deletions_and_removes_orphans(
    runtime: Runtime, tmp_path: Path
) -> None:
    import socket

    rt = runtime
    owner = _principals(rt, "admin")
    live = submit(rt, _write_policy(tmp_path, "live.md"), grants=("everyone",))
    (tmp_path / "cut.md").write_text("# Parking\n\nA different policy about parking spaces.\n")
    interrupted = submit(rt, tmp_path / "cut.md")
    (tmp_path / "del.md").write_text("# Canteen\n\nLunch is served from noon.\n")
    deleting = submit(rt, tmp_path / "del.md")
    inline_worker(rt).run_until_idle(only={live})
    vec = np.ones(384, dtype=np.float32) / np.sqrt(384)
    # A run that died while embedding: hidden points written, state EMBEDDING, process gone.
    with rt.sessions() as s:
        s.execute(
            update(Document)
            .where(Document.id == interrupted)
            .values(state="embedding", claimed_by=f"{socket.gethostname()}:999999999", attempts=1)
        )
        # A deletion that stopped after hiding.
        s.execute(update(Document).where(Document.id == deleting).values(state="deleting"))
        s.commit()
    rt.index().upsert_hidden([ChunkPoint(interrupted, i, vec) for i in range(3)])
    # An orphan: points of a document the database does not know, even published ones.
    rt.index().upsert_hidden([ChunkPoint("f" * 32, 0, vec)])
    rt.index().publish("f" * 32, owner)

    # Blobs without a row: an old one is an orphan, a fresh one may be an upload in flight.
    import os
    import time

    rt.blobs.put("e" * 32, b"old")
    old = time.time() - 7200
    os.utime(rt.blobs._path("e" * 32), (old, old))
    rt.blobs.put("d" * 32, b"in flight")

    report = inline_worker(rt).recover()
    assert report.orphan_blobs_removed == 1
    assert not rt.blobs.exists("e" * 32)
    assert rt.blobs.exists("d" * 32)
    assert report.requeued == [interrupted]
    assert report.deletions_finished == [deleting]
    assert report.orphan_points_removed == ["f" * 32]
    assert rt.index().document_ids() == {live}
    assert not rt.blobs.exists(deleting)
    assert inline_worker(rt).recover().requeued == []  # idempotent

    inline_worker(rt).run_until_idle()
    with rt.sessions() as s:
        assert s.get_one(Document, interrupted).state == "indexed"
        assert audit.verify(s).ok
    assert interrupted in _visible_docs(rt, owner, "parking")


def test_work_of_a_live_process_is_left_alone(runtime: Runtime, tmp_path: Path) -> None:
    import os
    import socket

    rt = runtime
    doc_id = submit(rt, _write_policy(tmp_path))
    with rt.sessions() as s:
        s.execute(
            update(Document)
            .where(Document.id == doc_id)
            .values(state="parsing", claimed_by=f"{socket.gethostname()}:{os.getppid()}")
        )
        s.commit()
    assert inline_worker(rt).recover().requeued == []
    with rt.sessions() as s:
        assert s.get_one(Document, doc_id).state == "parsing"


@pytest.mark.slow
def test_parser_child_restarts_after_it_dies(tmp_path: Path) -> None:
    import os
    import resource
    import signal

    from appliance.documents.ingestion import Parser

    parser = Parser(max_bytes=1 << 20, ocr=False, isolated=True, parsers=1)
    try:
        path = _write_policy(tmp_path)
        assert parser.submit(path, path.name).result(timeout=120).elements
        (pid,) = parser.pids()
        # A parser holds document text: it may never leave a core dump.
        assert resource.prlimit(pid, resource.RLIMIT_CORE) == (0, 0)
        os.kill(pid, signal.SIGKILL)  # the idle child is killed (say, by the OOM killer)
        assert MARKER in " ".join(
            e.text for e in parser.submit(path, path.name).result(timeout=120).elements
        )
        assert parser.pids() != [pid]
    finally:
        parser.close()
    assert parser.pids() == []
