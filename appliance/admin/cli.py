"""`appliance system ...`: the kill switch (pause answering or ingestion, read-only)."""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.admin import service
from appliance.admin.tables import ANSWERING_PAUSED, INGESTION_PAUSED, READ_ONLY
from appliance.cli.common import (
    AsJson,
    cli_runtime,
    operator,
    out,
    print_table,
    system_app,
    write_json,
)
from appliance.core.db import utcnow

Reason = Annotated[str | None, typer.Option(help="Why; shown to admins and audited.")]


def _flip(name: str, on: bool, reason: str | None) -> None:
    with cli_runtime() as rt, rt.sessions() as session:
        service.set_switch(session, name=name, on=on, actor=operator(), now=utcnow(), reason=reason)
        session.commit()
    out.print(f"{name}: {'on' if on else 'off'}")


@system_app.command("status")
def system_status(as_json: AsJson = False) -> None:
    """Show the switches and who flipped them last."""
    # start-up cost: admin.routes imports FastAPI and deps (~0.4 s), only for this command
    from appliance.admin.routes import switches_out

    with cli_runtime() as rt, rt.sessions() as session:
        states = switches_out(session, crypto=rt.crypto)
    if as_json:
        write_json([{"name": name, **s.model_dump(mode="json")} for name, s in states])
        return
    print_table(
        ["switch", "state", "changed by", "changed at (UTC)", "reason"],
        [
            [
                name,
                "ON" if s.on else "off",
                s.changed_by,
                s.changed_at.strftime("%Y-%m-%d %H:%M:%S") if s.changed_at else "",
                s.reason,
            ]
            for name, s in states
        ],
    )


@system_app.command("pause-answering")
def pause_answering(reason: Reason = None) -> None:
    """Questions get a maintenance message until `resume-answering`."""
    _flip(ANSWERING_PAUSED, True, reason)


@system_app.command("resume-answering")
def resume_answering(reason: Reason = None) -> None:
    """Answer questions again."""
    _flip(ANSWERING_PAUSED, False, reason)


@system_app.command("pause-ingestion")
def pause_ingestion(reason: Reason = None) -> None:
    """Uploads still queue; the worker starts no new document until `resume-ingestion`."""
    _flip(INGESTION_PAUSED, True, reason)


@system_app.command("resume-ingestion")
def resume_ingestion(reason: Reason = None) -> None:
    """Ingest queued documents again."""
    _flip(INGESTION_PAUSED, False, reason)


@system_app.command("read-only")
def read_only(reason: Reason = None) -> None:
    """Refuse every change over HTTP (questions too) except signing in and out."""
    _flip(READ_ONLY, True, reason)


@system_app.command("read-write")
def read_write(reason: Reason = None) -> None:
    """Allow changes again."""
    _flip(READ_ONLY, False, reason)
