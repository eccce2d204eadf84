"""`appliance docs grant|revoke|classify|delete|list --as`: the operator's access commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from appliance.audit.tables import AuditEvent
from appliance.auth.bootstrap import InitReport
from appliance.cli import app
from appliance.core.config import Settings
from appliance.core.runtime import open_runtime
from models.fakes import FakeEmbedder
from tests.fixtures.app import add_user, inline_worker, instance_env, submit


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _listed(user: str) -> list[str]:
    result = _cli("docs", "list", "--as", user, "--json")
    assert result.exit_code == 0, result.output
    return [row["filename"] for row in json.loads(result.stdout)]


@pytest.fixture
def instance(
    settings: Settings, initialized: InitReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """An instance with users, a group, one indexed document and one still queued."""
    for name, value in instance_env(tmp_path / "instance").items():
        monkeypatch.setenv(name, value)
    rt = open_runtime(settings, embedder=FakeEmbedder())  # type: ignore[arg-type]
    try:
        add_user(rt, "alice")
        add_user(rt, "bob", group="ops")
        live = tmp_path / "handbook.md"
        live.write_text("# Handbook\n\nHolidays are booked in the portal.\n")
        submit(rt, live)
        assert inline_worker(rt).run_until_idle() == 1
        queued = tmp_path / "draft.md"
        queued.write_text("# Draft\n\nNot ingested yet.\n")
        submit(rt, queued, grants=("user:alice",))
    finally:
        rt.close()
    return tmp_path


def test_operator_grants_revokes_classifies_and_deletes(instance: Path, settings: Settings) -> None:
    assert _listed("alice") == []  # the queued draft is granted but not readable yet
    assert _cli("docs", "grant", "handbook.md", "user:alice").exit_code == 0
    assert _listed("alice") == ["handbook.md"]
    result = _cli("docs", "grant", "handbook.md", "group:ops", "--level", "manage")
    assert result.exit_code == 0, result.output
    assert _listed("bob") == ["handbook.md"]
    assert _cli("docs", "revoke", "handbook.md", "user:alice").exit_code == 0
    assert _listed("alice") == []
    assert _cli("docs", "revoke", "handbook.md", "user:alice").exit_code != 0  # no such grant
    assert _cli("docs", "classify", "handbook.md", "confidential").exit_code == 0
    assert _cli("docs", "classify", "handbook.md", "secret").exit_code != 0
    assert _cli("docs", "grant", "handbook.md", "user:alice", "--level", "owner").exit_code != 0
    # The owner's manage grant may go while the group still manages; the group's may not.
    assert _cli("docs", "revoke", "handbook.md", "user:admin").exit_code == 0
    assert _cli("docs", "revoke", "handbook.md", "group:ops").exit_code != 0
    assert _listed("bob") == ["handbook.md"]
    assert _cli("docs", "delete", "handbook.md", "--yes").exit_code == 0
    assert _listed("bob") == []
    assert _cli("docs", "grant", "handbook.md", "user:alice").exit_code != 0  # gone

    rt = open_runtime(settings, embedder=FakeEmbedder())  # type: ignore[arg-type]
    try:
        with rt.sessions() as s:
            events = s.execute(
                select(AuditEvent)
                .where(
                    AuditEvent.action.in_(
                        ("acl.grant", "acl.revoke", "acl.classify", "document.delete")
                    )
                )
                .order_by(AuditEvent.id)
            ).scalars()
            actions = [(e.action, e.actor.startswith("operator:")) for e in events]
        assert actions == [
            ("acl.grant", True),
            ("acl.grant", True),
            ("acl.revoke", True),
            ("acl.classify", True),
            ("acl.revoke", True),
            ("document.delete", True),
        ]
        assert rt.index().document_ids() == set()
    finally:
        rt.close()
