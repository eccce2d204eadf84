"""`appliance index stats/optimize`: the operator's view of the vector index."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.audit.tables import AuditEvent
from appliance.core.runtime import open_runtime
from tests.fixtures.app import inline_worker, instance_env, make_settings, run_cli, submit


@pytest.mark.slow
def test_stats_and_optimize_and_refusal_while_the_index_is_held(
    tmp_path: Path, fake_embedder: object
) -> None:
    root = tmp_path / "instance"
    env = {**os.environ, **instance_env(root)}
    assert run_cli(env, "init").returncode == 0
    settings = make_settings(root)
    rt = open_runtime(settings, embedder=fake_embedder)  # type: ignore[arg-type]
    doc = tmp_path / "memo.md"
    doc.write_text("# Memo\n\nThe pump ships in March.\n")
    submit(rt, doc, grants=("everyone",))
    assert inline_worker(rt).run_until_idle() == 1
    rt.index()  # the "service" holds the index now
    held = run_cli(env, "index", "optimize")
    assert held.returncode == 1
    assert "another process" in held.stderr
    rt.close()

    stats = run_cli(env, "index", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["points"] >= 1
    done = run_cli(env, "index", "optimize")
    assert done.returncode == 0, done.stderr
    assert "Optimised" in done.stdout
    rt = open_runtime(settings, embedder=fake_embedder)  # type: ignore[arg-type]
    try:
        with rt.sessions() as s:
            actions = s.execute(select(AuditEvent.action)).scalars().all()
        assert "index.optimize" in actions
    finally:
        rt.close()
