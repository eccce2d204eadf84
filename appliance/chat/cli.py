"""`appliance search|ask --as USER`: retrieval and answers with exactly that user's access.

While `appliance serve` runs it holds the embedded index, so these commands ask it over
the operator socket (`appliance.operator_socket`); otherwise they open the data
themselves. The output is the same either way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from appliance.chat import operator as asking
from appliance.cli.common import (
    cli_runtime,
    err,
    operator,
    out,
    print_table,
    settings,
    top_app,
    write_json,
)

if TYPE_CHECKING:
    from appliance.operator_socket import OperatorClient


def _reach() -> OperatorClient | None:
    """The running `appliance serve` over its operator socket, or None if none listens."""
    # start-up cost: operator_socket imports FastAPI and uvicorn (~0.6 s) for its server half
    from appliance import operator_socket

    return operator_socket.reach(settings().operator_socket_path)


@top_app.command("search")
def search_cmd(
    question: Annotated[str, typer.Argument(help="The question, as a user would ask it.")],
    as_user: Annotated[str, typer.Option("--as", help="Search with exactly this user's access.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many passages.")] = 6,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the passages as one JSON array of objects instead of the table."
        ),
    ] = False,
) -> None:
    """Print the passages an answer would show this user as its evidence, best first."""
    client = _reach()
    if client is not None:
        rows = client.search(as_user=as_user, question=question, k=k, operator=operator())
    else:
        with cli_runtime() as rt:
            found = asking.search_as(
                rt=rt, as_user=as_user, question=question, k=k, operator=operator()
            )
            rows = [s.public() for s in found]
    if as_json:
        write_json(rows)
        return
    if not rows:
        out.print("No passage this user may read matches the question.")
        return
    print_table(
        ["#", "score", "document", "title", "page", "heading", "snippet"],
        [
            [
                str(s["rank"]),
                f"{s['score']:.3f}",
                s["filename"],
                s["title"],
                "" if s["page"] is None else str(s["page"]),
                s["heading"],
                " ".join(str(s["snippet"]).split()),
            ]
            for s in rows
        ],
    )


def _events(as_user: str, question: str, conversation: str | None) -> Iterator[tuple[str, Any]]:
    client = _reach()
    if client is not None:
        yield from client.ask(as_user=as_user, question=question, conversation=conversation)
        return
    with cli_runtime() as rt:
        for event in asking.ask_as(
            rt=rt, as_user=as_user, question=question, conversation=conversation
        ):
            yield event.kind, event.data


def _where(p: dict[str, Any]) -> str:
    page = f", page {p['page']}" if p.get("page") else ""
    heading = f", {p['heading']}" if p.get("heading") else ""
    return f"[{p['rank']}] {p['title'] or p['filename']} ({p['filename']}{page}{heading})"


@top_app.command("ask")
def ask_cmd(
    question: Annotated[str, typer.Argument(help="The question.")],
    as_user: Annotated[str, typer.Option("--as", help="Ask with exactly this user's access.")],
    conversation: Annotated[
        str | None, typer.Option(help="Continue this conversation (id).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object: answer, evidence, claims, abstained, timings.",
        ),
    ] = False,
) -> None:
    """Print the evidence, then the answer as it is written, then the checked answer."""
    evidence: list[dict[str, Any]] = []
    done: dict[str, Any] = {}
    streamed: list[str] = []
    for kind, data in _events(as_user, question, conversation):
        if kind == "evidence":
            evidence = data["passages"]
            if not as_json:
                out.print("From your documents:" if evidence else "No matching passage.")
                for p in evidence:
                    out.print(_where(p), highlight=False)
                    for s in p["sentences"]:
                        if s["highlight"]:
                            out.print(f"    \u201c{s['text']}\u201d", highlight=False)
                out.print()
        elif kind == "status" and not as_json:
            err.print(data["message"], style="dim")
        elif kind == "token":
            streamed.append(data["text"])
            if not as_json:
                sys.stdout.write(data["text"])
                sys.stdout.flush()
        elif kind == "done":
            done = data
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "conversation": done.get("conversation"),
                    "answer": done.get("text"),
                    "evidence": evidence,
                    "claims": done.get("claims", []),
                    "unsupported": done.get("unsupported", 0),
                    "abstained": done.get("abstained", False),
                    "cut_short": done.get("cut_short", False),
                    "timings": {
                        key: done.get("timings", {}).get(key)
                        for key in ("evidence_ms", "first_token_ms", "total_ms")
                    },
                },
                indent=2,
            )
            + "\n"
        )
        return
    sys.stdout.write("\n")
    final = str(done.get("text", ""))
    if final.strip() != "".join(streamed).strip():
        out.print("\nChecked answer:", style="bold")
        out.print(final, highlight=False)
    checked = [c for c in done.get("claims", []) if c.get("checked")]
    if checked:
        supported = sum(1 for c in checked if c["supported"])
        out.print(
            f"\n{supported} of {len(checked)} sentences found in your documents"
            + (f"; {len(checked) - supported} not found." if supported < len(checked) else "."),
            highlight=False,
        )
    if done:
        err.print(f"conversation {done['conversation']}")
