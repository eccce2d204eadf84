"""Concurrent appenders keep one audit chain (no fork that `audit verify` would flag).

Runs on SQLite here and on PostgreSQL in test_postgres.py (which imports it).
"""

from __future__ import annotations

import threading

from sqlalchemy import select

from appliance.audit import service as audit
from appliance.audit.tables import AuditEvent
from appliance.core.runtime import Runtime


def test_concurrent_audit_writers_keep_one_chain(runtime: Runtime) -> None:
    writers, each = 4, 25
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait()
            for i in range(each):
                # Each append is the first write of its transaction, as in a sign-in request.
                with runtime.sessions() as s:
                    audit.record(s, actor=f"operator:w{n}", action="test.write", target=str(i))
                    s.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with runtime.sessions() as s:
        written = s.execute(select(AuditEvent.id).where(AuditEvent.action == "test.write")).all()
        assert len(written) == writers * each
        result = audit.verify(s)
    assert result.ok, result.problem
