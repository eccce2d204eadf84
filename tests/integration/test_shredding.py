"""Crypto-shredding proof: a copy of the data dir taken before a deletion stays unreadable for
the deleted document (and only for it) with the live key file and key store.

The copy stands for any backup or stolen disk image of the data dir. DESIGN invariant 5.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.core.crypto import Crypto, open_crypto
from appliance.core.errors import KeyMissing
from appliance.core.runtime import Runtime, open_runtime
from appliance.documents import service as docs
from appliance.documents.tables import Document
from appliance.keys.check import check_keys
from tests.fixtures.app import inline_worker, make_settings, submit
from tests.fixtures.documents import make_docx, make_markdown, make_pdf

PHRASES = {
    "travel.pdf": "approved travel portal",
    "board.docx": "merger with Northwind",
    "canteen.md": "lunch is served from noon",
}


ChunkRow = tuple[str, int, bytes, bytes | None]


def _copy_rows(db: Path) -> tuple[dict[str, tuple[bytes, bytes | None]], list[ChunkRow]]:
    """Read the copied SQLite file directly, as someone holding the backup could."""
    con = sqlite3.connect(db)
    try:
        documents = {
            r[0]: (r[1], r[2])
            for r in con.execute("SELECT id, filename_ct, title_ct FROM documents")
        }
        chunks: list[ChunkRow] = con.execute(
            "SELECT doc_id, chunk_no, text_ct, heading_ct FROM chunks"
        ).fetchall()
    finally:
        con.close()
    return documents, chunks


def _read_copy(crypto: Crypto, copy: Path, doc_id: str) -> str:
    """Decrypt everything of one document found in the copy: filename, title, chunks, blob."""
    documents, chunks = _copy_rows(copy / "appliance.db")
    filename_ct, title_ct = documents[doc_id]
    parts = [crypto.decrypt_text("doc", doc_id, "filename", filename_ct)]
    if title_ct is not None:
        parts.append(crypto.decrypt_text("doc", doc_id, "title", title_ct))
    mine = [c for c in chunks if c[0] == doc_id]
    assert mine, "the copy must hold the document's chunks"
    for _, no, text_ct, heading_ct in mine:
        parts.append(crypto.decrypt_text("doc", doc_id, f"chunk:{no}:text", text_ct))
        if heading_ct is not None:
            parts.append(crypto.decrypt_text("doc", doc_id, f"chunk:{no}:heading", heading_ct))
    blob = (copy / "blobs" / doc_id[:2] / doc_id).read_bytes()
    assert crypto.decrypt("doc", doc_id, "blob", blob)
    return "\n".join(parts)


def test_a_copy_taken_before_deletion_cannot_open_the_deleted_document(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    src = tmp_path / "src"
    src.mkdir()
    files = [
        make_pdf(src / "travel.pdf", title="Travel Policy"),
        make_docx(
            src / "board.docx",
            [("Board Memo", ["The board discussed the merger with Northwind in private."])],
            title="Board Memo",
        ),
        make_markdown(
            src / "canteen.md",
            [("Canteen", ["The canteen opens at eight; lunch is served from noon."])],
        ),
    ]
    ids = {f.name: submit(rt, f, grants=("everyone",)) for f in files}
    assert inline_worker(rt).run_until_idle() == 3
    rt.index().flush()

    backup = tmp_path / "backup-of-data-dir"
    shutil.copytree(rt.settings.data_dir, backup)  # with the live -wal, as a file backup would

    gone = ids["board.docx"]
    with rt.sessions() as s:
        docs.begin_delete(session=s, index=rt.index(), doc=s.get_one(Document, gone), actor="t")
    with rt.sessions() as s:
        docs.finish_delete(
            session=s, index=rt.index(), crypto=rt.crypto, blobs=rt.blobs, doc_id=gone
        )

    # The live key file and key store, as a fresh process would open them (nothing cached).
    live = open_crypto(rt.settings.key_file, rt.settings.keystore_path)
    for name, doc_id in ids.items():
        if doc_id == gone:
            with pytest.raises(KeyMissing, match=f"doc {gone}"):
                _read_copy(live, backup, doc_id)
            # Piece by piece too: every ciphertext of it in the copy is closed for good.
            documents, chunks = _copy_rows(backup / "appliance.db")
            with pytest.raises(KeyMissing):
                live.decrypt_text("doc", gone, "filename", documents[gone][0])
            for _, no, text_ct, _ in (c for c in chunks if c[0] == gone):
                with pytest.raises(KeyMissing):
                    live.decrypt_text("doc", gone, f"chunk:{no}:text", text_ct)
            with pytest.raises(KeyMissing):
                live.decrypt("doc", gone, "blob", (backup / "blobs" / gone[:2] / gone).read_bytes())
        else:
            text = _read_copy(live, backup, doc_id)
            assert name in text
            assert PHRASES[name] in text.lower()

    # Restoring the copy as the data dir brings back what still exists, nothing erased.
    restored = make_settings(tmp_path / "restored", data_dir=backup)
    restored_rt = open_runtime(
        restored.model_copy(
            update={"key_file": rt.settings.key_file, "keystore_dir": rt.settings.keystore_path}
        )
    )
    try:
        with restored_rt.sessions() as s:
            readable: dict[str, str | None] = {}
            for doc in s.execute(select(Document)).scalars():
                try:
                    readable[doc.id] = docs.filename_of(restored_rt.crypto, doc)
                except KeyMissing:
                    readable[doc.id] = None
            report = check_keys(session=s, crypto=restored_rt.crypto)
    finally:
        restored_rt.close()
    assert readable == {
        ids["travel.pdf"]: "travel.pdf",
        ids["canteen.md"]: "canteen.md",
        gone: None,
    }
    assert [(p.what, p.key) for p in report.problems] == [("key_missing", f"doc/{gone}")]
