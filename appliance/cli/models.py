"""`appliance models list|add`: the bundled and registered model files, checked by sha256."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from appliance.audit import service as audit
from appliance.cli.common import (
    AsJson,
    cli_runtime,
    models_app,
    operator,
    out,
    print_table,
    settings,
    write_json,
)
from models.manifest import ModelRegistry
from models.manifest import verify as verify_entry
from models.protocols import ModelError


@models_app.command("list")
def models_list(
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Hash every file (slow).")
    ] = True,
    as_json: AsJson = False,
) -> None:
    """Show bundled and registered models, and whether each file matches its sha256."""
    current = settings()
    registry = ModelRegistry(current.models_dir / "registry.json")
    active = {current.models.chat_model, current.models.embedder}
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
        write_json(rows)
        return
    print_table(
        ["name", "kind", "source", "context", "licence", "verified", "active", "path"],
        [
            [
                str(row["name"]),
                str(row["kind"]),
                str(row["source"]),
                str(row["context_length"]),
                str(row["licence"]),
                _verified(row["verified"], row["problem"]),
                "yes" if row["active"] else "",
                str(row["path"]),
            ]
            for row in rows
        ],
    )


def _verified(verified: object, problem: object) -> Text:
    if verified is None:
        return Text("not checked")
    if verified:
        return Text("yes", style="green")
    return Text.assemble(("NO", "red"), f": {problem}")


@models_app.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="A unique name for the model.")],
    path: Annotated[Path, typer.Argument(help="Path of the GGUF file on this server.")],
    sha256: Annotated[str, typer.Option(help="Expected sha256 of the file (from its publisher).")],
    licence: Annotated[str, typer.Option(help="Licence of the model.")] = "unknown",
) -> None:
    """Register a GGUF chat model; refused unless the file matches the given sha256."""
    current = settings()
    entry = ModelRegistry(current.models_dir / "registry.json").add(
        name=name, path=path.resolve(), sha256=sha256.lower(), licence=licence
    )
    with cli_runtime(current) as rt, rt.sessions() as session:
        audit.record(
            session,
            actor=operator(),
            action="model.register",
            target=f"model:{entry.name}",
            details={"sha256": entry.sha256, "context_length": entry.context_length},
        )
        session.commit()
    out.print(
        f"Registered {entry.name} ({entry.context_length} tokens). "
        f'Use it with models.chat_model = "{entry.name}" in the settings.'
    )
