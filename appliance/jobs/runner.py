"""In-process background work for the embedded default: the ingestion worker and cleanup."""

from __future__ import annotations

import logging
import threading

from appliance.auth import sessions
from appliance.db import utcnow
from appliance.documents.ingestion import IngestionWorker
from appliance.runtime import Runtime

log = logging.getLogger(__name__)


class JobRunner:
    """Starts the ingestion worker (after crash recovery) and the periodic cleanup."""

    def __init__(self, rt: Runtime, *, stop: threading.Event | None = None) -> None:
        self.rt = rt
        self.stop_event = stop or threading.Event()
        self.worker = IngestionWorker(rt)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads (daemon: they never block interpreter exit)."""
        self.threads = [
            threading.Thread(target=self._ingest, name="ingest-worker", daemon=True),
            threading.Thread(target=self._cleanup, name="cleanup-job", daemon=True),
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

    def _cleanup(self) -> None:
        interval = self.rt.settings.jobs.cleanup_interval_seconds
        while not self.stop_event.wait(interval):
            try:
                self.worker.recover()
                purge_sessions(self.rt)
            except Exception:
                log.exception("cleanup job failed; it runs again in %s s", interval)

    def stop(self, timeout: float = 30) -> None:
        """Ask the threads to stop and wait for them."""
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout)


def purge_sessions(rt: Runtime) -> int:
    """Delete expired sign-in sessions (they are refused anyway; this keeps the table small)."""
    with rt.sessions() as session:
        count = sessions.purge_expired(session, now=utcnow(), settings=rt.settings.auth)
        session.commit()
    return count
