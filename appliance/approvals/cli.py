"""`appliance approvals ...`: list held actions; approve or reject them as a named admin."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Column

from appliance.approvals import service
from appliance.approvals.schemas import approval_out
from appliance.audit import service as audit
from appliance.auth import service as users
from appliance.cli.common import (
    AsJson,
    approvals_app,
    cli_runtime,
    operator,
    out,
    print_table,
    write_json,
)
from appliance.core.db import utcnow

AsAdmin = Annotated[
    str,
    typer.Option(
        "--as", help="The approving admin (a username); never the admin who asked for it."
    ),
]


@approvals_app.command("list")
def approvals_list(
    status: Annotated[
        str | None, typer.Option(help="pending, approved, rejected or expired.")
    ] = "pending",
    as_json: AsJson = False,
) -> None:
    """Show requests (pending ones by default), newest first."""
    with cli_runtime() as rt, rt.sessions() as session:
        rows = [
            approval_out(session, r, crypto=rt.crypto)
            for r in service.list_requests(session, now=utcnow(), status=status)
        ]
    if as_json:
        write_json([r.model_dump(mode="json") for r in rows])
        return
    print_table(
        [
            "kind",
            "for",
            "params",
            "requester",
            "status",
            Column("expires (UTC)", no_wrap=True),
            Column("id", no_wrap=True),
        ],
        [
            [
                r.kind,
                r.target,
                json.dumps(r.params, sort_keys=True),
                r.requester,
                r.status,
                r.expires_at.strftime("%Y-%m-%d %H:%M"),
                r.id,
            ]
            for r in rows
        ],
    )


def _decide(request_id: str, admin_name: str, *, approve: bool) -> str:
    with cli_runtime() as rt, rt.sessions() as session:
        admin = users.get_user_by_name(session, admin_name)
        if approve:
            req = service.approve(
                session=session,
                request_id=request_id,
                approver=admin,
                now=utcnow(),
                runtime=rt,
            )
        else:
            req = service.reject(
                session=session, request_id=request_id, decider=admin, now=utcnow()
            )
        # Who typed it on the server, beside the admin it was done as.
        audit.record(
            session,
            actor=operator(),
            action="approval.cli",
            target=f"approval:{req.id}",
            details={"as": admin.principal, "decision": req.status},
        )
        session.commit()
        return req.status


@approvals_app.command("approve")
def approvals_approve(
    request_id: Annotated[str, typer.Argument(help="The request id.")], as_admin: AsAdmin
) -> None:
    """Approve a request as this admin: its action runs now, exactly once."""
    status = _decide(request_id, as_admin, approve=True)
    out.print(f"Request {request_id}: {status}.")


@approvals_app.command("reject")
def approvals_reject(
    request_id: Annotated[str, typer.Argument(help="The request id.")], as_admin: AsAdmin
) -> None:
    """Reject a request as this admin; nothing runs."""
    status = _decide(request_id, as_admin, approve=False)
    out.print(f"Request {request_id}: {status}.")
