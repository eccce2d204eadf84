"""The command line's tables: whole values into a pipe or file, and `--json` on every table.

Rich cuts a table to 80 columns with an ellipsis when stdout is not a terminal; here every
table command runs with stdout captured (not a terminal) against one real instance, and a
long username, group name, filename, reason and model path must come out whole, one row
per line. Each `--json` must be one JSON document with stable keys and ISO 8601 times.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from appliance.approvals import service as approvals
from appliance.auth import service as users
from appliance.auth.bootstrap import init
from appliance.cli import app
from appliance.core.db import utcnow
from appliance.core.runtime import open_runtime
from models.manifest import MINILM_NAME, bundled_models
from tests.fixtures.app import add_user, inline_worker, instance_env, make_settings, run_cli, submit

LONG_USER = "magdalena.konstantinopoulou-vanderberg.finance-controlling-emea"  # 63 of 64
LONG_GROUP = "regional-finance-controlling-and-treasury-operations-europe-middle-east-africa"
LONG_FILE = "quarterly-travel-and-expenses-policy-for-the-regional-sales-offices-2026-[final].md"
LONG_REASON = "replacing the chat model with the larger one the works council approved in November"
ELLIPSIS = "\u2026"

pytestmark = pytest.mark.slow  # the real embedder, and two commands in a child process


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory, real_embedder: object) -> dict[str, str]:
    """One instance for the module: long names, a document, a pending approval, a switch.

    The document is embedded by the real bundled model, as `appliance search` embeds the
    question with it.
    """
    root = tmp_path_factory.mktemp("tables")
    settings = make_settings(root / "instance")
    init(settings)
    rt = open_runtime(settings, embedder=real_embedder)  # type: ignore[arg-type]
    try:
        add_user(rt, LONG_USER, group=LONG_GROUP)
        add_user(rt, "ada")
        doc = root / LONG_FILE
        doc.write_text("# Travel\n\nTrain tickets are booked in the travel portal.\n")
        submit(rt, doc, grants=(f"group:{LONG_GROUP}",))
        assert inline_worker(rt).run_until_idle() == 1
        with rt.sessions() as s:
            ada = users.get_user_by_name(s, "ada")
            ada.role = "admin"
            target = users.get_user_by_name(s, LONG_USER)
            approvals.request(
                session=s,
                kind=approvals.MAKE_ADMIN,
                target=f"user:{target.id}",
                params={"user_id": target.id},
                requester=ada,
                now=utcnow(),
                expiry_hours=1,
            )
            s.commit()
    finally:
        rt.close()
    config = root / "empty.toml"
    config.write_text("")
    env = {**instance_env(root / "instance"), "APPLIANCE_CONFIG": str(config)}
    paused = CliRunner().invoke(
        app, ["system", "pause-ingestion", "--reason", LONG_REASON], env=env
    )
    assert paused.exit_code == 0, paused.output
    return env


def _cli(env: dict[str, str], *args: str) -> str:
    """Run a command in-process with stdout captured (not a terminal); its stdout."""
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def _table(env: dict[str, str], *args: str) -> list[str]:
    """A table command's lines, checked for cut values: no ellipsis, no line wrapped at 80."""
    text = _cli(env, *args)
    assert ELLIPSIS not in text
    assert "..." not in text
    lines = text.splitlines()
    assert any(len(line) > 80 for line in lines), "a long value was wrapped or cut"
    return lines


def _row(lines: list[str], value: str) -> str:
    """The one line holding `value` whole."""
    found = [line for line in lines if value in line]
    assert len(found) == 1, lines
    return found[0]


def _json(env: dict[str, str], *args: str) -> Any:
    """A `--json` command's stdout, which must be one JSON document and nothing else."""
    return json.loads(_cli(env, *args, "--json"))


def _iso(value: str) -> dt.datetime:
    """An ISO 8601 time with a zone."""
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def test_users_and_groups(instance: dict[str, str]) -> None:
    row = _row(_table(instance, "users", "list"), LONG_USER)
    assert row.split()[1:3] == ["user", "yes"]
    assert "not yet" in row
    listed = {u["username"]: u for u in _json(instance, "users", "list")}
    assert set(listed[LONG_USER]) == {
        "id",
        "username",
        "role",
        "active",
        "totp_enrolled",
        "must_change_password",
        "locked_until",
    }
    assert listed[LONG_USER]["active"] is True
    assert listed[LONG_USER]["locked_until"] is None
    assert listed["admin"]["role"] == "admin"

    assert _row(_table(instance, "groups", "list"), LONG_GROUP).split() == [LONG_GROUP, LONG_USER]
    groups = _json(instance, "groups", "list")
    assert [(g["name"], g["members"]) for g in groups] == [(LONG_GROUP, [LONG_USER])]
    assert groups[0]["id"]


