"""`appliance index stats|optimize`: inspect the vector index; build its HNSW graph offline."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

from appliance.audit import service as audit
from appliance.cli.common import cli_runtime, err, index_app, operator, out


@index_app.command("stats")
def index_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Points, segments and HNSW-indexed vectors of the vector index."""
    with cli_runtime() as rt:
        index = rt.index()
        stats_of = getattr(index, "stats", None)
        stats: dict[str, int] = stats_of() if stats_of is not None else {"points": index.count()}
    if as_json:
        out.print_json(data={"backend": rt.settings.index.backend, **stats})
        return
    out.print(f"backend: {rt.settings.index.backend}")
    for key, value in stats.items():
        out.print(f"{key}: {value:,}")


@index_app.command("optimize")
def index_optimize() -> None:
    """Build the HNSW graph and payload indexes of the embedded index, then write it to disk.

    Searches are correct without this: a user's readable set of up to 20,000 chunks is
    scored exactly, larger ones by scanning. Optimising speeds up searches over larger
    readable sets. It holds the engine for its whole run (about a minute for 20,000
    chunks, much longer at a million), so stop the service first; the command refuses to
    run while the service holds the index.
    """
    with cli_runtime() as rt:
        index = rt.index()
        started = time.perf_counter()
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True
        ) as progress:
            progress.add_task("Optimising the vector index (this can take minutes)...")
            index.flush()
        seconds = round(time.perf_counter() - started, 1)
        stats_of = getattr(index, "stats", None)
        stats: dict[str, int] = stats_of() if stats_of is not None else {}
        with rt.sessions() as session:
            audit.record(
                session,
                actor=operator(),
                action="index.optimize",
                details={"seconds": seconds, **stats},
            )
            session.commit()
    out.print(f"Optimised in {seconds} s: {stats}")
