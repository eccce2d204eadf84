"""`appliance users erase|export`: right to be forgotten and right of access, as the operator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from appliance.auth import service as users
from appliance.cli.common import cli_runtime, operator, out, users_app
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput
from appliance.privacy import service as privacy


@users_app.command("erase")
def users_erase(
    name: Annotated[str, typer.Argument(help="Username.")],
    documents: Annotated[
        str, typer.Option(help="What happens to their documents: delete or transfer.")
    ] = "delete",
    to: Annotated[
        str | None, typer.Option("--to", help="Username receiving the documents (transfer).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase an account and everything of theirs (conversations, sessions, tokens, second
    factor, memberships, grants, owned documents deleted or transferred); audit keeps only
    the opaque user id. Documents under legal hold must be transferred."""
    if documents not in ("delete", "transfer"):
        raise InvalidInput("--documents is delete or transfer.")
    if documents == "transfer" and not to:
        raise InvalidInput("Name who receives the documents: --to USERNAME.")
    if not yes:
        typer.confirm(
            f"Erase {name} and {'delete' if documents == 'delete' else 'transfer'} their "
            "documents? This cannot be undone.",
            abort=True,
        )
    with cli_runtime() as rt:
        with rt.sessions() as session:
            user_id = users.get_user_by_name(session, name).id
            target = users.get_user_by_name(session, to).id if to else None
        report = privacy.erase_user(
            rt=rt,
            user_id=user_id,
            documents=documents,
            transfer_to=target,
            actor=operator(),
            now=utcnow(),
        )
    counts = report.counts()
    out.print(
        f"Erased {name} (user:{user_id}): "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
    )


@users_app.command("export")
def users_export(
    name: Annotated[str, typer.Argument(help="Username.")],
    output: Annotated[Path, typer.Option(help="Zip file to write (not overwritten).")],
) -> None:
    """Write a zip of a user's own data: profile, conversations, owned documents' metadata,
    feedback, and the audit events they did (no password hashes or secrets)."""
    if output.exists():
        raise InvalidInput(f"{output} exists; choose another file.")
    with cli_runtime() as rt:
        with rt.sessions() as session:
            user_id = users.get_user_by_name(session, name).id
        data = privacy.export_user(rt=rt, user_id=user_id, actor=operator(), now=utcnow())
    # The archive holds decrypted conversations: readable by its owner only.
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    out.print(f"Wrote {output} ({len(data)} bytes).")
