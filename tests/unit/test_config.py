"""Settings: sources and precedence, safety checks, masked display."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.core.config import check_safety, get_settings, masked_dump
from appliance.core.errors import UnsafeConfiguration
from tests.fixtures.app import make_settings


def test_toml_file_then_environment_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[server]\nport = 9001\n[ingest]\nmax_upload_mb = 5\n'
    )
    monkeypatch.setenv("APPLIANCE_CONFIG", str(cfg))
    s = get_settings()
    assert s.server.port == 9001
    assert s.ingest.max_upload_mb == 5
    assert s.data_dir == tmp_path / "data"
    monkeypatch.setenv("APPLIANCE_SERVER__PORT", "9002")
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "other"))
    s = get_settings()
    assert s.server.port == 9002
    assert s.data_dir == tmp_path / "other"
    assert s.database_url == f"sqlite:///{tmp_path / 'other' / 'appliance.db'}"
    assert s.keystore_path == tmp_path / "other-keys"


def test_missing_config_file_named_in_env_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIANCE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(UnsafeConfiguration, match="does not name a readable file"):
        get_settings()


def test_unknown_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text("[server]\nprot = 1\n")
    monkeypatch.setenv("APPLIANCE_CONFIG", str(cfg))
    with pytest.raises(ValueError, match="prot"):
        get_settings()


def test_every_setting_is_described() -> None:
    from pydantic import BaseModel

    from appliance.core.config import Settings

    def walk(model: type[BaseModel], prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                missing += walk(ann, f"{prefix}{name}.")
            elif not field.description:
                missing.append(prefix + name)
        return missing

    assert walk(Settings, "") == []


def test_key_file_inside_data_dir_is_refused(tmp_path: Path) -> None:
    s = make_settings(tmp_path, key_file=tmp_path / "lib" / "appliance" / "kek")
    with pytest.raises(UnsafeConfiguration, match="inside the data directory"):
        check_safety(s, require_key=False)


def test_keystore_inside_data_dir_is_refused(tmp_path: Path) -> None:
    s = make_settings(tmp_path, keystore_dir=tmp_path / "lib" / "appliance" / "keys")
    with pytest.raises(UnsafeConfiguration, match="key store"):
        check_safety(s, require_key=False)


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    s.key_file.parent.mkdir(parents=True)
    s.key_file.write_text("{}")
    os.chmod(s.key_file, 0o644)
    with pytest.raises(UnsafeConfiguration, match="chmod 600"):
        check_safety(s)


def test_missing_key_file_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(UnsafeConfiguration, match="appliance init"):
        check_safety(make_settings(tmp_path))


def test_masked_dump_hides_secrets(tmp_path: Path) -> None:
    s = make_settings(
        tmp_path,
        index={"backend": "server", "url": "http://q:6333", "api_key": "sekret-key"},
        database={"url": "postgresql+psycopg://app:pw-secret@db/app"},
    )
    text = repr(masked_dump(s))
    assert "sekret-key" not in text
    assert "pw-secret" not in text
    assert "http://q:6333" in text


def test_resetting_an_unknown_retention_policy_is_a_clear_error(tmp_path: Path) -> None:
    """Found by schemathesis: an empty policy name reached getattr and was a bare 500."""

    from appliance.core.config import Settings
    from appliance.core.errors import InvalidInput
    from appliance.retention.service import shortened

    settings = Settings(data_dir=tmp_path / "d", key_file=tmp_path / "k")  # type: ignore[call-arg]
    with pytest.raises(InvalidInput, match="Unknown retention policy"):
        shortened(session=None, settings=settings, changes={}, reset=[""])  # type: ignore[arg-type]
