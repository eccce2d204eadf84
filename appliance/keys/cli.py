"""`appliance keys rotate|retire|check`: key-encryption keys and the data keys they wrap."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from appliance.cli.common import cli_runtime, err, keys_app, operator, out, print_table, write_json
from appliance.keys import rotation
from appliance.keys.check import check_keys


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add a new primary KEK and rewrap every data key under it (no content re-encrypted).

    Run it again after an interruption: it finishes the rewrapping before it would start
    another rotation. Put the new key file into your vault before the next deployment.
    """
    with (
        cli_runtime() as rt,
        rt.sessions() as session,
        Progress(
            TextColumn("rewrapping data keys"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("rewrap", total=None)
        report = rotation.rotate_audited(
            session=session,
            crypto=rt.crypto,
            key_file=rt.settings.key_file,
            actor=operator(),
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if report.resumed:
        out.print(
            f"Finished an interrupted rotation: every data key is now wrapped by "
            f"{report.primary}. Run `appliance keys rotate` again for a new KEK."
        )
    else:
        out.print(f"New primary KEK [bold]{report.primary}[/bold] added to {rt.settings.key_file}.")
    out.print(f"Rewrapped {report.rewrapped} data key(s); {report.unchanged} needed no change.")
    if report.failed:
        for line in report.failed:
            err.print(f"[red]not rewrapped:[/red] {line}")
        err.print("Run `appliance keys check` for the reasons.")
        raise typer.Exit(1)
    out.print(
        "[bold yellow]Copy the new key file into your vault now[/bold yellow] (it still holds "
        f"the old KEKs: {', '.join(report.previous_keks) or 'none'}). Once the vault and a "
        "fresh key-store backup hold the new state, retire old KEKs with "
        "`appliance keys retire KEK_ID`."
    )


@keys_app.command("retire")
def keys_retire(
    kek_id: Annotated[str, typer.Argument(help="The old KEK to remove from the key file.")],
) -> None:
    """Remove an old KEK from the key file; refused while any data key is wrapped by it."""
    with cli_runtime() as rt, rt.sessions() as session:
        report = rotation.retire_audited(
            session=session,
            crypto=rt.crypto,
            key_file=rt.settings.key_file,
            kek_id=kek_id,
            actor=operator(),
        )
    out.print(
        f"Retired {report.retired}. The key file holds: {', '.join(report.remaining)}. "
        "Copy it into your vault; key-store backups older than the rotation need the old "
        "key file to be read."
    )


@keys_app.command("check")
def keys_check(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object instead of the table: ok, primary, keks (data keys "
            "per KEK), data_keys, rotation_pending, problems.",
        ),
    ] = False,
) -> None:
    """Unwrap every data key and match the key store with the database; exit 1 on a problem."""
    with cli_runtime() as rt, rt.sessions() as session:
        report = check_keys(session=session, crypto=rt.crypto)
    if as_json:
        write_json(report.public())
    else:
        print_table(
            ["KEK", "primary", "data keys"],
            [
                [kek, "yes" if kek == report.primary else "", str(count)]
                for kek, count in report.keks.items()
            ],
        )
        if report.rotation_pending:
            out.print(
                f"{report.rotation_pending} data key(s) are not yet wrapped by the primary "
                "KEK: run `appliance keys rotate` to finish."
            )
        for p in report.problems:
            out.print(f"[red]{p.what}[/red] {p.key}: {p.detail}", highlight=False)
        if report.ok:
            out.print(f"OK: {report.data_keys} data keys unwrap; every object has its key.")
    if not report.ok:
        raise typer.Exit(1)