def test_documents_search_and_audit(instance: dict[str, str]) -> None:
    row = _row(_table(instance, "docs", "list"), LONG_FILE)
    assert row.split()[2] == "indexed"
    assert row.endswith("internal")
    (doc,) = _json(instance, "docs", "list")
    assert doc["filename"] == LONG_FILE
    assert doc["state"] == "indexed"
    assert doc["classification"] == "internal"
    _iso(doc["created_at"])

    found = _row(_table(instance, "search", "train tickets", "--as", LONG_USER), LONG_FILE)
    assert "Train tickets are booked in the travel portal." in found
    (hit,) = _json(instance, "search", "train tickets", "--as", LONG_USER)
    assert hit["filename"] == LONG_FILE
    assert hit["rank"] == 1

    lines = _table(instance, "audit", "search", "--action", "user.create")
    assert LONG_USER in _row(lines, LONG_USER)
    entries = _json(instance, "audit", "search", "--action", "user.create")
    assert {e["target_name"] for e in entries} >= {LONG_USER, "ada"}
    assert {"id", "ts", "actor", "action", "target", "outcome", "details"} <= set(entries[0])
    assert all(_iso(e["ts"]) for e in entries)
    switch = _table(instance, "audit", "search", "--action", "system.switch")
    assert LONG_REASON in _row(switch, LONG_REASON)  # details in full, not cut to 80


def test_system_approvals_jobs_keys_retention(instance: dict[str, str]) -> None:
    row = _row(_table(instance, "system", "status"), LONG_REASON)
    assert row.startswith("ingestion_paused  ON")
    switches = {s["name"]: s for s in _json(instance, "system", "status")}
    assert set(switches) == {"answering_paused", "ingestion_paused", "read_only"}
    assert switches["ingestion_paused"]["on"] is True
    assert switches["ingestion_paused"]["reason"] == LONG_REASON
    assert switches["ingestion_paused"]["changed_by"].startswith("operator:")
    _iso(switches["ingestion_paused"]["changed_at"])
    never = {"name": "read_only", "on": False, "changed_by": None, "changed_at": None}
    assert never.items() <= switches["read_only"].items()

    (pending,) = _json(instance, "approvals", "list")
    assert pending["kind"] == "make_admin"
    assert pending["requester"] == "ada"
    assert pending["status"] == "pending"
    assert _iso(pending["expires_at"]) > _iso(pending["created_at"])
    row = _row(_cli(instance, "approvals", "list").splitlines(), pending["id"])
    assert row.split()[:2] == ["make_admin", pending["target"]]
    assert ELLIPSIS not in row

    jobs = {j["name"]: j for j in _json(instance, "jobs", "list")}
    assert {"cleanup", "retention"} <= set(jobs)
    assert jobs["cleanup"]["last_run_at"] is None
    assert isinstance(jobs["cleanup"]["interval_seconds"], int)
    assert _row(_cli(instance, "jobs", "list").splitlines(), "cleanup").split()[3] == "never"

    keys = _json(instance, "keys", "check")
    assert keys["ok"] is True
    assert keys["keks"] == {keys["primary"]: keys["data_keys"]}
    kek_row = _row(_cli(instance, "keys", "check").splitlines(), keys["primary"])
    assert kek_row.split() == [keys["primary"], "yes", str(keys["data_keys"])]

    shown = _json(instance, "retention", "show")
    assert {p["policy"] for p in shown["policies"]} >= {"internal_days", "chat_history_days"}
    assert shown["documents_on_hold"] == 0
    assert "forever" in _row(_cli(instance, "retention", "show").splitlines(), "public_days")


def test_models_list_into_a_pipe_keeps_names_and_paths(instance: dict[str, str]) -> None:
    env = {**os.environ, **instance}
    result = run_cli(env, "models", "list", "--no-verify")  # stdout is a pipe
    assert result.returncode == 0, result.stderr
    assert ELLIPSIS not in result.stdout
    minilm = next(e for e in bundled_models() if e.name == MINILM_NAME)
    row = _row([line for line in result.stdout.splitlines() if "minilm" in line], MINILM_NAME)
    assert row.startswith(f"{MINILM_NAME}  ")
    assert row.endswith(str(minilm.path))  # the whole path, on the row of its name
    assert "not checked" in row
    listed = {m["name"]: m for m in _json(instance, "models", "list", "--no-verify")}
    assert listed[MINILM_NAME]["path"] == str(minilm.path)
    assert listed[MINILM_NAME]["kind"] == "embedder"
    assert listed[MINILM_NAME]["verified"] is None


def test_a_terminal_gets_a_folded_table_without_ellipsis(instance: dict[str, str]) -> None:
    """On an 80-column terminal the Rich table stays, long cells fold instead of being cut."""
    controller, terminal = pty.openpty()
    env = {**os.environ, **instance, "COLUMNS": "80", "TERM": "xterm"}
    with subprocess.Popen(  # noqa: S603 - our own CLI, fixed interpreter
        [sys.executable, "-m", "appliance", "groups", "list"],
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=env,
    ) as child:
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed with the child
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert child.wait(timeout=120) == 0, child.stderr.read() if child.stderr else ""
    os.close(controller)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())  # colours off
    assert ELLIPSIS not in shown
    assert "\u2502" in shown  # a Rich table's box, not the plain lines of a pipe
    assert max(len(line) for line in shown.splitlines()) <= 80
    assert LONG_GROUP[:20] in shown
