"""The `appliance` command: help everywhere, init, config show, errors that say what to do."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fixtures.app import instance_env, run_cli

COMMANDS = [
    [],
    ["init"],
    ["serve"],
    ["config"],
    ["config", "show"],
    ["models"],
    ["models", "list"],
    ["models", "add"],
    ["ingest"],
    ["docs"],
    ["docs", "list"],
    ["audit"],
    ["audit", "verify"],
    ["jobs"],
    ["jobs", "run"],
    ["search"],
    ["ask"],
    ["keys"],
    ["keys", "rotate"],
    ["keys", "retire"],
    ["keys", "check"],
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        '[index]\nbackend = "server"\nurl = "http://qdrant.internal:6333"\n'
        'api_key = "do-not-print-me"\n'
    )
    return {**os.environ, **instance_env(tmp_path / "i"), "APPLIANCE_CONFIG": str(cfg)}


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "root")
def test_every_command_has_help(env: dict[str, str], args: list[str]) -> None:
    from typer.testing import CliRunner

    from appliance.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], env=env)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert len(result.output) > 80


def test_init_is_idempotent_and_prints_the_password_once(env: dict[str, str]) -> None:
    first = run_cli(env, "init")
    assert first.returncode == 0, first.stderr
    assert "One-time password" in first.stdout
    second = run_cli(env, "init")
    assert second.returncode == 0, second.stderr
    assert "One-time password" not in second.stdout


def test_config_show_masks_secrets_and_honours_locations(env: dict[str, str]) -> None:
    result = run_cli(env, "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    assert "do-not-print-me" not in result.stdout
    assert env["APPLIANCE_DATA_DIR"] in result.stdout
    assert env["APPLIANCE_KEY_FILE"] in result.stdout
    assert "qdrant.internal" in result.stdout


def test_commands_before_init_say_what_to_do(env: dict[str, str]) -> None:
    result = run_cli(env, "docs", "list")
    assert result.returncode == 1
    assert "appliance init" in result.stderr


def test_world_readable_key_file_stops_the_cli(env: dict[str, str]) -> None:
    assert run_cli(env, "init").returncode == 0
    os.chmod(env["APPLIANCE_KEY_FILE"], 0o644)
    result = run_cli(env, "docs", "list")
    assert result.returncode == 1
    assert "chmod 600" in result.stderr


@pytest.mark.slow
def test_models_list_verifies_bundled_models_and_add_refuses_a_wrong_hash(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run_cli(env, "init").returncode == 0
    listed = run_cli(env, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["smollm2-135m-instruct-q4_1"]["verified"] is True
    assert rows["all-minilm-l6-v2"]["verified"] is True
    assert rows["smollm2-135m-instruct-q4_1"]["active"] is True
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF" + bytes(64))
    added = run_cli(env, "models", "add", "mine", str(fake), "--sha256", "0" * 64)
    assert added.returncode == 1
    assert "sha256" in added.stderr.lower()
    assert "mine" not in run_cli(env, "models", "list", "--no-verify", "--json").stdout
