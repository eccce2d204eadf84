"""The audit log under direct database tampering: each kind of change is detected.

Edited, deleted, inserted and reordered entries break the hash chain; a cut tail leaves a
valid shorter chain that only a signed checkpoint of the old head reveals; a forged
checkpoint is refused; pruning keeps the chain verifiable through its anchor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, text, update
from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.core.crypto import Crypto, Keyring
from appliance.core.errors import InvalidInput
from appliance.models_registry import metadata

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def crypto(tmp_path: Path) -> Crypto:
    return Crypto(Keyring.generate(), tmp_path / "keys")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    metadata.create_all(engine)
    with Session(engine) as s:
        for i in range(10):
            audit.record(
                s,
                actor="operator:test",
                action="thing.do",
                target=f"t:{i}",
                now=T0 + dt.timedelta(days=i),
            )
        s.commit()
        yield s
    engine.dispose()


def test_intact_chain_and_its_checkpoint_verify(session: Session, crypto: Crypto) -> None:
    cp = audit.checkpoint(session, crypto=crypto)
    assert (cp.entries, cp.head_id) == (10, 10)
    audit.check_checkpoint(cp, crypto=crypto)
    result = audit.verify(session, checkpoint=cp)
    assert result.ok, result.problem
    # Appending after the checkpoint is fine: the old head is still in the chain.
    audit.record(session, actor="operator:test", action="thing.do")
    assert audit.verify(session, checkpoint=cp).ok


def test_edited_entry(session: Session) -> None:
    session.execute(text("UPDATE audit_events SET outcome = 'denied' WHERE id = 4"))
    result = audit.verify(session)
    assert (result.ok, result.at_id, result.problem) == (False, 4, "entry edited")


def test_edited_entry_with_recomputed_hash_breaks_the_next_link(session: Session) -> None:
    event = session.get_one(AuditEvent, 4)
    event.details = '{"quiet":true}'
    event.entry_hash = audit._entry_hash(event)
    session.flush()
    result = audit.verify(session)
    assert not result.ok
    assert result.at_id == 5


def test_deleted_entry(session: Session) -> None:
    session.execute(text("DELETE FROM audit_events WHERE id = 6"))
    result = audit.verify(session)
    assert not result.ok
    assert result.at_id == 7


def test_inserted_entry(session: Session) -> None:
    good = session.get_one(AuditEvent, 5)
    session.execute(
        text(
            "INSERT INTO audit_events (id, ts, actor, action, outcome, details, prev_hash, "
            "entry_hash) VALUES (55, :ts, 'operator:evil', 'thing.do', 'ok', '{}', :prev, :h)"
        ),
        {"ts": good.ts.replace(tzinfo=None), "prev": good.entry_hash, "h": "f" * 64},
    )
    result = audit.verify(session)
    assert not result.ok
    assert result.at_id == 55


def test_swapped_entries(session: Session) -> None:
    session.execute(text("UPDATE audit_events SET id = 100 WHERE id = 3"))
    session.execute(text("UPDATE audit_events SET id = 3 WHERE id = 7"))
    session.execute(text("UPDATE audit_events SET id = 7 WHERE id = 100"))
    result = audit.verify(session)
    assert not result.ok
    assert result.at_id == 3


def test_deleted_start_without_an_anchor(session: Session) -> None:
    session.execute(text("DELETE FROM audit_events WHERE id <= 2"))
    result = audit.verify(session)
    assert not result.ok
    assert "start" in (result.problem or "")


def test_truncated_tail_is_caught_by_the_checkpoint(session: Session, crypto: Crypto) -> None:
    cp = audit.checkpoint(session, crypto=crypto)
    session.execute(text("DELETE FROM audit_events WHERE id >= 8"))
    assert audit.verify(session).ok  # a shorter chain is still a chain...
    result = audit.verify(session, checkpoint=cp)
    assert not result.ok  # ...but not the one that was checkpointed
    assert "truncated" in (result.problem or "")


def test_truncated_and_regrown_tail_is_caught(session: Session, crypto: Crypto) -> None:
    cp = audit.checkpoint(session, crypto=crypto)
    session.execute(delete(AuditEvent).where(AuditEvent.id >= 8))
    for _ in range(5):  # same ids reused, new hashes
        audit.record(session, actor="operator:evil", action="thing.do")
    assert audit.verify(session).ok
    result = audit.verify(session, checkpoint=cp)
    assert not result.ok
    assert result.at_id == cp.head_id


def test_forged_checkpoint_is_refused(session: Session, crypto: Crypto, tmp_path: Path) -> None:
    cp = audit.checkpoint(session, crypto=crypto)
    session.execute(text("DELETE FROM audit_events WHERE id >= 8"))
    # The attacker writes a checkpoint that matches the cut chain, without the MAC key.
    head = session.get_one(AuditEvent, 7)
    forged = dataclasses.replace(cp, entries=7, head_id=7, head_hash=head.entry_hash)
    assert audit.verify(session, checkpoint=forged).ok  # the content would pass...
    with pytest.raises(InvalidInput, match="signature"):
        audit.check_checkpoint(forged, crypto=crypto)  # ...the signature does not
    other = Crypto(Keyring.generate(), tmp_path / "other-keys")
    resigned = audit.checkpoint(session, crypto=other)
    with pytest.raises(InvalidInput, match="signature"):
        audit.check_checkpoint(resigned, crypto=crypto)
    round_trip = audit.Checkpoint.from_json(cp.to_json())
    audit.check_checkpoint(round_trip, crypto=crypto)


def test_prune_keeps_the_chain_verifiable(session: Session, crypto: Crypto) -> None:
    cp_before = audit.checkpoint(session, crypto=crypto)
    removed = audit.prune(session, before=T0 + dt.timedelta(days=4), actor="system:retention")
    assert removed == 4
    assert session.get(AuditEvent, 4) is None
    result = audit.verify(session)
    assert result.ok, result.problem
    assert result.pruned == 4
    # An older checkpoint whose head survived still verifies, and so does a new one.
    assert audit.verify(session, checkpoint=cp_before).ok
    cp_after = audit.checkpoint(session, crypto=crypto)
    assert cp_after.entries == 11  # 10 + the anchor, pruned ones counted
    assert audit.verify(session, checkpoint=cp_after).ok
    # Idempotent: nothing older left.
    assert audit.prune(session, before=T0 + dt.timedelta(days=4), actor="system:retention") == 0
    # A second prune removes the first anchor too; the running total carries on.
    assert audit.prune(session, before=T0 + dt.timedelta(days=100), actor="system:retention")
    result = audit.verify(session)
    assert result.ok, result.problem
    assert result.pruned == 10
    assert audit.verify(session, checkpoint=cp_after).ok
    # Cutting more off the start than the anchor vouches for is still detected.
    oldest = session.execute(text("SELECT min(id) FROM audit_events")).scalar_one()
    session.execute(delete(AuditEvent).where(AuditEvent.id == oldest))
    assert not audit.verify(session).ok


def test_prune_then_delete_behind_the_anchor_is_detected(session: Session) -> None:
    audit.prune(session, before=T0 + dt.timedelta(days=3), actor="system:retention")
    session.execute(delete(AuditEvent).where(AuditEvent.id == 5))
    result = audit.verify(session)
    assert not result.ok


def test_prune_never_removes_the_head(session: Session) -> None:
    audit.prune(session, before=T0 + dt.timedelta(days=1000), actor="system:retention")
    result = audit.verify(session)
    assert result.ok, result.problem
    assert result.entries == 2  # the old head and the anchor
    assert result.pruned == 9


def test_edit_to_prune_anchor_is_detected(session: Session) -> None:
    audit.prune(session, before=T0 + dt.timedelta(days=3), actor="system:retention")
    session.execute(
        update(AuditEvent).where(AuditEvent.action == audit.PRUNED).values(target="elsewhere")
    )
    assert not audit.verify(session).ok


def test_a_garbled_checkpoint_is_refused_not_crashed(session: Session, crypto: Crypto) -> None:
    cp = audit.checkpoint(session, crypto=crypto)
    with pytest.raises(InvalidInput, match="signature"):
        audit.check_checkpoint(dataclasses.replace(cp, mac="ü" * 64), crypto=crypto)
    with pytest.raises(InvalidInput, match="not an audit checkpoint"):
        audit.Checkpoint.from_json("{}")
