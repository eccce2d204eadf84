"""`appliance init`: data dir, key file, key store, database schema, first admin. Idempotent."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from appliance.auth import service as users
from appliance.auth.tables import User
from appliance.core import migrate
from appliance.core.config import Settings, check_safety
from appliance.core.crypto import Keyring, open_crypto
from appliance.core.db import make_engine
from appliance.core.errors import UnsafeConfiguration
from appliance.core.places import MAC_OWNER, SYSTEM_KIND

FIRST_ADMIN = "admin"


@dataclass(frozen=True)
class InitReport:
    """What `init` created this time (empty fields: it existed already)."""

    created_data_dir: bool
    created_key_file: bool
    admin_username: str | None
    admin_password: str | None


def _make_private_dir(path: Path) -> bool:
    if path.exists():
        if not path.is_dir():
            raise UnsafeConfiguration(f"{path} exists and is not a directory. Move it away.")
        return False
    path.mkdir(parents=True, mode=0o700)
    return True


def init(settings: Settings, *, admin_username: str = FIRST_ADMIN) -> InitReport:
    """Create whatever is missing; never overwrite a key file or an account."""
    check_safety(settings, require_key=False)
    created_data = _make_private_dir(settings.data_dir)
    for sub in (settings.blob_dir, settings.index_dir, settings.models_dir):
        _make_private_dir(sub)
    check_safety(settings, require_key=False)  # again: now the data dir exists
    created_key = False
    if not settings.key_file.exists():
        settings.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        Keyring.generate().save(settings.key_file)
        created_key = True
    check_safety(settings)
    _make_private_dir(settings.keystore_path)
    crypto = open_crypto(settings.key_file, settings.keystore_path)
    crypto.create_data_key(SYSTEM_KIND, MAC_OWNER)

    engine = make_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
        with Session(engine) as session:
            password = None
            username = None
            if session.execute(select(User.id).limit(1)).first() is None:
                user, password = users.create_user(
                    session, username=admin_username, role="admin", actor="operator:init"
                )
                username = user.username
            session.commit()
    finally:
        engine.dispose()
    return InitReport(created_data, created_key, username, password)


def schema_is_current(settings: Settings) -> bool:
    """Whether `init` has run (the tables exist)."""
    if settings.database_url.startswith("sqlite") and not settings.data_dir.is_dir():
        return False
    engine = make_engine(settings.database_url)
    try:
        return inspect(engine).has_table("documents")
    except OperationalError as exc:
        raise UnsafeConfiguration(
            f"Cannot open the database {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}. Check database.url and that the server is reachable."
        ) from exc
    finally:
        engine.dispose()


def current_user_name() -> str:
    """The OS user running this (for audit 'operator:<name>')."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())
