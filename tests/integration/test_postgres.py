"""The scale-out database: the same models, migrations and service on a real PostgreSQL.

This module overrides the `settings` fixture so that every fixture built on it (the
initialised instance, the runtime, the app, signed-in browsers) runs on a fresh PostgreSQL
database of a private cluster. Besides its own tests it re-runs, by importing them, the
existing tests whose guarantees rest on the database's locking: one TOTP code accepted once
under concurrency, no more sign-in tries than the back-off allows under concurrency, one
approval run once, the audit chain's serialised writers, and the
separation-of-duties checks serialised against each other (advisory lock).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from appliance.chat.retrieval import retrieve
from appliance.core import migrate
from appliance.core.config import Settings
from appliance.core.db import make_engine
from appliance.core.runtime import Runtime
from appliance.documents.tables import Document
from appliance.models_registry import metadata
from tests.fixtures.app import add_user, inline_worker, make_settings, submit
from tests.fixtures.auth import Account, Browser

# Re-run on PostgreSQL (collected here, so they use this module's `settings`).
from tests.integration.test_approvals_service import (  # noqa: F401
    test_two_admins_approving_at_once_run_the_action_once,
)
from tests.integration.test_audit_concurrency import (  # noqa: F401
    test_concurrent_audit_writers_keep_one_chain,
)
from tests.integration.test_auth_hardening import (  # noqa: F401
    test_concurrent_wrong_codes_get_no_more_tries_than_the_back_off_allows,
)
from tests.integration.test_auth_http import (  # noqa: F401
    test_concurrent_requests_with_one_code_exactly_one_wins,
    test_first_sign_in_enrols_totp_then_changes_password,
)
from tests.integration.test_documents_http import (  # noqa: F401
    test_admin_self_grant_on_confidential_needs_another_admin_once,
    test_an_unreadable_document_is_not_found_on_every_route,
)
from tests.integration.test_retention_http import (  # noqa: F401
    test_approved_bulk_delete_survives_one_documents_failure,
    test_shortening_retention_waits_for_a_second_admin,
)
from tests.integration.test_separation_of_duties import (  # noqa: F401
    as_,
    cast,
    test_hole1_a_puppet_account_reads_nothing_sensitive_without_a_second_admin,
    test_hole6_joining_a_group_while_it_is_granted_cannot_both_pass,
)


@pytest.fixture
def settings(tmp_path: Path, postgres_url: str) -> Settings:
    """A fresh instance whose metadata lives in PostgreSQL."""
    return make_settings(tmp_path / "instance", database={"url": postgres_url})


def test_the_runtime_really_runs_on_postgres(runtime: Runtime) -> None:
    assert runtime.engine.dialect.name == "postgresql"


def test_migrations_match_the_models_on_postgres(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)  # idempotent
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_ingest_and_acl_filtered_retrieval_on_postgres(
    runtime: Runtime, tmp_path: Path, browser_factory: Any, alice: Account
) -> None:
    add_user(runtime, "bob")
    path = tmp_path / "plan.md"
    path.write_text("# Plan\n\nThe vineyard pump ships in March.\n")
    doc_id = submit(runtime, path, owner="alice")
    assert inline_worker(runtime).run_until_idle(only={doc_id}) == 1
    with runtime.sessions() as s:
        assert s.get_one(Document, doc_id).state == "indexed"
        from appliance.auth import service as users

        for name, expected in (("alice", {doc_id}), ("bob", set())):
            user = users.get_user_by_name(s, name)
            found = retrieve(
                rt=runtime,
                session=s,
                user=user,
                query="When does the pump ship?",
                k=5,
                min_score=-1.0,
            )
            assert {src.doc_id for src in found} == expected, name
    b: Browser = browser_factory()
    b.sign_in(alice)
    listing = b.get("/api/documents").json()
    assert listing["total"] == 1, listing


def test_rating_an_answer_twice_keeps_one_row_on_postgres(runtime: Runtime) -> None:
    from appliance.auth import service as users
    from appliance.chat import service as chat_service
    from appliance.chat.tables import Conversation, Feedback, Message

    uid = add_user(runtime, "carol")
    with runtime.sessions() as s:
        conv = Conversation(owner_id=uid, title_ct=b"")
        s.add(conv)
        s.flush()
        answer = Message(conversation_id=conv.id, role="assistant", content_ct=b"")
        s.add(answer)
        s.commit()
        carol = users.get_user(s, uid)
        for rating in ("helpful", "not_helpful"):  # the second is the upsert's update path
            chat_service.rate_answer(session=s, user=carol, message_id=answer.id, rating=rating)
            s.commit()
        rows = s.execute(select(Feedback.rating)).scalars().all()
    assert rows == ["not_helpful"]
