"""The in-process schedule and the lease across real processes."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.admin import service as switches
from appliance.admin.tables import READ_ONLY
from appliance.audit.tables import AuditEvent
from appliance.core.db import utcnow
from appliance.core.runtime import Runtime
from appliance.jobs import registry
from appliance.jobs.registry import Job
from appliance.jobs.runner import JobRunner
from tests.fixtures.app import instance_env


def test_runner_runs_due_jobs_once_per_interval(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime
    calls: list[dt.datetime] = []

    def tick(ctx: registry.JobContext) -> dict[str, object]:
        calls.append(ctx.now)
        return {"ticks": len(calls)}

    monkeypatch.setattr(registry, "JOBS", {"tick": Job("tick", "test", lambda s: 3600, tick)})
    monkeypatch.setattr("appliance.jobs.runner.JOBS", registry.JOBS)
    policy_now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    runner = JobRunner(rt, clock=lambda: policy_now, poll_seconds=0.05)
    assert [r.outcome for r in runner.run_due()] == ["ok"]  # never ran: due
    assert runner.run_due() == []  # ran a moment ago: not due for an hour
    assert calls == [policy_now]  # the policy clock is the runner's clock
    status = registry.status(rt)[0]
    assert status.next_due is not None
    assert status.next_due - utcnow() > dt.timedelta(minutes=59)
    with rt.sessions() as s:
        events = list(
            s.execute(select(AuditEvent).where(AuditEvent.action == "job.tick")).scalars()
        )
        assert [e.actor for e in events] == ["system:tick"]


def test_scheduled_jobs_wait_while_the_appliance_is_read_only(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dt.datetime] = []

    def tick(ctx: registry.JobContext) -> dict[str, object]:
        calls.append(ctx.now)
        return {}

    monkeypatch.setattr(registry, "JOBS", {"tick": Job("tick", "test", lambda s: 3600, tick)})
    monkeypatch.setattr("appliance.jobs.runner.JOBS", registry.JOBS)
    runner = JobRunner(runtime, poll_seconds=0.05)
    for on, expected_runs in ((True, 0), (False, 1)):
        with runtime.sessions() as s:
            switches.set_switch(s, name=READ_ONLY, on=on, actor="operator:test", now=utcnow())
            s.commit()
        runner.run_due()
        assert len(calls) == expected_runs


def test_runner_thread_runs_jobs_and_stops(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    ran = threading.Event()

    def tick(ctx: registry.JobContext) -> dict[str, object]:
        ran.set()
        return {}

    monkeypatch.setattr(
        "appliance.jobs.runner.JOBS", {"tick": Job("tick", "t", lambda s: 60, tick)}
    )
    monkeypatch.setitem(registry.JOBS, "tick", Job("tick", "t", lambda s: 60, tick))
    runner = JobRunner(runtime, poll_seconds=0.05)
    runner.threads = [threading.Thread(target=runner._schedule, daemon=True)]
    runner.threads[0].start()
    try:
        assert ran.wait(10)
    finally:
        runner.stop(timeout=10)
    assert not runner.threads[0].is_alive()


TWO_PROCESSES = """
import sys, time
from pathlib import Path
from appliance.core.config import get_settings
from appliance.jobs import registry
from appliance.core.runtime import open_runtime

def slow(ctx):
    with open(sys.argv[1], "a") as fh:
        fh.write(ctx.holder + "\\n")
    time.sleep(3)
    return {"slept": 3}

registry.JOBS["slow"] = registry.Job("slow", "test", lambda s: 60, slow)
rt = open_runtime(get_settings())
Path(sys.argv[2]).touch()
while not Path(sys.argv[3]).exists():
    time.sleep(0.01)
print(registry.run_job(rt, "slow").outcome)
"""


@pytest.mark.slow
def test_two_processes_one_run(runtime: Runtime, tmp_path: Path) -> None:
    runtime.close()
    env = {**os.environ, **instance_env(tmp_path / "instance")}
    log, go = tmp_path / "ran.log", tmp_path / "go"
    children = [
        subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", TWO_PROCESSES, str(log), str(tmp_path / f"ready{i}"), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = dt.datetime.now() + dt.timedelta(seconds=120)
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert dt.datetime.now() < deadline
        for child in children:
            assert child.poll() is None, child.communicate()
    go.touch()  # both start at once
    outcomes = []
    for child in children:
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr
        outcomes.append(stdout.strip())
    assert sorted(outcomes) == ["busy", "ok"]
    assert len(log.read_text().splitlines()) == 1
