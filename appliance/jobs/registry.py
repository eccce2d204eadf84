"""The scheduled jobs, and running one under its database lease with an audited result.

``run_job`` takes the job's lease (so with several processes only one runs it), runs it
while renewing the lease, records the counts on the lease row and in the audit log as
``job.<name>`` by ``system:<name>``, and gives the lease back. Jobs are idempotent: a run
that crashed is finished by the next one.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.audit import service as audit
from appliance.auth import sessions
from appliance.core.config import Settings
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput, LeaseLost
from appliance.core.runtime import Runtime
from appliance.documents.ingestion import IngestionWorker
from appliance.jobs import leases
from appliance.retention import service as retention

Clock = Callable[[], dt.datetime]


@dataclass
class JobContext:
    """What a running job gets: the runtime, the policy clock's now, and a checkpoint."""

    rt: Runtime
    name: str
    holder: str
    now: dt.datetime
    ttl: float
    lease_clock: Clock = utcnow
    _renewed: float = field(default_factory=time.monotonic)

    def checkpoint(self) -> None:
        """Call between items: renews the lease when a third of it has passed."""
        if time.monotonic() - self._renewed < self.ttl / 3:
            return
        leases.renew(
            self.rt.sessions,
            name=self.name,
            holder=self.holder,
            now=self.lease_clock(),
            ttl=self.ttl,
        )
        self._renewed = time.monotonic()


@dataclass(frozen=True)
class Job:
    """A named job: what it does, how often, and the function that does it."""

    name: str
    description: str
    interval: Callable[[Settings], int]
    run: Callable[[JobContext], dict[str, Any]]


def _cleanup(ctx: JobContext) -> dict[str, Any]:
    rt = ctx.rt
    worker = IngestionWorker(rt)
    try:
        report = worker.recover()
    finally:
        worker.close()
    ctx.checkpoint()
    # Deleted documents' vectors stay in the index files until purged (ingest.qdrant_edge):
    # this job is what bounds how long, to one cleanup interval.
    purge = getattr(rt.index(), "purge_deleted", None)
    purged = bool(purge()) if purge is not None else False
    ctx.checkpoint()
    with rt.sessions() as session:
        expired = sessions.purge_expired(session, now=utcnow(), settings=rt.settings.auth)
        session.commit()
    return {
        "deleted_vectors_purged": purged,
        "requeued": len(report.requeued),
        "failed": len(report.failed),
        "deletions_finished": len(report.deletions_finished),
        "orphan_points_removed": len(report.orphan_points_removed),
        "orphan_blobs_removed": report.orphan_blobs_removed,
        "orphan_chunk_rows_removed": report.orphan_chunk_rows_removed,
        "expired_sessions_removed": expired,
    }


def _retention(ctx: JobContext) -> dict[str, Any]:
    return retention.apply_retention(rt=ctx.rt, now=ctx.now, checkpoint=ctx.checkpoint).counts()


JOBS: dict[str, Job] = {
    "cleanup": Job(
        "cleanup",
        "Reset interrupted ingestion, finish deletions, remove orphans, erase deleted "
        "documents' vectors from the index files, remove expired sessions.",
        lambda s: s.jobs.cleanup_interval_seconds,
        _cleanup,
    ),
    "retention": Job(
        "retention",
        "Delete what the retention policies say is due: documents, chat history, ended "
        "sessions, old audit entries (documents under legal hold are kept).",
        lambda s: s.jobs.retention_interval_seconds,
        _retention,
    ),
}


def get_job(name: str) -> Job:
    """The job of that name, or InvalidInput naming the jobs."""
    job = JOBS.get(name)
    if job is None:
        raise InvalidInput(f"No job {name!r}. Jobs: {', '.join(JOBS)}.")
    return job


@dataclass(frozen=True)
class RunResult:
    """How a request to run a job ended."""

    name: str
    ran: bool
    outcome: str  # "ok" | "failed" | "busy"
    counts: dict[str, Any]
    holder: str | None = None


