"""`appliance init`, `serve` and `config show`: set up, run and inspect this instance."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance import __version__
from appliance.audit import service as audit
from appliance.auth.bootstrap import init, schema_is_current
from appliance.auth.passwords import check_policy, hash_password
from appliance.auth.tables import User
from appliance.cli.common import config_app, operator, out, settings, top_app
from appliance.core.config import masked_dump
from appliance.core.db import make_engine
from appliance.core.errors import NotFound
from models.manifest import SMALL_MODEL_NOTE, SMOLLM2_NAME


@top_app.command("init")
def init_cmd(
    admin: Annotated[str, typer.Option(help="Username of the first admin.")] = "admin",
    admin_password_file: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Give the first admin the password in this file (e.g. placed from Ansible "
                "Vault) instead of a printed one-time password. Used only when the admin is "
                "created; never printed. It must still be changed at first sign-in."
            ),
        ),
    ] = None,
) -> None:
    """Create the data dir, key file, key store, database and first admin (idempotent)."""
    current = settings()
    initial_password = None
    if admin_password_file is not None:
        try:
            # One trailing newline (echo, editors) is not part of the password.
            initial_password = admin_password_file.read_text("utf-8").removesuffix("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(
                f"cannot read {admin_password_file} ({type(exc).__name__}); "
                "give a readable UTF-8 file holding the password.",
                param_hint="--admin-password-file",
            ) from None
        # Checked before anything is created, so a bad password leaves nothing half-done.
        check_policy(initial_password, username=admin)
    report = init(current, admin_username=admin)
    if report.admin_password and initial_password is not None:
        engine = make_engine(current.database_url)
        try:
            with Session(engine) as session:
                user = session.execute(
                    select(User).where(User.username == report.admin_username)
                ).scalar_one()
                user.password_hash = hash_password(initial_password)
                user.must_change_password = True  # the vault copy must not stay a live login
                audit.record(
                    session,
                    actor=operator(),
                    action="user.initial_password",
                    target=f"user:{user.id}",
                    details={"source": "file"},
                )
                session.commit()
        finally:
            engine.dispose()
    out.print(f"data dir   {current.data_dir}" + ("  (created)" if report.created_data_dir else ""))
    out.print(f"key file   {current.key_file}" + ("  (created)" if report.created_key_file else ""))
    out.print(f"key store  {current.keystore_path}")
    out.print(f"database   {masked_dump(current)['effective']['database_url']}  (migrated)")
    if report.admin_password and initial_password is not None:
        out.print(
            f"\n[bold]First admin created.[/bold] Username: [bold]{report.admin_username}[/bold]  "
            f"Password: the one in {admin_password_file} (not shown).\n"
            "It must be changed at first sign-in. "
            "If you lose it, run `appliance users reset-password admin`."
        )
    elif report.admin_password:
        out.print(
            f"\n[bold]First admin created.[/bold] Username: [bold]{report.admin_username}[/bold]  "
            f"One-time password: [bold]{report.admin_password}[/bold]\n"
            "This password is shown once and must be changed at first sign-in. "
            "If you lose it, run `appliance users reset-password admin`."
        )
    if report.created_key_file:
        out.print(
            "\n[bold yellow]Back up the key file now[/bold yellow] (e.g. into Ansible Vault), "
            "apart from the data dir. Without it the encrypted data cannot be read."
        )
    if current.models.chat_model == SMOLLM2_NAME:
        out.print(f"\n{SMALL_MODEL_NOTE}", highlight=False, markup=False)


@top_app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address (setting server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (setting server.port).")] = None,
) -> None:
    """Serve the API and web UI, and run the ingestion worker and jobs in-process."""
    # start-up cost: uvicorn only for serve
    import uvicorn

    # start-up cost: the FastAPI app (FastAPI, routes, pages) only for serve
    from appliance.main import create_app

    current = settings()
    if host is not None:
        current.server.host = host
    if port is not None:
        current.server.port = port
    if not schema_is_current(current):
        raise NotFound("The database is not initialised. Run `appliance init` first.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    out.print(f"Appliance {__version__} on http://{current.server.host}:{current.server.port}")
    uvicorn.run(
        create_app(current),
        host=current.server.host,
        port=current.server.port,
        log_level="info",
        proxy_headers=False,  # the app applies [server] trusted_proxies itself (middleware.proxy)
        server_header=False,
    )


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings (secrets masked)."""
    data = masked_dump(settings())
    if as_json:
        out.print_json(json.dumps(data))
        return
    for section, value in data.items():
        if isinstance(value, dict):
            out.print(f"[bold]\\[{section}][/bold]")
            for k, v in value.items():
                out.print(f"  {k} = {json.dumps(v)}")
        else:
            out.print(f"{section} = {json.dumps(value)}")
