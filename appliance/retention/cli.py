"""`appliance retention ...` and `docs hold|release|retain`: policies, legal holds, dates."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer

from appliance.cli.common import (
    cli_runtime,
    docs_app,
    operator,
    out,
    print_table,
    retention_app,
    write_json,
)
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput
from appliance.documents import service as docs
from appliance.retention import service as retention


@retention_app.command("show")
def retention_show(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object instead of the table: the policies (a list) and the "
            "number of documents under legal hold.",
        ),
    ] = False,
) -> None:
    """Print each policy: the value in force, the setting, and any admin override."""
    with cli_runtime() as rt, rt.sessions() as session:
        effective = retention.effective_policy(session, rt.settings)
        overrides = retention.overrides(session)
        rows = [
            {
                "policy": key,
                "effective": effective[key],
                "setting": getattr(rt.settings.retention, key),
                "override": json.loads(overrides[key].value) if key in overrides else None,
                "overridden": key in overrides,
                "by": overrides[key].updated_by if key in overrides else None,
            }
            for key in retention.POLICY_KEYS
        ]
        held = retention.held_count(session)
    if as_json:
        write_json({"policies": rows, "documents_on_hold": held})
        return
    print_table(
        ["policy", "in force (days)", "setting", "override", "by"],
        [
            [
                str(r["policy"]),
                "forever" if r["effective"] is None else str(r["effective"]),
                "forever" if r["setting"] is None else str(r["setting"]),
                ("forever" if r["override"] is None else str(r["override"]))
                if r["overridden"]
                else "",
                str(r["by"] or ""),
            ]
            for r in rows
        ],
    )
    out.print(f"{held} document(s) under legal hold.")


def _days(text: str) -> int | None:
    if text.lower() in ("forever", "none", "null", "0"):
        return None if text != "0" else 0
    try:
        return int(text)
    except ValueError as exc:
        raise InvalidInput(f"{text!r} is not a number of days (or 'forever').") from exc


@retention_app.command("set")
def retention_set(
    values: Annotated[
        list[str] | None,
        typer.Argument(help="POLICY=DAYS pairs, e.g. internal_days=365 chat_history_days=90."),
    ] = None,
    reset: Annotated[
        list[str] | None, typer.Option(help="Drop a policy's override (back to the setting).")
    ] = None,
) -> None:
    """Override retention policies (DAYS, or 'forever'); audited with before and after."""
    changes: dict[str, int | None] = {}
    for pair in values or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"Write POLICY=DAYS, not {pair!r}.")
        changes[key.strip()] = _days(value.strip())
    if not changes and not reset:
        raise InvalidInput("Nothing to change: give POLICY=DAYS pairs or --reset POLICY.")
    with cli_runtime() as rt, rt.sessions() as session:
        after = retention.set_policy(
            session=session,
            settings=rt.settings,
            changes=changes,
            reset=list(reset or []),
            actor=operator(),
            now=utcnow(),
        )
        session.commit()
    for key in [*changes, *(reset or [])]:
        days = after[key]
        out.print(f"{key} = {'forever' if days is None else days}")


def _doc_id(ref: str) -> str:
    with cli_runtime() as rt, rt.sessions() as session:
        return docs.resolve_document(session, rt.crypto, ref).id


@docs_app.command("hold")
def docs_hold(
    doc: Annotated[str, typer.Argument(help="Document id or unique filename.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept with the hold).")] = None,
) -> None:
    """Put a document under legal hold: nothing deletes it until the hold is released."""
    doc_id = _doc_id(doc)
    with cli_runtime() as rt, rt.sessions() as session:
        placed = retention.place_hold(
            session=session, doc_id=doc_id, actor=operator(), now=utcnow(), reason=reason
        )
        session.commit()
    out.print(f"{doc_id} is under legal hold." if placed else f"{doc_id} was already on hold.")


@docs_app.command("release")
def docs_release(
    doc: Annotated[str, typer.Argument(help="Document id or unique filename.")],
) -> None:
    """Lift a document's legal hold (the operator's shell needs no second admin; audited)."""
    doc_id = _doc_id(doc)
    with cli_runtime() as rt, rt.sessions() as session:
        lifted = retention.lift_hold(session=session, doc_id=doc_id, actor=operator())
        session.commit()
    out.print(f"Hold on {doc_id} lifted." if lifted else f"{doc_id} was not on hold.")


@docs_app.command("retain")
def docs_retain(
    doc: Annotated[str, typer.Argument(help="Document id or unique filename.")],
    until: Annotated[
        str,
        typer.Argument(help="ISO date or time (UTC if no zone), e.g. 2030-01-01; 'none' to clear."),
    ],
) -> None:
    """Set when the retention job deletes a document (replaces its classification's period)."""
    when: dt.datetime | None = None
    if until.lower() != "none":
        try:
            when = dt.datetime.fromisoformat(until)
        except ValueError as exc:
            raise InvalidInput(f"{until!r} is not an ISO date, e.g. 2030-01-01.") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    doc_id = _doc_id(doc)
    with cli_runtime() as rt, rt.sessions() as session:
        retention.set_retain_until(session=session, doc_id=doc_id, until=when, actor=operator())
        session.commit()
    out.print(
        f"{doc_id}: retained until {when.isoformat() if when else 'its classification says'}."
    )