def run_job(
    rt: Runtime,
    name: str,
    *,
    now: dt.datetime | None = None,
    holder: str | None = None,
    lease_clock: Clock = utcnow,
) -> RunResult:
    """Run a job now under its lease; "busy" (nothing done) while another process runs it.

    `now` is the policy clock (tests travel in time with it); the lease uses `lease_clock`.
    """
    job = get_job(name)
    holder = holder or leases.new_holder()
    ttl = float(rt.settings.jobs.lease_seconds)
    if not leases.acquire(rt.sessions, name=name, holder=holder, now=lease_clock(), ttl=ttl):
        with rt.sessions() as session:
            row = leases.get(session, name)
            current = row.holder if row is not None else None
        return RunResult(name, False, "busy", {}, current)
    ctx = JobContext(
        rt=rt, name=name, holder=holder, now=now or utcnow(), ttl=ttl, lease_clock=lease_clock
    )
    actor = f"system:{name}"
    try:
        counts = job.run(ctx)
    except LeaseLost:
        with rt.sessions() as session:
            audit.record(
                session,
                actor=actor,
                action=f"job.{name}",
                outcome="lost_lease",
                details={"holder": holder},
            )
            session.commit()
        raise
    except Exception as exc:
        with rt.sessions() as session:
            audit.record(
                session,
                actor=actor,
                action=f"job.{name}",
                outcome="failed",
                details={"error": type(exc).__name__},
            )
            session.commit()
        leases.release(
            rt.sessions,
            name=name,
            holder=holder,
            now=lease_clock(),
            outcome="failed",
            result={"error": type(exc).__name__},
        )
        raise
    with rt.sessions() as session:
        audit.record(session, actor=actor, action=f"job.{name}", details=counts)
        session.commit()
    leases.release(
        rt.sessions, name=name, holder=holder, now=lease_clock(), outcome="ok", result=counts
    )
    return RunResult(name, True, "ok", counts, holder)


@dataclass(frozen=True)
class JobStatus:
    """A job's schedule and last run, for `appliance jobs list`."""

    name: str
    description: str
    interval_seconds: int
    last_run_at: dt.datetime | None
    last_outcome: str | None
    last_result: dict[str, Any] | None
    running_by: str | None
    next_due: dt.datetime | None

    def public(self) -> dict[str, Any]:
        """As JSON-ready values."""
        return {
            "name": self.name,
            "description": self.description,
            "interval_seconds": self.interval_seconds,
            "last_run_at": self.last_run_at.isoformat() if self.last_run_at else None,
            "last_outcome": self.last_outcome,
            "last_result": self.last_result,
            "running_by": self.running_by,
            "next_due": self.next_due.isoformat() if self.next_due else None,
        }


def status(rt: Runtime, *, now: dt.datetime | None = None) -> list[JobStatus]:
    """Every job with its last run and when it is next due (None: at the next check)."""
    now = now or utcnow()
    out = []
    with rt.sessions() as session:
        for job in JOBS.values():
            row = leases.get(session, job.name)
            interval = job.interval(rt.settings)
            last = row.last_run_at if row is not None else None
            running = (
                row.holder
                if row is not None and row.holder and row.expires_at and row.expires_at > now
                else None
            )
            out.append(
                JobStatus(
                    name=job.name,
                    description=job.description,
                    interval_seconds=interval,
                    last_run_at=last,
                    last_outcome=row.last_outcome if row is not None else None,
                    last_result=json.loads(row.last_result)
                    if row is not None and row.last_result
                    else None,
                    running_by=running,
                    next_due=last + dt.timedelta(seconds=interval) if last else None,
                )
            )
    return out


def due(rt: Runtime, job: Job, *, now: dt.datetime) -> bool:
    """Whether a job's interval has passed since its last run (or it never ran)."""
    with rt.sessions() as session:
        row = leases.get(session, job.name)
        last = row.last_run_at if row is not None else None
    return last is None or last + dt.timedelta(seconds=job.interval(rt.settings)) <= now
