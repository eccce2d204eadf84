"""What every command shares: the operator, settings, consoles, `cli_runtime` and the groups."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from appliance import wiring
from appliance.auth.bootstrap import current_user_name, schema_is_current
from appliance.core.config import Settings, get_settings
from appliance.core.errors import NotFound
from appliance.core.runtime import Runtime, open_runtime

out = Console()
err = Console(stderr=True)


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
