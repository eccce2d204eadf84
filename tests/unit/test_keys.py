"""Keys over time: rotation (also interrupted), retirement, `keys check`, a shared key file."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.chat.tables import Conversation
from appliance.core.config import Settings
from appliance.core.crypto import Crypto, Keyring, open_crypto
from appliance.core.errors import InvalidInput, KeyMissing, NotFound, UnsafeConfiguration
from appliance.core.runtime import Runtime, open_runtime
from appliance.documents.tables import Document
from appliance.keys import rotation
from appliance.keys.check import check_keys
from tests.fixtures.app import add_user, instance_env, submit


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "kek"
    Keyring.generate().save(path)
    return path


@pytest.fixture
def crypto(tmp_path: Path, key_file: Path) -> Crypto:
    return open_crypto(key_file, tmp_path / "keys")


def _fill(crypto: Crypto, n: int) -> dict[tuple[str, str], bytes]:
    """n document keys and one chat key, each with a ciphertext to read back later."""
    out = {}
    for i in range(n):
        crypto.create_data_key("doc", f"d{i}")
        out[("doc", f"d{i}")] = crypto.encrypt_text("doc", f"d{i}", "blob", f"content {i}")
    crypto.create_data_key("chat", "u1")
    out[("chat", "u1")] = crypto.encrypt_text("chat", "u1", "message:1", "hello")
    return out


def _readable(key_file: Path, keystore: Path, cts: dict[tuple[str, str], bytes]) -> None:
    fresh = open_crypto(key_file, keystore)  # a new process: nothing cached
    for (kind, owner), ct in cts.items():
        assert fresh.decrypt(kind, owner, _place(kind), ct)


def _place(kind: str) -> str:
    return "blob" if kind == "doc" else "message:1"


def _wrapped_by(crypto: Crypto) -> dict[str, str | None]:
    return {f"{e.kind}/{e.owner_id}": e.kek_id for e in crypto.entries()}


def test_rotate_adds_a_primary_keeps_the_old_and_rewraps_only_keys(
    crypto: Crypto, key_file: Path
) -> None:
    cts = _fill(crypto, 5)
    old = Keyring.load(key_file)
    wrapped_before = {p: p.read_bytes() for p in crypto.keystore_dir.rglob("*.json")}

    report = rotation.rotate(crypto, key_file)

    new = Keyring.load(key_file)
    assert report.new_kek == new.primary != old.primary
    assert new.keys[old.primary] == old.keys[old.primary]  # the old KEK is kept
    assert report.previous_keks == [old.primary]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (report.rewrapped, report.unchanged, report.failed) == (6, 0, [])
    assert set(_wrapped_by(crypto).values()) == {new.primary}
    assert all(p.read_bytes() != b for p, b in wrapped_before.items())
    _readable(key_file, crypto.keystore_dir, cts)  # same ciphertexts, nothing re-encrypted
    # A second run is a new rotation, not a no-op.
    again = rotation.rotate(crypto, key_file)
    assert again.new_kek not in (None, new.primary)
    assert len(Keyring.load(key_file).keys) == 3


def test_interrupted_rotation_stays_readable_and_a_rerun_finishes_it(
    crypto: Crypto, key_file: Path
) -> None:
    cts = _fill(crypto, 9)
    old = Keyring.load(key_file).primary

    def die_after_four(done: int, total: int) -> None:
        if done == 4:
            raise KeyboardInterrupt  # like Ctrl-C, or a kill, between two key files

    with pytest.raises(KeyboardInterrupt):
        rotation.rotate(crypto, key_file, on_progress=die_after_four)
    new = Keyring.load(key_file).primary
    kinds = list(_wrapped_by(crypto).values())
    assert kinds.count(new) == 4
    assert kinds.count(old) == 6
    _readable(key_file, crypto.keystore_dir, cts)
    assert not crypto.stray_temp_files()
    with pytest.raises(InvalidInput, match=rf"6 data key\(s\) are still wrapped by {old}"):
        rotation.retire(crypto, key_file, old)

    # Re-run from a fresh process: it finishes under the same KEK instead of adding one.
    resumed = rotation.rotate(open_crypto(key_file, crypto.keystore_dir), key_file)
    assert resumed.resumed
    assert resumed.primary == new
    assert (resumed.rewrapped, resumed.unchanged) == (6, 4)
    assert set(_wrapped_by(crypto).values()) == {new}
    assert len(Keyring.load(key_file).keys) == 2

    retired = rotation.retire(crypto, key_file, old)
    assert retired.remaining == [new]
    assert set(Keyring.load(key_file).keys) == {new}
    _readable(key_file, crypto.keystore_dir, cts)


def test_a_key_under_a_lost_kek_is_reported_and_does_not_block_rotation(
    crypto: Crypto, key_file: Path
) -> None:
    _fill(crypto, 2)
    entry = crypto.keystore_dir / "doc" / "d1.json"
    entry.write_text(json.dumps({**json.loads(entry.read_bytes()), "kek_id": "kek-lost"}))
    first = rotation.rotate(crypto, key_file)
    assert first.new_kek is not None
    assert first.failed == ["doc/d1: KeyMissing"]
    second = rotation.rotate(crypto, key_file)
    assert second.new_kek is not None  # a new rotation, not an endless "resume"
    assert second.failed == ["doc/d1: KeyMissing"]


def test_retire_refuses_the_primary_and_unknown_keks(crypto: Crypto, key_file: Path) -> None:
    primary = Keyring.load(key_file).primary
    with pytest.raises(InvalidInput, match="primary"):
        rotation.retire(crypto, key_file, primary)
    with pytest.raises(NotFound, match=primary):
        rotation.retire(crypto, key_file, "kek-nothere")


def test_rotation_never_brings_back_a_key_shredded_meanwhile(
    crypto: Crypto, key_file: Path
) -> None:
    _fill(crypto, 4)

    def shred_a_later_key(done: int, total: int) -> None:
        if done == 1:
            crypto.delete_data_key("doc", "d3")  # the deletion job, while rotation runs

    report = rotation.rotate(crypto, key_file, on_progress=shred_a_later_key)
    assert report.unchanged == 1
    assert not crypto.has_data_key("doc", "d3")
    with pytest.raises(KeyMissing):
        open_crypto(key_file, crypto.keystore_dir).data_key("doc", "d3")


def test_a_running_service_follows_a_rotation_by_another_process(
    crypto: Crypto, key_file: Path
) -> None:
    cts = _fill(crypto, 2)
    service = open_crypto(key_file, crypto.keystore_dir)  # started before the rotation
    operator = open_crypto(key_file, crypto.keystore_dir)
    report = rotation.rotate(operator, key_file)
    assert service.decrypt("doc", "d0", "blob", cts[("doc", "d0")]) == b"content 0"
    service.create_data_key("doc", "after")
    assert _wrapped_by(crypto)["doc/after"] == report.primary


def test_shredding_also_removes_temp_copies_of_the_key(crypto: Crypto) -> None:
    crypto.create_data_key("doc", "gone")
    path = crypto.keystore_dir / "doc" / "gone.json"
    leftover = path.with_name(".gone.json.abcd1234.tmp")  # a crash mid-rewrite
    leftover.write_bytes(path.read_bytes())
    assert crypto.stray_temp_files() == [leftover]
    crypto.delete_data_key("doc", "gone")
    assert not leftover.exists()
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can write files for another user")
def test_root_running_the_commands_leaves_files_to_the_service_account(tmp_path: Path) -> None:
    service = 65534  # nobody: stands for the appliance account
    key_file = tmp_path / "etc" / "kek"
    Keyring.generate().save(key_file)
    store = tmp_path / "keys"
    store.mkdir()
    for path in (key_file, store):
        os.chown(path, service, service)
    crypto = open_crypto(key_file, store)
    _fill(crypto, 2)
    old = Keyring.load(key_file).primary
    rotation.rotate(crypto, key_file)
    rotation.retire(crypto, key_file, old)
    crypto.delete_data_key("doc", "d0")
    owners = {str(p): p.stat().st_uid for p in [key_file, *store.rglob("*")]}
    assert set(owners.values()) == {service}, owners


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_open_runtime_refuses_a_key_file_others_can_read(
    settings: Settings, initialized: object, mode: int
) -> None:
    os.chmod(settings.key_file, mode)
    with pytest.raises(UnsafeConfiguration, match=f"chmod 600 {settings.key_file}"):
        open_runtime(settings)
    os.chmod(settings.key_file, 0o600)
    open_runtime(settings).close()


# -- keys check --------------------------------------------------------------------------


def _problems(rt: Runtime) -> set[tuple[str, str]]:
    with rt.sessions() as s:
        return {(p.what, p.key) for p in check_keys(session=s, crypto=rt.crypto).problems}


def test_check_finds_missing_orphaned_and_broken_keys(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    uid = add_user(rt, "carol")
    (tmp_path / "a.md").write_text("# A\n\nalpha\n")
    (tmp_path / "b.md").write_text("# B\n\nbeta\n")
    (tmp_path / "c.md").write_text("# C\n\ngamma\n")
    a, b, c = (submit(rt, tmp_path / n) for n in ("a.md", "b.md", "c.md"))
    with rt.sessions() as s:
        s.add(Conversation(owner_id=uid, title_ct=b"x"))
        s.commit()
    assert _problems(rt) == {("key_missing", f"chat/{uid}")}
    rt.crypto.create_data_key("chat", uid)
    with rt.sessions() as s:
        report = check_keys(session=s, crypto=rt.crypto)
    assert report.ok
    assert report.keks == {rt.crypto.keyring.primary: report.data_keys}

    rt.crypto.delete_data_key("doc", a)  # lost: the document is still there
    with rt.sessions() as s:  # being deleted: its key is shredded first, that is fine
        s.get_one(Document, b).state = "deleting"
        s.commit()
    rt.crypto.delete_data_key("doc", b)
    rt.crypto.create_data_key("doc", "f" * 32)  # a key whose document is gone
    # A key wrapped by a KEK the key file no longer holds.
    entry = rt.crypto.keystore_dir / "doc" / f"{c}.json"
    body = json.loads(entry.read_bytes())
    entry.write_text(json.dumps({**body, "kek_id": "kek-lost"}))
    assert _problems(rt) == {
        ("key_missing", f"doc/{a}"),
        ("orphan_key", "doc/" + "f" * 32),
        ("unwrap_failed", f"doc/{c}"),
    }


@pytest.fixture
def cli_env(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Runtime:
    root = runtime.settings.data_dir.parents[1]
    for name, value in instance_env(root).items():
        monkeypatch.setenv(name, value)
    assert Path(os.environ["APPLIANCE_DATA_DIR"]) == runtime.settings.data_dir
    return runtime


def test_cli_rotate_retire_check_are_audited_without_key_material(
    cli_env: Runtime, tmp_path: Path
) -> None:
    from appliance.cli import app

    rt = cli_env
    (tmp_path / "a.md").write_text("# A\n\nalpha\n")
    doc = submit(rt, tmp_path / "a.md")
    old = Keyring.load(rt.settings.key_file).primary
    runner = CliRunner()

    result = runner.invoke(app, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    new = Keyring.load(rt.settings.key_file).primary
    assert f"New primary KEK {new}" in result.output
    assert "vault" in result.output

    checked = runner.invoke(app, ["keys", "check", "--json"])
    assert checked.exit_code == 0, checked.output
    body = json.loads(checked.stdout)
    assert body["ok"] is True
    assert body["keks"] == {old: 0, new: body["data_keys"]}

    keks_seen = dict(Keyring.load(rt.settings.key_file).keys)
    result = runner.invoke(app, ["keys", "retire", new])
    assert isinstance(result.exception, InvalidInput)
    result = runner.invoke(app, ["keys", "retire", old])
    assert result.exit_code == 0, result.output
    assert set(Keyring.load(rt.settings.key_file).keys) == {new}

    rt.crypto.delete_data_key("doc", doc)
    checked = runner.invoke(app, ["keys", "check"])
    assert checked.exit_code == 1
    assert f"doc/{doc}" in checked.output
    assert runner.invoke(app, ["keys", "--help"]).exit_code == 0

    with rt.sessions() as s:
        assert audit.verify(s).ok
        events = s.execute(
            select(AuditEvent).where(AuditEvent.action.like("keys.%")).order_by(AuditEvent.id)
        ).scalars()
        seen = [(e.action, e.outcome, e.actor.startswith("operator:")) for e in events]
        details = " ".join(e.details for e in s.execute(select(AuditEvent)).scalars())
    assert seen == [
        ("keys.rotate", "ok", True),
        ("keys.retire", "refused", True),
        ("keys.retire", "ok", True),
    ]
    for key in [*keks_seen.values(), *Keyring.load(rt.settings.key_file).keys.values()]:
        assert base64.b64encode(key).decode() not in details
    for entry in rt.crypto.entries():
        dek = rt.crypto.data_key(entry.kind, entry.owner_id)
        assert base64.b64encode(dek).decode() not in details
        assert dek.hex() not in details
