"""`appliance jobs ...`: run a scheduled job now, list jobs with their last and next runs."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

out = Console()


def jobs_run(
    name: Annotated[str, typer.Argument(help="Job name: cleanup or retention.")],
) -> None:
    """Run a job now (under its lease: refused while another process runs it).

    `cleanup` resets interrupted ingestion, finishes deletions and removes orphans and
    expired sessions; `retention` deletes what the retention policies say is due.
    """
    from appliance.cli import _runtime
    from appliance.jobs.registry import get_job, run_job

    get_job(name)
    rt = _runtime()
    try:
        result = run_job(rt, name)
    finally:
        rt.close()
    if not result.ran:
        out.print(f"Job {name} is running in another process ({result.holder}); try later.")
        raise typer.Exit(3)
    out.print_json(json.dumps(result.counts))


def jobs_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List jobs: interval, last run and its result, and when each is next due."""
    from appliance.cli import _runtime
    from appliance.jobs.registry import status

    rt = _runtime()
    try:
        rows = status(rt)
    finally:
        rt.close()
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
