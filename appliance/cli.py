"""`appliance`: the operator's command on the server (shell access is the credential).

Every command honours APPLIANCE_CONFIG, APPLIANCE_DATA_DIR and APPLIANCE_KEY_FILE, so
several instances can run side by side. Commands that change something are audited as
done by ``operator:<os user>``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy import select

from appliance import __version__
from appliance.acl import rules
from appliance.acl.principals import add_member, principals_for, remove_member, resolve_principal
from appliance.admin.cli import system_app
from appliance.approvals.cli import approvals_app
from appliance.audit.cli import audit_app
from appliance.auth.bootstrap import current_user_name, init, schema_is_current
from appliance.core.config import Settings, get_settings, masked_dump
from appliance.core.errors import ApplianceError, NotFound
from appliance.core.places import CHAT_KEY
from appliance.jobs import cli as jobs_cli
from appliance.privacy import cli as privacy_cli
from appliance.retention import cli as retention_cli

app = typer.Typer(
    help="Operate the on-premises RAG appliance on this server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
models_app = typer.Typer(help="List, verify and register local models.", no_args_is_help=True)
docs_app = typer.Typer(
    help="List documents; grant, revoke, classify and delete them.", no_args_is_help=True
)
jobs_app = typer.Typer(help="Run scheduled jobs now; list them.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(docs_app, name="docs")
app.add_typer(audit_app, name="audit")
app.add_typer(jobs_app, name="jobs")
users_app = typer.Typer(
    help="Manage accounts: create, disable, reset passwords and second factors, unlock.",
    no_args_is_help=True,
)
groups_app = typer.Typer(help="Manage groups and their members.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(groups_app, name="groups")
app.add_typer(approvals_app, name="approvals")
app.add_typer(system_app, name="system")

out = Console()
err = Console(stderr=True)


def _operator() -> str:
    return f"operator:{current_user_name()}"


def _settings() -> Settings:
    return get_settings()


def _runtime(settings: Settings | None = None):  # type: ignore[no-untyped-def]
    from appliance.core.runtime import open_runtime

    settings = settings or _settings()
    if not schema_is_current(settings):
        raise NotFound(
            f"No appliance database at {settings.database_url}. Run `appliance init` first."
        )
    return open_runtime(settings)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


@app.command("init")
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
    from appliance.auth.passwords import check_policy

    settings = _settings()
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
    report = init(settings, admin_username=admin)
    if report.admin_password and initial_password is not None:
        from sqlalchemy.orm import Session

        from appliance.audit import service as audit
        from appliance.auth.passwords import hash_password
        from appliance.auth.tables import User
        from appliance.core.db import make_engine

        engine = make_engine(settings.database_url)
        try:
            with Session(engine) as session:
                user = session.execute(
                    select(User).where(User.username == report.admin_username)
                ).scalar_one()
                user.password_hash = hash_password(initial_password)
                user.must_change_password = True  # the vault copy must not stay a live login
                audit.record(
                    session,
                    actor=_operator(),
                    action="user.initial_password",
                    target=f"user:{user.id}",
                    details={"source": "file"},
                )
                session.commit()
        finally:
            engine.dispose()
    out.print(
        f"data dir   {settings.data_dir}" + ("  (created)" if report.created_data_dir else "")
    )
    out.print(
        f"key file   {settings.key_file}" + ("  (created)" if report.created_key_file else "")
    )
    out.print(f"key store  {settings.keystore_path}")
    out.print(f"database   {masked_dump(settings)['effective']['database_url']}  (migrated)")
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


@app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address (setting server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (setting server.port).")] = None,
) -> None:
    """Serve the API and web UI, and run the ingestion worker and jobs in-process."""
    import uvicorn

    from appliance.main import create_app

    settings = _settings()
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    if not schema_is_current(settings):
        raise NotFound("The database is not initialised. Run `appliance init` first.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    out.print(f"Appliance {__version__} on http://{settings.server.host}:{settings.server.port}")
    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level="info",
        proxy_headers=True,
        server_header=False,
    )


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings (secrets masked)."""
    data = masked_dump(_settings())
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


