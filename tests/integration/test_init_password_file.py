"""`appliance init --admin-password-file`: the first admin's password comes from a file.

This is how Ansible hands over the password it keeps in Vault: the file's content is
never printed, is used only when the admin is created, and must still be changed at
first sign-in (everyone with vault access knows it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.audit.tables import AuditEvent
from appliance.auth.passwords import verify_password
from appliance.auth.tables import User
from appliance.core.db import make_engine
from tests.fixtures.app import instance_env

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple 7c1e"


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text("")
    return {**os.environ, **instance_env(tmp_path / "i"), "APPLIANCE_CONFIG": str(cfg)}


def _admin(env: dict[str, str]) -> User:
    engine = make_engine(f"sqlite:///{env['APPLIANCE_DATA_DIR']}/appliance.db")
    try:
        with Session(engine) as s:
            user = s.execute(select(User).where(User.username == "admin")).scalar_one()
            s.expunge(user)
            return user
    finally:
        engine.dispose()


def _audit_actions(env: dict[str, str]) -> list[str]:
    engine = make_engine(f"sqlite:///{env['APPLIANCE_DATA_DIR']}/appliance.db")
    try:
        with Session(engine) as s:
            return list(s.execute(select(AuditEvent.action).order_by(AuditEvent.id)).scalars())
    finally:
        engine.dispose()


def test_password_file_sets_first_admin_password_without_printing_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    pw_file = tmp_path / "admin-password"
    pw_file.write_text(PASSWORD + "\n")  # a trailing newline is not part of it
    pw_file.chmod(0o600)

    first = _run(env, "init", "--admin-password-file", str(pw_file))
    assert first.returncode == 0, first.stderr
    assert PASSWORD not in first.stdout + first.stderr
    assert "One-time password" not in first.stdout
    assert "First admin created" in first.stdout

    admin = _admin(env)
    assert verify_password(admin.password_hash, PASSWORD)
    assert not verify_password(admin.password_hash, PASSWORD + "\n")
    assert admin.must_change_password
    assert "user.initial_password" in _audit_actions(env)

    # Idempotent: a second run with another password leaves the account alone.
    pw_file.write_text("another password entirely 42")
    second = _run(env, "init", "--admin-password-file", str(pw_file))
    assert second.returncode == 0, second.stderr
    assert "First admin created" not in second.stdout
    assert verify_password(_admin(env).password_hash, PASSWORD)


def test_weak_password_is_refused_before_anything_is_created(
    env: dict[str, str], tmp_path: Path
) -> None:
    pw_file = tmp_path / "admin-password"
    pw_file.write_text("tiny-pw")
    result = _run(env, "init", "--admin-password-file", str(pw_file))
    assert result.returncode == 1
    assert "tiny-pw" not in result.stdout + result.stderr
    assert "too short" in result.stderr
    assert not Path(env["APPLIANCE_DATA_DIR"]).exists()
    assert not Path(env["APPLIANCE_KEY_FILE"]).exists()


def test_missing_file_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    result = _run(env, "init", "--admin-password-file", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "--admin-password-file" in result.stderr
    assert not Path(env["APPLIANCE_DATA_DIR"]).exists()


def test_without_the_option_a_one_time_password_is_printed(env: dict[str, str]) -> None:
    result = _run(env, "init")
    assert result.returncode == 0, result.stderr
    assert "One-time password" in result.stdout
