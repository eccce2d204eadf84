"""The audit chain detects edited, removed, inserted and reordered entries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, delete, update
from sqlalchemy.orm import Session

from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.models_registry import metadata


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with Session(engine) as s:
        for i in range(5):
            audit.record(s, actor="operator:test", action="thing.do", target=f"t:{i}")
        s.commit()
        yield s


def test_intact_chain_verifies(session: Session) -> None:
    result = audit.verify(session)
    assert result.ok
    assert result.entries == 5


def test_edit_is_detected(session: Session) -> None:
    session.execute(update(AuditEvent).where(AuditEvent.id == 3).values(actor="someone-else"))
    result = audit.verify(session)
    assert not result.ok
    assert result.at_id == 3
    assert result.problem == "entry edited"


def test_removal_is_detected(session: Session) -> None:
    session.execute(delete(AuditEvent).where(AuditEvent.id == 2))
    result = audit.verify(session)
    assert not result.ok
    assert result.at_id == 3


def test_reorder_is_detected(session: Session) -> None:
    session.execute(update(AuditEvent).where(AuditEvent.id == 2).values(id=100))
    session.execute(update(AuditEvent).where(AuditEvent.id == 4).values(id=2))
    session.execute(update(AuditEvent).where(AuditEvent.id == 100).values(id=4))
    assert not audit.verify(session).ok


def test_details_never_carry_what_callers_do_not_pass(session: Session) -> None:
    event = audit.record(session, actor="a", action="x", details={"chunks": 3})
    assert event.details == '{"chunks":3}'
