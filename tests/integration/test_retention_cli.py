"""`appliance retention`, `jobs run|list`, `docs hold|release|retain`, `users erase|export`."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from appliance.audit.tables import AuditEvent
from appliance.auth.bootstrap import InitReport
from appliance.auth.tables import User
from appliance.cli import app
from appliance.core.config import Settings
from appliance.core.runtime import Runtime, open_runtime
from appliance.documents.tables import Document, LegalHold
from models.fakes import FakeEmbedder
from tests.fixtures.app import add_user, inline_worker, instance_env, submit


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def rt(
    settings: Settings, initialized: InitReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Runtime:
    """An instance with alice owning one indexed document, the CLI pointed at it."""
    for name, value in instance_env(tmp_path / "instance").items():
        monkeypatch.setenv(name, value)
    runtime = open_runtime(settings, embedder=FakeEmbedder())  # type: ignore[arg-type]
    add_user(runtime, "alice")
    add_user(runtime, "bob")
    path = tmp_path / "memo.md"
    path.write_text("# Memo\n\nThe travel portal books flights.\n")
    submit(runtime, path, owner="alice")
    assert inline_worker(runtime).run_until_idle() == 1
    runtime.close()  # the CLI opens the index itself
    return runtime


def _doc(rt: Runtime) -> Document:
    with rt.sessions() as s:
        return s.execute(select(Document)).scalar_one()


def test_retention_show_and_set(rt: Runtime) -> None:
    result = _cli("retention", "set", "internal_days=30", "chat_history_days=forever")
    assert result.exit_code == 0, result.output
    result = _cli("retention", "show", "--json")
    assert result.exit_code == 0, result.output
    shown = {p["policy"]: p for p in json.loads(result.stdout)["policies"]}
    assert shown["internal_days"]["effective"] == 30
    assert shown["internal_days"]["by"].startswith("operator:")
    assert shown["audit_log_days"]["effective"] == 2555
    assert _cli("retention", "set", "--reset", "internal_days").exit_code == 0
    shown = {
        p["policy"]: p for p in json.loads(_cli("retention", "show", "--json").stdout)["policies"]
    }
    assert shown["internal_days"]["effective"] is None
    assert _cli("retention", "set", "bogus=1").exit_code == 1


def test_hold_release_retain_and_jobs(rt: Runtime) -> None:
    doc = _doc(rt)
    assert _cli("docs", "retain", "memo.md", "2001-01-01").exit_code == 0
    assert _cli("docs", "hold", "memo.md", "--reason", "audit").exit_code == 0
    with rt.sessions() as s:
        assert s.get(LegalHold, doc.id) is not None
    result = _cli("docs", "delete", doc.id, "--yes")
    assert result.exit_code == 1
    assert "legal hold" in str(result.exception)
    result = _cli("jobs", "run", "retention")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["documents_held"] == 1
    result = _cli("jobs", "list", "--json")
    jobs = {j["name"]: j for j in json.loads(result.stdout)}
    assert jobs["retention"]["last_outcome"] == "ok"
    assert jobs["retention"]["next_due"] is not None
    assert jobs["cleanup"]["last_run_at"] is None
    assert _cli("docs", "release", doc.id).exit_code == 0
    result = _cli("jobs", "run", "retention")
    assert json.loads(result.stdout)["documents_deleted"] == 1
    with rt.sessions() as s:
        assert s.get(Document, doc.id) is None
    assert _cli("jobs", "run", "nope").exit_code == 1
    result = _cli("jobs", "run", "cleanup")
    assert result.exit_code == 0, result.output
    assert "expired_sessions_removed" in json.loads(result.stdout)


def test_users_export_and_erase(rt: Runtime, tmp_path: Path) -> None:
    doc = _doc(rt)
    out = tmp_path / "alice.zip"
    assert _cli("users", "export", "alice", "--output", str(out)).exit_code == 0
    assert out.stat().st_mode & 0o077 == 0
    with zipfile.ZipFile(out) as archive:
        assert json.loads(archive.read("documents.json"))[0]["filename"] == "memo.md"
    assert _cli("users", "export", "alice", "--output", str(out)).exit_code == 1  # exists
    result = _cli("users", "erase", "alice", "--documents", "transfer", "--yes")
    assert result.exit_code == 1  # --to missing
    result = _cli("users", "erase", "alice", "--documents", "transfer", "--to", "bob", "--yes")
    assert result.exit_code == 0, result.output
    with rt.sessions() as s:
        assert s.execute(select(User).where(User.username == "alice")).first() is None
        bob = s.execute(select(User).where(User.username == "bob")).scalar_one()
        assert s.get_one(Document, doc.id).owner_id == bob.id
        erase = s.execute(select(AuditEvent).where(AuditEvent.action == "user.erase")).scalar_one()
        assert erase.actor.startswith("operator:")
