"""In-process background work for the embedded default: the ingestion worker and the jobs."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from appliance.admin import service as switches
from appliance.admin.tables import READ_ONLY
from appliance.core.db import utcnow
from appliance.core.runtime import Runtime
from appliance.documents.ingestion import IngestionWorker
from appliance.jobs.registry import JOBS, RunResult, due, run_job

log = logging.getLogger(__name__)


class JobRunner:
    """Starts the ingestion worker (after crash recovery) and the scheduled jobs.

    Each scheduled job (cleanup, retention) runs when its interval has passed since its last
    run by any process, under its database lease: with several processes only one runs it.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        poll_seconds: float | None = None,
    ) -> None:
        self.rt = rt
        self.stop_event = stop or threading.Event()
        self.worker = IngestionWorker(rt)
        self.threads: list[threading.Thread] = []
        self.clock = clock
        intervals = [job.interval(rt.settings) for job in JOBS.values()]
        self.poll_seconds = poll_seconds or min(60.0, *map(float, intervals))

    def start(self) -> None:
        """Start the threads (daemon: they never block interpreter exit)."""
        self.threads = [
            threading.Thread(target=self._ingest, name="ingest-worker", daemon=True),
            threading.Thread(target=self._schedule, name="scheduled-jobs", daemon=True),
        ]
        for t in self.threads:
            t.start()

    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return bool(self.threads) and self.threads[0].is_alive()

    def _ingest(self) -> None:
        try:
            report = self.worker.recover()
            if report.requeued or report.orphan_points_removed or report.deletions_finished:
                log.info("recovery: %s", report)
            self.worker.run_forever(self.stop_event)
        except Exception:
            log.exception("the ingestion worker stopped; restart the service")
        finally:
            self.worker.close()

    def _schedule(self) -> None:
        # The first check waits one poll: the worker's own recovery runs at start-up.
        while not self.stop_event.wait(self.poll_seconds):
            self.run_due()

    def run_due(self) -> list[RunResult]:
        """Run every job whose interval has passed (skipped while another process runs it).

        Nothing runs while an admin holds the appliance read-only: the jobs write (they
        delete expired data, finish deletions), and read-only means no writes. They run
        when next due after the switch is off; an operator can still `appliance jobs run`.
        """
        with self.rt.sessions() as session:
            if switches.is_on(session, READ_ONLY):
                log.info("scheduled jobs wait: the appliance is read-only")
                return []
        results = []
        for job in JOBS.values():
            if self.stop_event.is_set():
                break
            try:
                if due(self.rt, job, now=utcnow()):
                    results.append(run_job(self.rt, job.name, now=self.clock()))
            except Exception:
                log.exception("job %s failed; it runs again when next due", job.name)
        return results

    def stop(self, timeout: float = 30) -> None:
        """Ask the threads to stop and wait for them."""
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout)
