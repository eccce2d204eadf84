"""Restart safety with a real process: `appliance ingest` is killed (SIGKILL) mid-ingestion.

Afterwards no document is half-visible, and the cleanup job leaves no orphan point; a new
run finishes the interrupted documents. Real models, real index, real SQLite.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil
import pytest

from appliance.core.runtime import open_runtime
from tests.fixtures.app import instance_env, make_settings, run_cli
from tests.fixtures.documents import filler_pages, make_pdf

pytestmark = pytest.mark.slow


def _distinct(pages: list[tuple[str, Sequence[str]]], n: int) -> list[tuple[str, Sequence[str]]]:
    """The same prose with a per-file heading and sentence, so files are not duplicates."""
    return [(f"{h} (file {n})", [*paras, f"This is file number {n}."]) for h, paras in pages]


def _states(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, state FROM documents").fetchall())


def test_kill_during_ingestion_leaves_nothing_half_visible(tmp_path: Path) -> None:
    root = tmp_path / "instance"
    env = {**os.environ, **instance_env(root), "APPLIANCE_CONFIG": str(tmp_path / "c.toml")}
    env["APPLIANCE_MODELS__EMBED_BATCH_SIZE"] = "4"  # many small steps: a kill lands mid-doc
    (tmp_path / "c.toml").write_text("")
    assert run_cli(env, "init").returncode == 0

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        make_pdf(corpus / f"report-{i}.pdf", _distinct(filler_pages(4), i))
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "ingest", str(corpus), "--grant", "everyone"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = root / "lib" / "appliance" / "appliance.db"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            states = _states(db) if db.exists() else {}
            if "embedding" in states.values() and "indexed" in states.values():
                break
            assert proc.poll() is None, "ingest finished before it could be interrupted"
        else:
            pytest.fail("ingestion never reached the embedding state")
    finally:
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The parser child process dies with its parent instead of lingering.
    assert children, "the parser runs in a child process"
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []

    settings = make_settings(root)
    before = _states(db)
    assert "embedding" in before.values()
    rt = open_runtime(settings)
    try:
        index = rt.index()
        everyone = ["everyone"]
        probe = np.ones(384, dtype=np.float32) / np.sqrt(384)
        visible = {h.doc_id for h in index.search(probe, everyone, k=10_000)}
        indexed = {d for d, s in before.items() if s == "indexed"}
        # Only fully indexed documents are visible, each with all of its chunks.
        assert visible <= indexed
        for doc_id in indexed:
            hits = [h for h in index.search(probe, everyone, k=10_000) if h.doc_id == doc_id]
            assert len(hits) == index.count(doc_id)
    finally:
        rt.close()

    cleanup = run_cli(env, "jobs", "run", "cleanup")
    assert cleanup.returncode == 0, cleanup.stderr
    after = _states(db)
    assert "embedding" not in after.values()
    assert "parsing" not in after.values()
    rt = open_runtime(settings)
    try:
        assert rt.index().document_ids() <= {d for d, s in after.items() if s == "indexed"}
    finally:
        rt.close()

    again = run_cli(env, "ingest", str(corpus), "--grant", "everyone")
    assert again.returncode == 0, again.stdout + again.stderr
    final = _states(db)
    assert set(final.values()) == {"indexed"}
    assert len(final) == 6
