"""`appliance ingest` and `appliance docs list|delete`: add, list and delete documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import select

from appliance.acl import rules
from appliance.acl import service as acl
from appliance.acl.principals import principals_for, resolve_principal
from appliance.admin import service as switches
from appliance.auth import service as users
from appliance.cli.common import (
    AsJson,
    cli_runtime,
    docs_app,
    err,
    operator,
    out,
    print_table,
    top_app,
    write_json,
)
from appliance.core.errors import NotFound
from appliance.core.runtime import Runtime
from appliance.documents import service as docs
from appliance.documents.ingestion import IngestionWorker, Parser
from appliance.documents.tables import Document


@top_app.command("ingest")
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
    with cli_runtime() as rt:
        settings = rt.settings
        files = sorted(_walk(paths))
        if not files:
            err.print("No files found under the given paths.")
            raise typer.Exit(1)
        with rt.sessions() as session:
            owner_user = (
                users.get_user_by_name(session, owner) if owner else users.first_admin(session)
            )
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
                    actor=operator(),
                )
                session.commit()
                if result.duplicate:
                    duplicates += 1
                if not result.duplicate or result.document.state == "queued":
                    # A queued duplicate was left by an interrupted run: process it now.
                    submitted[result.document.id] = f
            if switches.ingestion_paused(session):
                err.print(
                    "Ingestion is paused (kill switch): the files are queued and start once it "
                    "is resumed with `appliance system resume-ingestion` (or read-write)."
                )
        _process(rt, submitted, isolated=isolated_parser)
        with rt.sessions() as session:
            rows = (
                session.execute(select(Document).where(Document.id.in_(submitted))).scalars().all()
            )
            ok = [d for d in rows if d.state == "indexed"]
            bad = [d for d in rows if d.state == "failed"]
            out.print(f"{len(ok)} indexed, {len(bad)} failed, {duplicates} already present")
            for d in bad:
                out.print(f"  [red]failed[/red] {submitted[d.id]}: {d.error_reason}")
    if bad:
        raise typer.Exit(2)


def _process(rt: Runtime, submitted: dict[str, Path], *, isolated: bool) -> None:
    """Run the ingestion worker over the submitted documents, with one progress bar."""
    settings = rt.settings
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
                isolated=isolated,
            ),
            on_progress=on_progress,
        )
        try:
            worker.run_until_idle(only=set(submitted))
        finally:
            worker.close()
        # Documents that failed before reaching the worker (too large, empty) count as done.
        progress.update(overall, completed=len(submitted), detail="")


def _walk(paths: list[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from (f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            yield p
        else:
            raise NotFound(f"{p} does not exist.")


@docs_app.command("list")
def docs_list(
    as_user: Annotated[
        str | None, typer.Option("--as", help="Show only what this user may read.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List documents with their state (all of them, or those a user may read)."""
    with cli_runtime() as rt, rt.sessions() as session:
        query = select(Document).order_by(Document.created_at)
        if as_user:
            principals = principals_for(session, users.get_user_by_name(session, as_user))
            # Exactly what the user may read: live (indexed) and granted, nothing in progress.
            query = rules.readable_documents_query(principals).order_by(Document.created_at)
        rows = [
            {
                "id": d.id,
                "filename": docs.filename_of(rt.crypto, d),
                "state": d.state,
                "pages": d.pages,
                "chunks": d.chunks_total,
                "classification": d.classification,
                "reason": d.error_reason,
                "created_at": d.created_at,
            }
            for d in session.execute(query).scalars()
        ]
    if as_json:
        write_json(rows)
    elif rows:
        columns = ["id", "filename", "state", "pages", "chunks", "classification", "reason"]
        print_table(columns, [["" if r[c] is None else str(r[c]) for c in columns] for r in rows])
    else:
        out.print("No documents yet. Add some with `appliance ingest PATH`.")


@docs_app.command("delete")
def docs_delete(
    doc: Annotated[str, typer.Argument(help="Document id or unique filename.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a document: hidden from search at once, then its key shredded and data removed."""
    if not yes:
        typer.confirm(f"Delete the document {doc}?", abort=True)
    with cli_runtime() as rt, rt.sessions() as session:
        document = docs.resolve_document(session, rt.crypto, doc)
        doc_id, index = document.id, rt.index()
        acl.delete_document(
            session=session,
            index=index,
            crypto=rt.crypto,
            blobs=rt.blobs,
            doc=document,
            actor=operator(),
        )
    out.print(f"Deleted {doc_id}.")
