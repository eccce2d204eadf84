"""What every command shares: operator, settings, consoles, tables, JSON, `cli_runtime`, groups."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text
from typer.core import TyperGroup

from appliance import wiring
from appliance.auth.bootstrap import current_user_name, schema_is_current
from appliance.core.config import Settings, get_settings
from appliance.core.errors import NotFound
from appliance.core.runtime import Runtime, open_runtime


class _Console(Console):
    """A Rich console that wraps text to a terminal's width, and never into a pipe or file.

    Rich takes 80 columns when its stream is not a terminal, so a long path or reason
    written to `grep` or a log would be broken over lines; there it writes whole lines.
    """

    def print(self, *objects: Any, soft_wrap: bool | None = None, **options: Any) -> None:
        """Print as Rich does; whole lines (soft wrap) when the stream is not a terminal."""
        if soft_wrap is None and not self.file.isatty():
            soft_wrap = True
        super().print(*objects, soft_wrap=soft_wrap, **options)


out = _Console()
err = _Console(stderr=True)

Cell = str | Text | None
"""A table cell: plain text (never read as Rich markup), a styled `Text`, or None (empty)."""

AsJson = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the rows as one JSON array of objects instead of the table, for scripts.",
    ),
]


SHORT_CELL = 16
"""On a terminal, a column whose values are all this short stays whole; longer ones fold."""


def print_table(columns: Sequence[str | Column], rows: Iterable[Sequence[Cell]]) -> None:
    """Print a table on stdout with every value whole, never cut with an ellipsis.

    On a terminal it is a Rich table: columns of short values stay on one line and long
    values fold onto further lines. Into a pipe or a file it is plain lines, one per row,
    columns aligned by spaces, no box and no width limit, so `grep`, `cut`, `sort` and
    `less` see full names, ids and paths. Pass a `Column(header, no_wrap=True)` for a
    column a terminal should keep on one line (an id to copy, a time).
    """
    cells = [[v if isinstance(v, Text) else Text(v or "") for v in row] for row in rows]
    heads = [c if isinstance(c, Column) else Column(c) for c in columns]
    if out.file.isatty():
        table = Table(*(_folding(c, [row[i] for row in cells]) for i, c in enumerate(heads)))
        for row in cells:
            table.add_row(*row)
        out.print(table)
        return
    lines = [[str(c.header) for c in heads]]
    lines += [[" ".join(t.plain.replace("\t", " ").splitlines()) for t in row] for row in cells]
    widths = [max(cell_len(line[i]) for line in lines) for i in range(len(heads))]
    for line in lines:
        padded = [v + " " * (w - cell_len(v)) for v, w in zip(line, widths, strict=True)]
        out.file.write("  ".join(padded).rstrip() + "\n")


def _folding(column: Column, values: list[Text]) -> Column:
    """A terminal column that folds long values and keeps a column of short ones whole."""
    short = all(v.cell_len <= SHORT_CELL for v in values)
    return replace(column, overflow="fold", no_wrap=column.no_wrap or short)


def write_json(data: object) -> None:
    """Write one JSON document to stdout and nothing else: times in ISO 8601, paths as text."""
    out.file.write(json.dumps(data, indent=2, default=_json_value) + "\n")


def _json_value(value: object) -> object:
    if isinstance(value, dt.date):  # datetimes too
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def operator() -> str:
    """Who a change is audited as: ``operator:<os user>`` (shell access is the credential)."""
    return f"operator:{current_user_name()}"


def settings() -> Settings:
    """The effective settings (file, environment and APPLIANCE_* locations)."""
    return get_settings()


@functools.cache
def _wire() -> None:
    """Register approval executors and the audit name lookup once, before any service runs."""
    wiring.install()


@contextmanager
def cli_runtime(settings: Settings | None = None) -> Iterator[Runtime]:
    """The runtime for one command, wired and closed after it; NotFound before `appliance init`."""
    chosen = settings or get_settings()
    if not schema_is_current(chosen):
        raise NotFound(
            f"No appliance database at {chosen.database_url}. Run `appliance init` first."
        )
    _wire()
    rt = open_runtime(chosen)
    try:
        yield rt
    finally:
        rt.close()


def listed_in(*order: str) -> type[TyperGroup]:
    """A group class whose help lists these commands first, in this order, then the rest.

    Commands reach a group from several modules, and the order modules are imported in is
    not the order an operator reads them in.
    """

    class Listed(TyperGroup):
        def list_commands(self, ctx: Any) -> list[str]:
            """The group's commands in the listed order."""
            known = len(order)
            return sorted(  # stable: the rest keep the order they were added in
                super().list_commands(ctx),
                key=lambda n: order.index(n) if n in order else known,
            )

    return Listed


# -- the command tree's groups: a module adds commands with `@docs_app.command("hold")`, and
# `appliance.cli` mounts each group once. They live here, not beside their commands, so that
# every cli module can be imported first without `appliance.cli` finding it half-built.

# The top-level commands (init, serve, ingest, search, ask), merged into the root command.
top_app = typer.Typer()
config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
models_app = typer.Typer(help="List, verify and register local models.", no_args_is_help=True)
docs_app = typer.Typer(
    help="List documents; grant, revoke, classify and delete them.",
    no_args_is_help=True,
    cls=listed_in("list", "grant", "revoke", "classify", "delete", "hold", "release", "retain"),
)
audit_app = typer.Typer(
    help="Verify, search and export the audit log; write signed checkpoints.",
    no_args_is_help=True,
)
jobs_app = typer.Typer(help="Run scheduled jobs now; list them.", no_args_is_help=True)
users_app = typer.Typer(
    help="Manage accounts: create, disable, reset passwords and second factors, unlock.",
    no_args_is_help=True,
)
groups_app = typer.Typer(help="Manage groups and their members.", no_args_is_help=True)
approvals_app = typer.Typer(
    help="List, approve and reject actions held for a second admin.", no_args_is_help=True
)
system_app = typer.Typer(
    help="The kill switch: pause answering or ingestion, or make the appliance read-only.",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="Rotate and retire key-encryption keys; check every data key.", no_args_is_help=True
)
index_app = typer.Typer(
    help="Inspect and optimise the vector index (optimise with the service stopped).",
    no_args_is_help=True,
)
retention_app = typer.Typer(
    help="Show and change retention policies (documents, chat, sessions, audit log).",
    no_args_is_help=True,
)