@models_app.command("list")
def models_list(
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Hash every file (slow).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Show bundled and registered models, and whether each file matches its sha256."""
    from models.manifest import ModelRegistry
    from models.manifest import verify as verify_entry
    from models.protocols import ModelError

    settings = _settings()
    registry = ModelRegistry(settings.models_dir / "registry.json")
    active = {settings.models.chat_model, settings.models.embedder}
    rows = []
    for entry in registry.entries():
        verified: bool | None = None
        problem = None
        if verify:
            try:
                verify_entry(entry)
                verified = True
            except ModelError as exc:
                verified, problem = False, str(exc)
        rows.append(
            {
                "name": entry.name,
                "kind": entry.kind,
                "source": entry.source,
                "context_length": entry.context_length,
                "licence": entry.licence,
                "verified": verified,
                "problem": problem,
                "active": entry.name in active,
                "path": str(entry.path),
            }
        )
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table("name", "kind", "source", "context", "licence", "verified", "active", "path")
    for row in rows:
        if row["verified"] is None:
            status = "not checked"
        else:
            status = "[green]yes[/green]" if row["verified"] else f"[red]NO[/red]: {row['problem']}"
        table.add_row(
            str(row["name"]),
            str(row["kind"]),
            str(row["source"]),
            str(row["context_length"]),
            str(row["licence"]),
            status,
            "yes" if row["active"] else "",
            str(row["path"]),
        )
    out.print(table)


@models_app.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="A unique name for the model.")],
    path: Annotated[Path, typer.Argument(help="Path of the GGUF file on this server.")],
    sha256: Annotated[str, typer.Option(help="Expected sha256 of the file (from its publisher).")],
    licence: Annotated[str, typer.Option(help="Licence of the model.")] = "unknown",
) -> None:
    """Register a GGUF chat model; refused unless the file matches the given sha256."""
    from models.manifest import ModelRegistry

    settings = _settings()
    entry = ModelRegistry(settings.models_dir / "registry.json").add(
        name=name, path=path.resolve(), sha256=sha256.lower(), licence=licence
    )
    rt = _runtime(settings)
    with rt.sessions() as session:
        from appliance.audit import service as audit

        audit.record(
            session,
            actor=_operator(),
            action="model.register",
            target=f"model:{entry.name}",
            details={"sha256": entry.sha256, "context_length": entry.context_length},
        )
        session.commit()
    out.print(
        f"Registered {entry.name} ({entry.context_length} tokens). "
        f'Use it with models.chat_model = "{entry.name}" in the settings.'
    )


@app.command("ingest")
def ingest_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (recursive).")],
    owner: Annotated[
        str | None, typer.Option(help="Username owning the documents (default: first admin).")
    ] = None,
    grant: Annotated[
        list[str] | None,
        typer.Option(help="Principal allowed to read: user:NAME, group:NAME or everyone. Repeat."),
    ] = None,
    classification: Annotated[
        str | None, typer.Option(help="public, internal, confidential or personal.")
    ] = None,
    isolated_parser: Annotated[
        bool,
        typer.Option(
            "--isolated-parser/--inline-parser", help="Parse in a child process (default)."
        ),
    ] = True,
) -> None:
    """Ingest files or folders with a progress bar; failures are listed with their reason."""
    from appliance.auth import service as users
    from appliance.documents import service as docs
    from appliance.documents.ingestion import IngestionWorker, Parser
    from appliance.documents.tables import Document

    rt = _runtime()
    settings = rt.settings
    files = sorted(_walk(paths))
    if not files:
        err.print("No files found under the given paths.")
        raise typer.Exit(1)
    with rt.sessions() as session:
        owner_user = users.get_user_by_name(session, owner) if owner else users.first_admin(session)
        if owner_user is None:
            raise NotFound("No admin exists yet. Run `appliance init` first.")
        principals = [resolve_principal(session, g) for g in (grant or [])]
        submitted: dict[str, Path] = {}
        duplicates = 0
        for f in files:
            result = docs.submit_file(
                session=session,
                crypto=rt.crypto,
                blobs=rt.blobs,
                path=f,
                filename=f.name,
                owner=owner_user,
                grants=principals,
                classification=classification or settings.ingest.default_classification,
                max_bytes=settings.max_upload_bytes,
                actor=_operator(),
            )
            session.commit()
            if result.duplicate:
                duplicates += 1
            if not result.duplicate or result.document.state == "queued":
                # A queued duplicate was left by an interrupted run: process it now.
                submitted[result.document.id] = f
        from appliance.admin import service as switches

        if switches.ingestion_paused(session):
            err.print(
                "Ingestion is paused (kill switch): the files are queued and start once it is "
                "resumed with `appliance system resume-ingestion` (or read-write)."
            )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    with progress:
        overall = progress.add_task("documents", total=len(submitted), detail="")
        finished: set[str] = set()

        def on_progress(doc_id: str, state: str, done: int, total: int) -> None:
            name = submitted.get(doc_id, Path(doc_id)).name
            detail = f"{name}: {state}" + (f" {done}/{total} chunks" if total else "")
            if state in ("indexed", "failed") and doc_id not in finished:
                finished.add(doc_id)
                progress.advance(overall)
            progress.update(overall, detail=detail)

        worker = IngestionWorker(
            rt,
            parser=Parser(
                max_bytes=settings.max_upload_bytes,
                ocr=settings.ingest.ocr,
                isolated=isolated_parser,
            ),
            on_progress=on_progress,
        )
        try:
            worker.run_until_idle(only=set(submitted))
        finally:
            worker.close()
        # Documents that failed before reaching the worker (too large, empty) count as done.
        progress.update(overall, completed=len(submitted), detail="")
    with rt.sessions() as session:
        rows = session.execute(select(Document).where(Document.id.in_(submitted))).scalars().all()
        ok = [d for d in rows if d.state == "indexed"]
        bad = [d for d in rows if d.state == "failed"]
        out.print(f"{len(ok)} indexed, {len(bad)} failed, {duplicates} already present")
        for d in bad:
            out.print(f"  [red]failed[/red] {submitted[d.id]}: {d.error_reason}")
    rt.close()
    if bad:
        raise typer.Exit(2)


def _walk(paths: list[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from (f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            yield p
        else:
            raise NotFound(f"{p} does not exist.")


@app.command("search")
def search_cmd(
    question: Annotated[str, typer.Argument(help="The question, as a user would ask it.")],
    as_user: Annotated[str, typer.Option("--as", help="Search with exactly this user's access.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many passages.")] = 6,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the ranked passages retrieval would hand the model for this user."""
    from appliance.audit import service as audit
    from appliance.auth import service as users
    from appliance.chat.retrieval import retrieve

    rt = _runtime()
    try:
        with rt.sessions() as session:
            user = users.get_user_by_name(session, as_user)
            sources = retrieve(
                rt=rt,
                session=session,
                user=user,
                query=question,
                k=k,
                min_score=rt.settings.chat.min_score,
            )
            audit.record(
                session,
                actor=_operator(),
                action="search.as_user",
                target=f"user:{user.id}",
                details={"chunks": [f"{s.doc_id}:{s.chunk_no}" for s in sources]},
            )
            session.commit()
    finally:
        rt.close()
    if as_json:
        sys.stdout.write(json.dumps([s.public() for s in sources], indent=2) + "\n")
        return
    if not sources:
        out.print("No passage this user may read matches the question.")
        return
    table = Table("#", "score", "document", "title", "page", "heading", "snippet")
    for s in sources:
        table.add_row(
            str(s.rank),
            f"{s.score:.3f}",
            s.filename,
            s.title or "",
            "" if s.page is None else str(s.page),
            s.heading or "",
            s.text[:80].replace("\n", " "),
        )
    out.print(table)


@app.command("ask")
def ask_cmd(
    question: Annotated[str, typer.Argument(help="The question.")],
    as_user: Annotated[str, typer.Option("--as", help="Ask with exactly this user's access.")],
    conversation: Annotated[
        str | None, typer.Option(help="Continue this conversation (id).")
    ] = None,
) -> None:
    """Print a streamed answer for this user, then the sources it cites."""
    from appliance.auth import service as users
    from appliance.chat.pipeline import answer

    rt = _runtime()
    try:
        with rt.sessions() as session:
            user_id = users.get_user_by_name(session, as_user).id
        for event in answer(
            rt=rt,
            scheduler=rt.scheduler,
            user_id=user_id,
            question=question,
            conversation_id=conversation,
            client="cli",
        ):
            if event.kind == "token":
                sys.stdout.write(event.data["text"])
                sys.stdout.flush()
            elif event.kind == "sources":
                sys.stdout.write("\n\n")
                for src in event.data["sources"]:
                    page = f", page {src['page']}" if src.get("page") else ""
                    heading = f", {src['heading']}" if src.get("heading") else ""
                    out.print(f"[{src['marker']}] {src['filename']}{page}{heading}")
            elif event.kind == "done":
                err.print(f"conversation {event.data['conversation']}")
    finally:
        rt.close()


@docs_app.command("list")
def docs_list(
    as_user: Annotated[
        str | None, typer.Option("--as", help="Show only what this user may read.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List documents with their state (all of them, or those a user may read)."""
    from appliance.auth import service as users
    from appliance.documents import service as docs
    from appliance.documents.tables import Document

    rt = _runtime()
    with rt.sessions() as session:
        query = select(Document).order_by(Document.created_at)
        if as_user:
            principals = principals_for(session, users.get_user_by_name(session, as_user))
            # Exactly what the user may read: live (indexed) and granted, nothing in progress.
            query = rules.readable_documents_query(principals).order_by(Document.created_at)
        rows = session.execute(query).scalars().all()
        table = Table("id", "filename", "state", "pages", "chunks", "classification", "reason")
        for d in rows:
            item = {
                "id": d.id,
                "filename": docs.filename_of(rt.crypto, d),
                "state": d.state,
                "pages": d.pages,
                "chunks": d.chunks_total,
                "classification": d.classification,
                "reason": d.error_reason,
            }
            if as_json:
                sys.stdout.write(json.dumps(item) + "\n")
            else:
                table.add_row(*(("" if v is None else str(v)) for v in item.values()))
        if not as_json:
            if rows:
                out.print(table)
            else:
                out.print("No documents yet. Add some with `appliance ingest PATH`.")
    rt.close()


def _doc_change(ref: str, change: str, **kw: str) -> str:
    """Apply one access change to a document as the operator; returns its id."""
    from appliance.acl import service as acl
    from appliance.documents import service as docs

    rt = _runtime()
    try:
        with rt.sessions() as session:
            doc = docs.resolve_document(session, rt.crypto, ref)
            doc_id, actor, index = doc.id, _operator(), rt.index()
            if change == "grant":
                acl.grant(
                    session=session,
                    index=index,
                    doc=doc,
                    principal=resolve_principal(session, kw["principal"]),
                    level=kw["level"],
                    actor=actor,
                )
            elif change == "revoke":
                principal = resolve_principal(session, kw["principal"])
                if not acl.revoke(
                    session=session, index=index, doc=doc, principal=principal, actor=actor
                ):
                    raise NotFound(f"{kw['principal']} has no grant on {ref}.")
            elif change == "classify":
                acl.classify(
                    session=session,
                    index=index,
                    doc=doc,
                    classification=kw["classification"],
                    actor=actor,
                )
            elif change == "delete":
                acl.delete_document(
                    session=session,
                    index=index,
                    crypto=rt.crypto,
                    blobs=rt.blobs,
                    doc=doc,
                    actor=actor,
                )
    finally:
        rt.close()
    return doc_id


@docs_app.command("grant")
def docs_grant(
    doc: Annotated[str, typer.Argument(help="Document id or unique filename.")],
    principal: Annotated[str, typer.Argument(help="user:NAME, group:NAME or everyone.")],
    level: Annotated[str, typer.Option(help="read or manage.")] = "read",
) -> None:
    """Let a user, a group or everyone read (or manage) a document; applies at once."""
    doc_id = _doc_change(doc, "grant", principal=principal, level=level)
    out.print(f"Granted {level} on {doc_id} to {principal}.")


@docs_app.command("revoke")
def docs_revoke(
    doc: Annotated[str, typer.Argument(help="Document id or unique filename.")],
    principal: Annotated[str, typer.Argument(help="user:NAME, group:NAME or everyone.")],
) -> None:
    """Take a grant away (not the last manage grant); the next search no longer finds it."""
    doc_id = _doc_change(doc, "revoke", principal=principal)
    out.print(f"Revoked {principal} on {doc_id}.")


@docs_app.command("classify")
def docs_classify(
    doc: Annotated[str, typer.Argument(help="Document id or unique filename.")],
    level: Annotated[str, typer.Argument(help="public, internal, confidential or personal.")],
) -> None:
    """Set a document's classification."""
    doc_id = _doc_change(doc, "classify", classification=level)
    out.print(f"{doc_id} is now {level}.")


@docs_app.command("delete")
def docs_delete(
    doc: Annotated[str, typer.Argument(help="Document id or unique filename.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a document: hidden from search at once, then its key shredded and data removed."""
    if not yes:
        typer.confirm(f"Delete the document {doc}?", abort=True)
    doc_id = _doc_change(doc, "delete")
    out.print(f"Deleted {doc_id}.")


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Username (1-64 characters, no ':').")],
    admin: Annotated[bool, typer.Option("--admin", help="Give the admin role.")] = False,
) -> None:
    """Create an account and print its one-time password (changed at first sign-in)."""
    from appliance.auth import service as users

    rt = _runtime()
    with rt.sessions() as session:
        user, password = users.create_user(
            session, username=name, role="admin" if admin else "user", actor=_operator()
        )
        session.commit()
    rt.close()
    out.print(
        f"Created [bold]{user.username}[/bold] ({user.role}). One-time password: "
        f"[bold]{password}[/bold]\nIt is shown once; the person changes it and enrols an "
        "authenticator app at first sign-in."
    )


@users_app.command("list")
def users_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List accounts with role, state, second factor and lockout."""
    from appliance.auth import service as users
    from appliance.auth import throttle
    from appliance.core.db import utcnow

    rt = _runtime()
    with rt.sessions() as session:
        table = Table("username", "role", "active", "totp", "must change password", "locked until")
        for u in users.list_users(session):
            locked = throttle.account_locked_until(session, username=u.username, now=utcnow())
            item = {
                "id": u.id,
                "username": u.username,
                "role": u.role,
                "active": u.is_active,
                "totp_enrolled": u.totp_enrolled,
                "must_change_password": u.must_change_password,
                "locked_until": locked.isoformat() if locked else None,
            }
            if as_json:
                sys.stdout.write(json.dumps(item) + "\n")
            else:
                table.add_row(
                    u.username,
                    u.role,
                    "yes" if u.is_active else "[red]no[/red]",
                    "enrolled" if u.totp_enrolled else "not yet",
                    "yes" if u.must_change_password else "",
                    locked.isoformat() if locked else "",
                )
    rt.close()
    if not as_json:
        out.print(table)


def _user_action(name: str, action: str) -> str | None:
    from appliance.auth import service as users
    from appliance.core.db import utcnow

    rt = _runtime()
    result: str | None = None
    with rt.sessions() as session:
        user = users.get_user_by_name(session, name)
        now, actor = utcnow(), _operator()
        if action == "disable":
            users.set_active(session, user_id=user.id, active=False, actor=actor, now=now)
        elif action == "enable":
            users.set_active(session, user_id=user.id, active=True, actor=actor, now=now)
        elif action == "reset-password":
            result = users.reset_password(session, user_id=user.id, actor=actor, now=now)
        elif action == "reset-totp":
            users.reset_totp(session, user_id=user.id, actor=actor, now=now)
        elif action == "unlock":
            users.unlock(session, user_id=user.id, actor=actor)
        elif action == "delete":
            users.delete_user(session, user_id=user.id, actor=actor)
        session.commit()
    if action == "delete":
        # The conversations went with the account; shredding the key erases old backups too.
        rt.crypto.delete_data_key(CHAT_KEY, user.id)
    rt.close()
    return result


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="Username.")]) -> None:
    """Disable an account; its sessions and API tokens end at once."""
    _user_action(name, "disable")
    out.print(f"Disabled {name}; its sessions and API tokens ended.")


@users_app.command("enable")
def users_enable(name: Annotated[str, typer.Argument(help="Username.")]) -> None:
    """Enable a disabled account."""
    _user_action(name, "enable")
    out.print(f"Enabled {name}.")


@users_app.command("reset-password")
def users_reset_password(name: Annotated[str, typer.Argument(help="Username.")]) -> None:
    """Print a new one-time password; the account's sessions and API tokens end."""
    password = _user_action(name, "reset-password")
    out.print(
        f"New one-time password for {name}: [bold]{password}[/bold]\n"
        "It is shown once and must be changed at the next sign-in."
    )


@users_app.command("reset-totp")
def users_reset_totp(name: Annotated[str, typer.Argument(help="Username.")]) -> None:
    """Forget the account's authenticator and recovery codes; it enrols again at sign-in."""
    _user_action(name, "reset-totp")
    out.print(f"Second factor of {name} reset; they enrol a new one at the next sign-in.")


@users_app.command("unlock")
def users_unlock(name: Annotated[str, typer.Argument(help="Username.")]) -> None:
    """Lift the account's sign-in lockout."""
    _user_action(name, "unlock")
    out.print(f"Unlocked {name}.")


@users_app.command("delete")
def users_delete(
    name: Annotated[str, typer.Argument(help="Username.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an account (not the last admin, nor one that owns documents)."""
    if not yes:
        typer.confirm(f"Delete the account {name}?", abort=True)
    _user_action(name, "delete")
    out.print(f"Deleted {name}.")


@groups_app.command("create")
def groups_create(name: Annotated[str, typer.Argument(help="Group name.")]) -> None:
    """Create a group."""
    from appliance.auth import service as users

    rt = _runtime()
    with rt.sessions() as session:
        users.create_group(session, name=name, actor=_operator())
        session.commit()
    rt.close()
    out.print(f"Created group {name}.")


@groups_app.command("list")
def groups_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List groups and their members."""
    from appliance.auth import service as users

    rt = _runtime()
    with rt.sessions() as session:
        table = Table("group", "members")
        for group, members in users.list_groups(session):
            names = [m.username for m in members]
            if as_json:
                sys.stdout.write(json.dumps({"name": group.name, "members": names}) + "\n")
            else:
                table.add_row(group.name, ", ".join(names))
    rt.close()
    if not as_json:
        out.print(table)


def _membership(group: str, user: str, *, add: bool) -> bool:
    from appliance.auth import service as users

    rt = _runtime()
    with rt.sessions() as session:
        g = users.get_group_by_name(session, group)
        u = users.get_user_by_name(session, user)
        change = add_member if add else remove_member
        changed = change(session, group_id=g.id, user_id=u.id, actor=_operator())
        session.commit()
    rt.close()
    return changed


@groups_app.command("add-member")
def groups_add_member(
    group: Annotated[str, typer.Argument(help="Group name.")],
    user: Annotated[str, typer.Argument(help="Username.")],
) -> None:
    """Add a user to a group."""
    changed = _membership(group, user, add=True)
    out.print(f"Added {user} to {group}." if changed else f"{user} is already in {group}.")


@groups_app.command("remove-member")
def groups_remove_member(
    group: Annotated[str, typer.Argument(help="Group name.")],
    user: Annotated[str, typer.Argument(help="Username.")],
) -> None:
    """Remove a user from a group."""
    changed = _membership(group, user, add=False)
    out.print(f"Removed {user} from {group}." if changed else f"{user} was not in {group}.")


@groups_app.command("delete")
def groups_delete(name: Annotated[str, typer.Argument(help="Group name.")]) -> None:
    """Delete a group and its memberships."""
    from appliance.auth import service as users

    rt = _runtime()
    with rt.sessions() as session:
        users.delete_group(
            session, group_id=users.get_group_by_name(session, name).id, actor=_operator()
        )
        session.commit()
    rt.close()
    out.print(f"Deleted group {name}.")


# -- keys ------------------------------------------------------------------------------

keys_app = typer.Typer(
    help="Rotate and retire key-encryption keys; check every data key.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add a new primary KEK and rewrap every data key under it (no content re-encrypted).

    Run it again after an interruption: it finishes the rewrapping before it would start
    another rotation. Put the new key file into your vault before the next deployment.
    """
    from appliance.keys import rotation

    rt = _runtime()
    try:
        with (
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
                actor=_operator(),
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    finally:
        rt.close()
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
    from appliance.keys import rotation

    rt = _runtime()
    try:
        with rt.sessions() as session:
            report = rotation.retire_audited(
                session=session,
                crypto=rt.crypto,
                key_file=rt.settings.key_file,
                kek_id=kek_id,
                actor=_operator(),
            )
    finally:
        rt.close()
    out.print(
        f"Retired {report.retired}. The key file holds: {', '.join(report.remaining)}. "
        "Copy it into your vault; key-store backups older than the rotation need the old "
        "key file to be read."
    )


@keys_app.command("check")
def keys_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Unwrap every data key and match the key store with the database; exit 1 on a problem."""
    from appliance.keys.check import check_keys

    rt = _runtime()
    try:
        with rt.sessions() as session:
            report = check_keys(session=session, crypto=rt.crypto)
    finally:
        rt.close()
    if as_json:
        sys.stdout.write(json.dumps(report.public(), indent=2) + "\n")
    else:
        table = Table("KEK", "primary", "data keys")
        for kek, count in report.keks.items():
            table.add_row(kek, "yes" if kek == report.primary else "", str(count))
        out.print(table)
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


# -- index -----------------------------------------------------------------------------

index_app = typer.Typer(
    help="Inspect and optimise the vector index (optimise with the service stopped).",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")


@index_app.command("stats")
def index_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Points, segments and HNSW-indexed vectors of the vector index."""
    rt = _runtime()
    try:
        index = rt.index()
        stats_of = getattr(index, "stats", None)
        stats: dict[str, int] = stats_of() if stats_of is not None else {"points": index.count()}
    finally:
        rt.close()
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
    from appliance.audit import service as audit

    rt = _runtime()
    try:
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
                actor=_operator(),
                action="index.optimize",
                details={"seconds": seconds, **stats},
            )
            session.commit()
    finally:
        rt.close()
    out.print(f"Optimised in {seconds} s: {stats}")


# -- jobs, retention, privacy (the commands live beside their domains) -----------------

jobs_app.command("run")(jobs_cli.jobs_run)
jobs_app.command("list")(jobs_cli.jobs_list)
app.add_typer(retention_cli.retention_app, name="retention")
docs_app.command("hold")(retention_cli.docs_hold)
docs_app.command("release")(retention_cli.docs_release)
docs_app.command("retain")(retention_cli.docs_retain)
users_app.command("erase")(privacy_cli.users_erase)
users_app.command("export")(privacy_cli.users_export)


def main() -> None:
    """Entry point: run the command; turn our errors into a message and exit code 1."""
    from appliance.core.runtime import set_offline_environment

    set_offline_environment()
    try:
        app()
    except ApplianceError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        sys.exit(1)
