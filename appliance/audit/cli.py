"""`appliance audit ...`: verify the chain, write signed checkpoints, search and export.

The operator's shell is the credential (DESIGN.md): exporting here needs no approval, and is
audited as done by ``operator:<os user>``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column
from sqlalchemy.orm import Session

from appliance.audit import query as audit_query
from appliance.audit import service as audit
from appliance.audit.query import Filters
from appliance.cli.common import (
    AsJson,
    audit_app,
    cli_runtime,
    operator,
    out,
    print_table,
    write_json,
)
from appliance.core.errors import InvalidInput

FromOpt = Annotated[
    str | None, typer.Option("--from", help="Entries at or after this time (ISO 8601, UTC).")
]
ToOpt = Annotated[str | None, typer.Option("--to", help="Entries before this time (ISO 8601).")]
ActorOpt = Annotated[
    str | None, typer.Option(help="Who: a username, user:<id>, operator:<name>, system...")
]
ActionOpt = Annotated[
    str | None, typer.Option(help="What: 'auth' matches auth.*; a trailing '*' is a prefix.")
]
TargetOpt = Annotated[str | None, typer.Option(help="On what, e.g. doc:<id> or user:<id>.")]
OutcomeOpt = Annotated[str | None, typer.Option(help="ok, denied, refused, locked, ...")]


def _time(value: str | None, option: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"{option} takes an ISO 8601 time, e.g. 2026-11-01T00:00:00Z.") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _filters(
    session: Session,
    since: str | None,
    until: str | None,
    actor: str | None,
    action: str | None,
    target: str | None,
    outcome: str | None,
) -> Filters:
    # start-up cost: audit.routes imports FastAPI and deps (~0.5 s), only when filtering
    from appliance.audit.routes import resolve_actor

    return Filters(
        since=_time(since, "--from"),
        until=_time(until, "--to"),
        actor=resolve_actor(session, actor),
        action=action,
        target=target,
        outcome=outcome,
    )


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint file (or JSON-lines export) written earlier: also detect a cut tail."
        ),
    ] = None,
) -> None:
    """Check the hash chain; exit 1 if an entry was edited, removed, inserted or moved.

    With --checkpoint, the checkpoint's signature is checked and its head must still be in
    the chain, so removing the newest entries is detected too.
    """
    with cli_runtime() as rt:
        cp = None
        if checkpoint is not None:
            first_line = checkpoint.read_text().splitlines()[0] if checkpoint.exists() else ""
            cp = audit.Checkpoint.from_json(first_line)
            audit.check_checkpoint(cp, crypto=rt.crypto)
        with rt.sessions() as session:
            result = audit.verify(session, checkpoint=cp)
    if result.ok:
        pruned = f" ({result.pruned} pruned before)" if result.pruned else ""
        against = f"; checkpoint of {cp.time} holds" if cp is not None else ""
        out.print(f"OK: {result.entries} entries{pruned}, head {result.head}{against}")
        return
    out.print(f"[red]BROKEN[/red] at entry {result.at_id}: {result.problem}", highlight=False)
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    output: Annotated[Path, typer.Option(help="File to write the signed checkpoint to.")],
) -> None:
    """Write a signed checkpoint of the chain's head; keep it off this server.

    `appliance audit verify --checkpoint FILE` later proves no entry up to this head was
    removed, including the newest ones.
    """
    with cli_runtime() as rt, rt.sessions() as session:
        audit.record(session, actor=operator(), action="audit.checkpoint", target="audit")
        session.commit()
        cp = audit.checkpoint(session, crypto=rt.crypto)
    output.write_text(cp.to_json() + "\n")
    out.print(f"Checkpoint: {cp.entries} entries, head {cp.head_id} {cp.head_hash} -> {output}")


@audit_app.command("search")
def audit_search(
    since: FromOpt = None,
    until: ToOpt = None,
    actor: ActorOpt = None,
    action: ActionOpt = None,
    target: TargetOpt = None,
    outcome: OutcomeOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most entries to show.")] = 50,
    as_json: AsJson = False,
) -> None:
    """Show the newest matching entries; erased users appear as pseudonyms."""
    with cli_runtime() as rt, rt.sessions() as session:
        filters = _filters(session, since, until, actor, action, target, outcome)
        page = audit_query.search(session, filters=filters, limit=limit, crypto=rt.crypto)
    if as_json:
        write_json([entry.to_json() for entry in page.entries])
        return
    print_table(
        [
            "id",
            Column("time (UTC)", no_wrap=True),
            "actor",
            "action",
            "target",
            "outcome",
            "details",
        ],
        [
            [
                str(e.id),
                e.ts.strftime("%Y-%m-%d %H:%M:%S"),
                e.actor_name,
                e.action,
                e.target_name or e.target,
                e.outcome,
                json.dumps(e.details, sort_keys=True),
            ]
            for e in page.entries
        ],
    )


@audit_app.command("export")
def audit_export(
    output: Annotated[Path, typer.Option(help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    since: FromOpt = None,
    until: ToOpt = None,
    actor: ActorOpt = None,
    action: ActionOpt = None,
    target: TargetOpt = None,
    outcome: OutcomeOpt = None,
) -> None:
    """Export matching entries (oldest first) with a signed checkpoint; audited.

    JSON lines carry the checkpoint as their first line; for both formats it is also
    written to OUTPUT.checkpoint.json. CSV cells that a spreadsheet would run as a formula
    start with a quote.
    """
    with cli_runtime() as rt, rt.sessions() as session:
        filters = _filters(session, since, until, actor, action, target, outcome)
        cp = audit_query.start_export(
            session, filters=filters, fmt=fmt, actor=operator(), crypto=rt.crypto
        )
        with output.open("w", encoding="utf-8", newline="") as fh:
            for piece in audit_query.export_lines(
                session, filters=filters, fmt=fmt, cp=cp, crypto=rt.crypto
            ):
                fh.write(piece)
    sidecar = output.with_name(output.name + ".checkpoint.json")
    sidecar.write_text(cp.to_json() + "\n")
    out.print(f"Exported up to entry {cp.head_id} -> {output} (checkpoint {sidecar})")
