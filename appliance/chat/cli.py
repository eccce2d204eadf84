"""`appliance search|ask --as USER`: retrieval and answers with exactly that user's access."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from appliance.audit import service as audit
from appliance.auth import service as users
from appliance.chat.pipeline import answer
from appliance.chat.retrieval import retrieve
from appliance.cli.common import cli_runtime, err, operator, out, top_app


@top_app.command("search")
def search_cmd(
    question: Annotated[str, typer.Argument(help="The question, as a user would ask it.")],
    as_user: Annotated[str, typer.Option("--as", help="Search with exactly this user's access.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many passages.")] = 6,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the ranked passages retrieval would hand the model for this user."""
    with cli_runtime() as rt, rt.sessions() as session:
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
            actor=operator(),
            action="search.as_user",
            target=f"user:{user.id}",
            details={"chunks": [f"{s.doc_id}:{s.chunk_no}" for s in sources]},
        )
        session.commit()
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


@top_app.command("ask")
def ask_cmd(
    question: Annotated[str, typer.Argument(help="The question.")],
    as_user: Annotated[str, typer.Option("--as", help="Ask with exactly this user's access.")],
    conversation: Annotated[
        str | None, typer.Option(help="Continue this conversation (id).")
    ] = None,
) -> None:
    """Print a streamed answer for this user, then the sources it cites."""
    with cli_runtime() as rt:
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
