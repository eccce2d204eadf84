"""The operator's governance commands: audit verify/checkpoint/search/export, system, approvals.

In-process (typer's CliRunner) against a real instance; the database is tampered with directly.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from appliance.approvals import service as approvals
from appliance.audit import query as audit_query
from appliance.audit import service as audit
from appliance.auth.tables import User
from appliance.cli import app
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput, Maintenance, PermissionDenied
from appliance.core.runtime import Runtime
from appliance.documents.tables import Document
from tests.fixtures.app import instance_env


@pytest.fixture
def cli(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name, value in instance_env(tmp_path / "instance").items():
        monkeypatch.setenv(name, value)
    return CliRunner()


def _db(runtime: Runtime) -> sqlite3.Connection:
    return sqlite3.connect(runtime.settings.data_dir / "appliance.db")


def test_checkpoint_then_verify_detects_a_cut_tail(
    cli: CliRunner, runtime: Runtime, tmp_path: Path
) -> None:
    with runtime.sessions() as s:
        for i in range(4):
            audit.record(s, actor="operator:t", action="thing.do", target=f"t:{i}")
        s.commit()
    cp = tmp_path / "cp.json"
    made = cli.invoke(app, ["audit", "checkpoint", "--output", str(cp)])
    assert made.exit_code == 0, made.output
    ok = cli.invoke(app, ["audit", "verify", "--checkpoint", str(cp)])
    assert ok.exit_code == 0, ok.output
    assert "checkpoint" in ok.output

    with _db(runtime) as db:
        db.execute("DELETE FROM audit_events WHERE id >= (SELECT max(id) - 1 FROM audit_events)")
    plain = cli.invoke(app, ["audit", "verify"])
    assert plain.exit_code == 0  # a shorter chain is still a chain
    cut = cli.invoke(app, ["audit", "verify", "--checkpoint", str(cp)])
    assert cut.exit_code == 1
    assert "truncated" in cut.output

    forged = json.loads(cp.read_text())
    forged["entries"] -= 2
    forged_file = tmp_path / "forged.json"
    forged_file.write_text(json.dumps(forged))
    refused = cli.invoke(app, ["audit", "verify", "--checkpoint", str(forged_file)])
    assert isinstance(refused.exception, InvalidInput)
    assert "signature" in refused.exception.message


def test_verify_detects_an_edit(cli: CliRunner, runtime: Runtime) -> None:
    with _db(runtime) as db:
        db.execute("UPDATE audit_events SET outcome = 'ok2' WHERE id = 1")
    broken = cli.invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "entry edited" in broken.output


def test_operator_exports_directly_and_is_audited(
    cli: CliRunner, runtime: Runtime, tmp_path: Path
) -> None:
    with runtime.sessions() as s:
        audit.record(s, actor="operator:t", action="thing.do", target="=1+1")
        s.commit()
    out = tmp_path / "audit.csv"
    r = cli.invoke(app, ["audit", "export", "--format", "csv", "--output", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert "'=1+1" in [row["target"] for row in rows]
    sidecar = out.with_name("audit.csv.checkpoint.json")
    checkpoint = audit.Checkpoint.from_json(sidecar.read_text())
    audit.check_checkpoint(checkpoint, crypto=runtime.crypto)
    assert rows[-1]["action"] == "audit.export"  # the export covers its own entry
    assert rows[-1]["actor"].startswith("operator:")

    jsonl = tmp_path / "audit.jsonl"
    r = cli.invoke(
        app,
        ["audit", "export", "--output", str(jsonl), "--action", "thing", "--from", "2000-01-01"],
    )
    assert r.exit_code == 0, r.output
    lines = jsonl.read_text().splitlines()
    assert "checkpoint" in json.loads(lines[0])
    assert [json.loads(x)["action"] for x in lines[1:]] == ["thing.do"]
    verify = cli.invoke(app, ["audit", "verify", "--checkpoint", str(jsonl)])
    assert verify.exit_code == 0, verify.output

    found = cli.invoke(app, ["audit", "search", "--action", "audit.export", "--json"])
    assert found.exit_code == 0
    assert len(json.loads(found.stdout)) == 2


def test_system_switches_from_the_shell(cli: CliRunner, runtime: Runtime) -> None:
    r = cli.invoke(app, ["system", "pause-answering", "--reason", "model swap"])
    assert r.exit_code == 0, r.output
    status = cli.invoke(app, ["system", "status"])
    assert "answering_paused" in status.output
    assert "ON" in status.output
    assert "model swap" in status.output
    asked = cli.invoke(app, ["ask", "Anything?", "--as", "admin"])
    assert isinstance(asked.exception, Maintenance)
    assert "admin paused answering" in asked.exception.message
    assert cli.invoke(app, ["system", "resume-answering"]).exit_code == 0
    for command in ("pause-ingestion", "resume-ingestion", "read-only", "read-write"):
        assert cli.invoke(app, ["system", command]).exit_code == 0
    with runtime.sessions() as s:
        page = audit_query.search(s, filters=audit_query.Filters(action="system.switch"), limit=100)
    assert len(page.entries) == 6
    assert all(e.actor.startswith("operator:") for e in page.entries)


def test_approve_from_the_shell_needs_another_admin(cli: CliRunner, runtime: Runtime) -> None:
    with runtime.sessions() as s:
        ada = User(username="ada", role="admin", password_hash="-")
        pat = User(username="pat", password_hash="-")
        s.add_all([ada, pat])
        s.flush()
        req = approvals.request(
            session=s,
            kind=approvals.MAKE_ADMIN,
            target=f"user:{pat.id}",
            params={"user_id": pat.id},
            requester=ada,
            now=utcnow(),
            expiry_hours=1,
        )
        s.commit()
        req_id, pat_id = req.id, pat.id
    listed = cli.invoke(app, ["approvals", "list", "--json"])
    assert [row["id"] for row in json.loads(listed.stdout)] == [req_id]
    own = cli.invoke(app, ["approvals", "approve", req_id, "--as", "ada"])
    assert isinstance(own.exception, PermissionDenied)
    ok = cli.invoke(app, ["approvals", "approve", req_id, "--as", "admin"])
    assert ok.exit_code == 0, ok.output
    assert "approved" in ok.output
    with runtime.sessions() as s:
        assert s.get_one(User, pat_id).role == "admin"
        page = audit_query.search(s, filters=audit_query.Filters(action="approval"), limit=100)
    assert {e.action for e in page.entries} >= {"approval.approve", "approval.cli"}


def test_ingest_while_paused_queues_and_says_so(
    cli: CliRunner, runtime: Runtime, tmp_path: Path
) -> None:
    assert cli.invoke(app, ["system", "pause-ingestion"]).exit_code == 0
    note = tmp_path / "note.md"
    note.write_text("# Note\n\nHello.\n")
    r = cli.invoke(app, ["ingest", str(note), "--inline-parser"])
    assert "Ingestion is paused" in r.output
    with runtime.sessions() as s:
        states = s.execute(select(Document.state)).scalars().all()
    assert states == ["queued"]
