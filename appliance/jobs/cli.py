"""`appliance jobs ...`: run a scheduled job now, list jobs with their last and next runs."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from appliance.cli.common import cli_runtime, jobs_app, out
from appliance.jobs.registry import get_job, run_job, status


@jobs_app.command("run")
def jobs_run(
    name: Annotated[str, typer.Argument(help="Job name: cleanup or retention.")],
) -> None:
    """Run a job now (under its lease: refused while another process runs it).

    `cleanup` resets interrupted ingestion, finishes deletions and removes orphans and
    expired sessions; `retention` deletes what the retention policies say is due.
    """
    get_job(name)
    with cli_runtime() as rt:
        result = run_job(rt, name)
    if not result.ran:
        out.print(f"Job {name} is running in another process ({result.holder}); try later.")
        raise typer.Exit(3)
    out.print_json(json.dumps(result.counts))


@jobs_app.command("list")
def jobs_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List jobs: interval, last run and its result, and when each is next due."""
    with cli_runtime() as rt:
        rows = status(rt)
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row.public()) + "\n")
        return
    table = Table("job", "every", "last run", "outcome", "result", "next due", "running")
    for row in rows:
        data = row.public()
        table.add_row(
            row.name,
            f"{row.interval_seconds} s",
            data["last_run_at"] or "never",
            row.last_outcome or "",
            json.dumps(row.last_result) if row.last_result else "",
            data["next_due"] or "at the next check",
            row.running_by or "",
        )
    out.print(table)
