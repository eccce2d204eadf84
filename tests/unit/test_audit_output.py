"""What audit search and export show: formula-safe CSV, filters, pseudonyms for erased users."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from appliance.audit import query as audit_query
from appliance.audit import service as audit
from appliance.auth.tables import User
from appliance.core.crypto import Crypto, Keyring
from appliance.models_registry import metadata

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def crypto(tmp_path: Path) -> Crypto:
    return Crypto(Keyring.generate(), tmp_path / "keys")


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("=SUM(A1)", "'=SUM(A1)"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("doc:1", "doc:1"),
        ("", ""),
    ],
)
def test_csv_cells_never_start_a_formula(cell: str, shown: str) -> None:
    assert audit_query.csv_safe(cell) == shown


def test_filters_round_trip_and_naive_times_are_utc(session: Session) -> None:
    for i in range(3):
        audit.record(session, actor="operator:t", action="a.b", now=T0 + dt.timedelta(hours=i))
    naive = audit_query.Filters(since=dt.datetime(2026, 1, 1, 1, 0), action="a")
    page = audit_query.search(session, filters=naive, newest_first=False)
    assert [e.ts for e in page.entries] == [T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)]
    again = audit_query.Filters.from_json(json.loads(json.dumps(naive.to_json())))
    assert (
        audit_query.search(session, filters=again).entries
        == audit_query.search(session, filters=naive).entries
    )


def test_erased_users_get_a_stable_keyed_pseudonym(
    session: Session, crypto: Crypto, tmp_path: Path
) -> None:
    user = User(username="mallory.smith@example.com", password_hash="-")
    session.add(user)
    session.flush()
    audit.record(session, actor=user.principal, action="a.b", target=user.principal)
    assert audit_query.describe_actor(session, user.principal, crypto=crypto) == user.username
    session.delete(user)
    session.flush()
    pseudonym = audit_query.describe_actor(session, user.principal, crypto=crypto)
    assert pseudonym.startswith("erased-user-")
    assert len(pseudonym) == len("erased-user-") + 8
    assert audit_query.describe_actor(session, user.principal, crypto=crypto) == pseudonym
    other = Crypto(Keyring.generate(), tmp_path / "other")
    assert audit_query.describe_actor(session, user.principal, crypto=other) != pseudonym
    assert audit_query.describe_actor(session, "operator:root") == "operator:root"

    cp = audit.checkpoint(session, crypto=crypto)
    for fmt in audit_query.FORMATS:
        text = "".join(
            audit_query.export_lines(
                session, filters=audit_query.Filters(), fmt=fmt, cp=cp, crypto=crypto
            )
        )
        assert "mallory" not in text
        assert pseudonym in text
    rows = list(
        csv.DictReader(
            io.StringIO(
                "".join(
                    audit_query.export_lines(
                        session, filters=audit_query.Filters(), fmt="csv", cp=cp, crypto=crypto
                    )
                )
            )
        )
    )
    assert [r["actor_name"] for r in rows] == [pseudonym]
    assert rows[0]["target_name"] == pseudonym
