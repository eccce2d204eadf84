"""`appliance docs grant|revoke|classify`: who may read a document, and its classification."""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.acl import service as acl
from appliance.acl.principals import resolve_principal
from appliance.cli.common import cli_runtime, docs_app, operator, out
from appliance.core.errors import NotFound
from appliance.documents import service as docs

DocRef = Annotated[str, typer.Argument(help="Document id or unique filename.")]
PrincipalRef = Annotated[str, typer.Argument(help="user:NAME, group:NAME or everyone.")]


@docs_app.command("grant")
def docs_grant(
    doc: DocRef,
    principal: PrincipalRef,
    level: Annotated[str, typer.Option(help="read or manage.")] = "read",
) -> None:
    """Let a user, a group or everyone read (or manage) a document; applies at once."""
    with cli_runtime() as rt, rt.sessions() as session:
        document = docs.resolve_document(session, rt.crypto, doc)
        doc_id, index = document.id, rt.index()
        acl.grant(
            session=session,
            index=index,
            doc=document,
            principal=resolve_principal(session, principal),
            level=level,
            actor=operator(),
        )
    out.print(f"Granted {level} on {doc_id} to {principal}.")


@docs_app.command("revoke")
def docs_revoke(doc: DocRef, principal: PrincipalRef) -> None:
    """Take a grant away (not the last manage grant); the next search no longer finds it."""
    with cli_runtime() as rt, rt.sessions() as session:
        document = docs.resolve_document(session, rt.crypto, doc)
        doc_id, index = document.id, rt.index()
        revoked = acl.revoke(
            session=session,
            index=index,
            doc=document,
            principal=resolve_principal(session, principal),
            actor=operator(),
        )
        if not revoked:
            raise NotFound(f"{principal} has no grant on {doc}.")
    out.print(f"Revoked {principal} on {doc_id}.")


@docs_app.command("classify")
def docs_classify(
    doc: DocRef,
    level: Annotated[str, typer.Argument(help="public, internal, confidential or personal.")],
) -> None:
    """Set a document's classification."""
    with cli_runtime() as rt, rt.sessions() as session:
        document = docs.resolve_document(session, rt.crypto, doc)
        doc_id, index = document.id, rt.index()
        acl.classify(
            session=session, index=index, doc=document, classification=level, actor=operator()
        )
    out.print(f"{doc_id} is now {level}.")
