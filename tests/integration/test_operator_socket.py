"""`appliance ask` and `search` reach a running service over its operator socket.

The embedded index belongs to the serve process; the socket answers for a named user with
exactly that user's access, and only the service account (0600 in a 0700 directory) can
connect.
"""

from __future__ import annotations

import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from appliance import operator_socket
from appliance.core.errors import NotFound
from appliance.core.runtime import Runtime
from appliance.main import create_app
from models.fakes import FakeGenerator
from tests.fixtures.app import add_user, inline_worker, submit


@pytest.fixture
def served(runtime: Runtime, tmp_path: Path) -> Iterator[Path]:
    """A service (with its background workers, as `serve` runs) and its socket's path."""
    runtime.settings.chat.min_score = 0.05
    add_user(runtime, "alice", group="staff")
    add_user(runtime, "mallory")
    (tmp_path / "parking.md").write_text(
        "# Parking\n\nVisitors park on level minus two, in spaces 40 to 60.\n"
    )
    submit(runtime, tmp_path / "parking.md", grants=("group:staff",))
    inline_worker(runtime).run_until_idle()
    runtime._generator = FakeGenerator("Visitors park on level minus two, in spaces 40 to 60.")
    with tempfile.TemporaryDirectory(prefix="op-", dir="/tmp") as short:
        runtime.settings.server.operator_socket = Path(short) / "run" / "op.sock"
        app = create_app(runtime.settings, runtime=runtime, background=True)
        with TestClient(app):
            yield runtime.settings.server.operator_socket


def test_search_and_ask_reach_the_running_service(served: Path) -> None:
    assert stat.S_IMODE(served.stat().st_mode) == 0o600
    assert stat.S_IMODE(served.parent.stat().st_mode) == 0o700
    client = operator_socket.reach(served)
    assert client is not None
    found = client.search(
        as_user="alice", question="Where do visitors park?", k=3, operator="operator:test"
    )
    assert found[0]["filename"] == "parking.md"
    events = list(
        client.ask(as_user="alice", question="Where do visitors park?", conversation=None)
    )
    kinds = [k for k, _ in events]
    assert kinds.index("evidence") < kinds.index("token")
    done = events[-1][1]
    assert done["claims"][0]["supported"] is True
    # Exactly the named user's access: mallory may read nothing.
    assert (
        client.search(
            as_user="mallory", question="Where do visitors park?", k=3, operator="operator:test"
        )
        == []
    )
    with pytest.raises(NotFound):
        client.search(as_user="nobody", question="x", k=3, operator="operator:test")


def test_no_service_means_no_client(tmp_path: Path) -> None:
    assert operator_socket.reach(tmp_path / "absent.sock") is None
    assert operator_socket.reach(None) is None
