"""`appliance jobs ...`: run a scheduled job now, list jobs with their last and next runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from appliance.cli.common import AsJson, cli_runtime, jobs_app, out, print_table, write_json
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
def jobs_list(as_json: AsJson = False) -> None:
    """List jobs: interval, last run and its result, and when each is next due."""
    with cli_runtime() as rt:
        rows = [row.public() for row in status(rt)]
    if as_json:
        write_json(rows)
        return
    print_table(
        ["job", "every", "last run", "outcome", "result", "next due", "running"],
        [
            [
                row["name"],
                f"{row['interval_seconds']} s",
                row["last_run_at"] or "never",
                row["last_outcome"],
                json.dumps(row["last_result"]) if row["last_result"] else "",
                row["next_due"] or "at the next check",
                row["running_by"],
            ]
            for row in rows
        ],
    )
