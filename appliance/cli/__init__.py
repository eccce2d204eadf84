"""`appliance`: the operator's command on the server (shell access is the credential).

cli/ holds the root command and `main` (here), what every command shares (`common`: the
operator identity, settings, consoles, `with cli_runtime() as rt`, and every command
group) and the commands on core objects (`setup`: init, serve, config show; `models`;
`index`). Each domain's commands live in its own ``cli.py``; this module imports them all
and mounts every group once. cli/ is a face: it may import anything, and nothing but the
other faces (a domain's ``cli.py``, ``__main__``) imports it.

Every command honours APPLIANCE_CONFIG, APPLIANCE_DATA_DIR and APPLIANCE_KEY_FILE, so
several instances can run side by side. Commands that change something are audited as
done by ``operator:<os user>``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from appliance import __version__
from appliance.acl import cli as _acl  # noqa: F401 - docs grant, revoke, classify
from appliance.admin import cli as _admin  # noqa: F401 - system ...
from appliance.approvals import cli as _approvals  # noqa: F401 - approvals ...
from appliance.audit import cli as _audit  # noqa: F401 - audit ...
from appliance.auth import cli as _auth  # noqa: F401 - users ..., groups ...
from appliance.chat import cli as _chat  # noqa: F401 - search, ask
from appliance.cli import index as _index  # noqa: F401 - index stats, optimize
from appliance.cli import models as _models  # noqa: F401 - models list, add
from appliance.cli import setup as _setup  # noqa: F401 - init, serve, config show
from appliance.cli.common import (
    approvals_app,
    audit_app,
    config_app,
    docs_app,
    err,
    groups_app,
    index_app,
    jobs_app,
    keys_app,
    listed_in,
    models_app,
    out,
    retention_app,
    system_app,
    top_app,
    users_app,
)
from appliance.core.errors import ApplianceError
from appliance.core.runtime import set_offline_environment
from appliance.documents import cli as _documents  # noqa: F401 - ingest, docs list, delete
from appliance.jobs import cli as _jobs  # noqa: F401 - jobs run, list
from appliance.keys import cli as _keys  # noqa: F401 - keys rotate, retire, check
from appliance.privacy import cli as _privacy  # noqa: F401 - users erase, export
from appliance.retention import cli as _retention  # noqa: F401 - retention ..., docs hold ...

app = typer.Typer(
    help="Operate the on-premises RAG appliance on this server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=listed_in("init", "serve", "ingest", "search", "ask"),
)
# The `noqa: F401` imports above added their commands to these groups as they were imported.
app.add_typer(top_app)
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(docs_app, name="docs")
app.add_typer(audit_app, name="audit")
app.add_typer(jobs_app, name="jobs")
app.add_typer(users_app, name="users")
app.add_typer(groups_app, name="groups")
app.add_typer(approvals_app, name="approvals")
app.add_typer(system_app, name="system")
app.add_typer(keys_app, name="keys")
app.add_typer(index_app, name="index")
app.add_typer(retention_app, name="retention")


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


def main() -> None:
    """Entry point: run the command; turn our errors into a message and exit code 1."""
    set_offline_environment()
    try:
        app()
    except ApplianceError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        sys.exit(1)
