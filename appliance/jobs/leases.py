"""Database leases: with several processes (or threads), exactly one runs a given job.

Taking a lease is one conditional UPDATE (free, expired, or held by a process on this host
that no longer exists), so of two racing takers exactly one sees its row updated. The
holder renews the lease while it works; a holder that crashed stops renewing and its lease
expires, or is taken over at once when its process is known to be gone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import uuid
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.core.errors import LeaseLost
from appliance.jobs.tables import JobLease


def new_holder() -> str:
    """This process and one run of it: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_gone(holder: str | None) -> bool:
    """Whether a holder's process is known to have ended (only knowable on this host)."""
    if not holder:
        return True
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _ensure_row(session: Session, name: str) -> None:
    if session.get(JobLease, name) is not None:
        return
    session.add(JobLease(name=name))
    try:
        session.commit()
    except IntegrityError:  # another process created it first
        session.rollback()


def acquire(
    sessions: sessionmaker[Session], *, name: str, holder: str, now: dt.datetime, ttl: float
) -> bool:
    """Take the lease of job `name` for `ttl` seconds; False if someone else holds it."""
    expires = now + dt.timedelta(seconds=ttl)
    with sessions() as session:
        _ensure_row(session, name)
        taken = session.execute(
            update(JobLease)
            .where(
                JobLease.name == name,
                or_(
                    JobLease.holder.is_(None),
                    JobLease.expires_at.is_(None),
                    JobLease.expires_at <= now,
                ),
            )
            .values(holder=holder, expires_at=expires, started_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if _rowcount(taken) == 1:
            return True
        current = session.execute(
            select(JobLease.holder).where(JobLease.name == name)
        ).scalar_one_or_none()
        if current is None or not holder_gone(current):
            return False
        # The holder's process died without releasing: take over, unless someone else
        # already did (the UPDATE names the dead holder).
        taken = session.execute(
            update(JobLease)
            .where(JobLease.name == name, JobLease.holder == current)
            .values(holder=holder, expires_at=expires, started_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return _rowcount(taken) == 1


def renew(
    sessions: sessionmaker[Session], *, name: str, holder: str, now: dt.datetime, ttl: float
) -> None:
    """Extend our lease; raise LeaseLost if it is no longer ours."""
    with sessions() as session:
        result = session.execute(
            update(JobLease)
            .where(JobLease.name == name, JobLease.holder == holder)
            .values(expires_at=now + dt.timedelta(seconds=ttl))
            .execution_options(synchronize_session=False)
        )
        session.commit()
    if _rowcount(result) != 1:
        raise LeaseLost(
            f"The lease of job {name!r} was taken over by another process (this run took "
            "longer than jobs.lease_seconds between checkpoints); that process finishes the "
            "work. If this keeps happening, raise jobs.lease_seconds."
        )


def release(
    sessions: sessionmaker[Session],
    *,
    name: str,
    holder: str,
    now: dt.datetime,
    outcome: str,
    result: dict[str, Any],
) -> bool:
    """Give the lease back and record how the run went; False if it was not ours anymore."""
    with sessions() as session:
        done = session.execute(
            update(JobLease)
            .where(JobLease.name == name, JobLease.holder == holder)
            .values(
                holder=None,
                expires_at=None,
                last_run_at=now,
                last_outcome=outcome[:16],
                last_result=json.dumps(result, sort_keys=True),
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
    return _rowcount(done) == 1


def get(session: Session, name: str) -> JobLease | None:
    """The lease row of a job, if it ever ran."""
    return session.get(JobLease, name)
