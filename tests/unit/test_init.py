"""`appliance init`: creates what is missing, is idempotent, lays keys out safely."""

from __future__ import annotations

import stat
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from appliance.auth.bootstrap import init
from appliance.auth.passwords import verify_password
from appliance.auth.tables import User
from appliance.core.config import Settings
from appliance.core.db import make_engine


def test_init_creates_everything_once(settings: Settings) -> None:
    first = init(settings)
    assert first.created_data_dir
    assert first.created_key_file
    assert first.admin_username == "admin"
    assert first.admin_password
    assert stat.S_IMODE(settings.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    assert not settings.key_file.resolve().is_relative_to(settings.data_dir.resolve())
    assert not settings.keystore_path.resolve().is_relative_to(settings.data_dir.resolve())
    key_before = settings.key_file.read_bytes()

    second = init(settings)
    assert not second.created_data_dir
    assert not second.created_key_file
    assert second.admin_password is None
    assert settings.key_file.read_bytes() == key_before

    engine = make_engine(settings.database_url)
    try:
        assert {"users", "documents", "chunks", "document_grants", "audit_events"} <= set(
            inspect(engine).get_table_names()
        )
        with Session(engine) as s:
            admins = s.execute(select(User)).scalars().all()
            assert [(u.username, u.role, u.must_change_password) for u in admins] == [
                ("admin", "admin", True)
            ]
            assert admins[0].password_hash.startswith("$argon2id$")
            assert verify_password(admins[0].password_hash, first.admin_password)
            assert first.admin_password not in admins[0].password_hash
    finally:
        engine.dispose()


def test_database_uses_wal(settings: Settings, initialized: object) -> None:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_one_time_password_is_not_stored_anywhere(settings: Settings) -> None:
    report = init(settings)
    assert report.admin_password
    needle = report.admin_password.encode()
    for root in (settings.data_dir, settings.keystore_path, settings.key_file.parent):
        for f in Path(root).rglob("*"):
            if f.is_file():
                assert needle not in f.read_bytes(), f
