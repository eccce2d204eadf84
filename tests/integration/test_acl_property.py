"""Property test of DESIGN invariants 1 and 2: ACL changes apply at once, no more, no fewer.

A hypothesis state machine drives random users, groups, memberships, documents and grants
through the real services (`appliance.acl.service`, `appliance.auth.service`) on a real SQLite
file and a real Qdrant Edge shard. After every step, for every user, the ACL-filtered vector
search, chat retrieval (`appliance.chat.retrieval.retrieve`) and the library query return
exactly what a small reference model of the rules allows.

Documents are ingested cheaply: the file is submitted as an upload is (encrypted blob, the
owner's `manage` grant), then two encrypted chunk rows and hidden points are written as the
worker writes them, and the worker's own `_publish` makes them visible in one operation.
Parsing (tens of ms per file) and the index's disk flush (~100 ms) are skipped; that is what
lets well over 10,000 checked steps fit in a few minutes. tests/integration/test_ingestion.py
covers the full worker path.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from appliance.acl import rules
from appliance.acl import service as acl
from appliance.acl.principals import add_member, principals_for, remove_member
from appliance.auth import service as users
from appliance.auth.tables import Group, User
from appliance.chat import pipeline
from appliance.chat.retrieval import retrieve
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput
from appliance.core.places import DOC_KEY
from appliance.core.runtime import Runtime
from appliance.documents import service as docs
from appliance.documents.ingestion import IngestionWorker, Parser
from appliance.documents.tables import EMBEDDING, INDEXED, Chunk, Document
from ingest.index import ChunkPoint
from models.fakes import FakeGenerator

N_USERS = 3
N_GROUPS = 2
MAX_DOCS = 6
EXAMPLES = 180  # ~65 steps each on average: a margin over MIN_TOTAL_STEPS
STEPS_PER_EXAMPLE = 100
MIN_TOTAL_STEPS = 10_000
BUDGET_SECONDS = 300.0
OPERATOR = "operator:property-test"
QUERY = "alpha"
ANSWER_EVERY = 60  # a whole answer on every 60th check: the step budget holds


class Stats:
    """Counts across all examples of one run."""

    steps = 0
    checks = 0
    examples = 0
    check_seconds = 0.0
    answers = 0
    by_rule: ClassVar[dict[str, int]] = {}

    @classmethod
    def step(cls, rule: str) -> None:
        """Count one step of a rule."""
        cls.steps += 1
        cls.by_rule[rule] = cls.by_rule.get(rule, 0) + 1


class AclMachine(RuleBasedStateMachine):
    """Random ACL changes against the real services, checked against a reference model."""

    rt: Runtime  # set by the test before the machine runs
    tmp: Path

    def __init__(self) -> None:
        """Create this example's users and groups (fresh names; earlier examples are gone)."""
        super().__init__()
        Stats.examples += 1
        rt = self.rt
        self.worker = IngestionWorker(
            rt, parser=Parser(max_bytes=rt.settings.max_upload_bytes, ocr=False, isolated=False)
        )
        self.query_vector = rt.embedder().embed([QUERY])[0]
        tag = uuid.uuid4().hex[:8]
        with rt.sessions() as s:
            made = [
                User(username=f"u{i}-{tag}", password_hash="-", must_change_password=False)
                for i in range(N_USERS)
            ]
            groups = [Group(name=f"g{i}-{tag}") for i in range(N_GROUPS)]
            s.add_all([*made, *groups])
            s.commit()
            self.user_ids = [u.id for u in made]
            self.group_ids = [g.id for g in groups]
        # The reference model.
        self.active = dict.fromkeys(self.user_ids, True)
        self.members: set[tuple[str, str]] = set()  # (group_id, user_id)
        self.grants: dict[str, dict[str, str]] = {}  # doc -> principal -> level
        self.chunks: dict[str, set[tuple[str, int]]] = {}
        self.answer_checks = 0

    # -- the reference model -----------------------------------------------------------

    def model_principals(self, user_id: str) -> set[str]:
        """A user's principals by the rules, from the model."""
        if not self.active[user_id]:
            return set()
        groups = {f"group:{g}" for g, u in self.members if u == user_id}
        return {f"user:{user_id}", "everyone", *groups}

    def model_readable(self, user_id: str) -> set[str]:
        """The documents a user may read by the rules."""
        mine = self.model_principals(user_id)
        return {d for d, grants in self.grants.items() if mine & grants.keys()}

    def principal_choices(self) -> list[str]:
        """Every principal a grant may name in this example."""
        return [
            *(f"user:{u}" for u in self.user_ids),
            *(f"group:{g}" for g in self.group_ids),
            "everyone",
        ]

    def ingest(self, doc_id: str) -> None:
        """What the worker does after parsing, minus the disk flush: chunks, points, publish."""
        rt = self.rt
        texts = [f"alpha {doc_id} first part", f"alpha {doc_id} second part"]
        vectors = rt.embedder().embed(texts)
        with rt.sessions() as s:
            doc = s.get_one(Document, doc_id)
            doc.state, doc.chunks_total = EMBEDDING, len(texts)
            for n, text in enumerate(texts):
                s.add(
                    Chunk(
                        doc_id=doc_id,
                        chunk_no=n,
                        page=n + 1,
                        text_ct=rt.crypto.encrypt_text(DOC_KEY, doc_id, f"chunk:{n}:text", text),
                    )
                )
            s.flush()
            rt.index().upsert_hidden(
                [ChunkPoint(doc_id=doc_id, chunk_no=n, vector=v) for n, v in enumerate(vectors)]
            )
            doc.chunks_done = len(texts)
            s.commit()
        self.worker._publish(doc_id, len(texts))  # the worker's own atomic publication
        with rt.sessions() as s:
            assert s.get_one(Document, doc_id).state == INDEXED
        self.chunks[doc_id] = {(doc_id, n) for n in range(len(texts))}

    # -- rules -------------------------------------------------------------------------

    def add_document(self, owner: int, picks: list[int]) -> None:
        """Upload a small document with initial read grants, and ingest it."""
        rt = self.rt
        choices = self.principal_choices()
        initial = sorted({choices[p] for p in picks})
        path = self.tmp / f"{uuid.uuid4().hex}.txt"
        path.write_text(f"alpha {path.stem}")  # unique content: no duplicate detection
        with rt.sessions() as s:
            result = docs.submit_file(
                session=s,
                crypto=rt.crypto,
                blobs=rt.blobs,
                path=path,
                filename=path.name,
                owner=s.get_one(User, self.user_ids[owner]),
                grants=initial,
                classification="internal",
                max_bytes=rt.settings.max_upload_bytes,
                actor=OPERATOR,
            )
            s.commit()
            doc_id = result.document.id
        path.unlink()
        self.ingest(doc_id)
        grants = dict.fromkeys(initial, "read")
        grants[f"user:{self.user_ids[owner]}"] = "manage"
        self.grants[doc_id] = grants

    def pick_document(self, data: st.DataObject) -> str:
        """One of the live documents, in creation order (ids are random, order is not)."""
        return data.draw(st.sampled_from(list(self.grants)), label="document")

    @initialize(
        owners=st.lists(st.integers(0, N_USERS - 1), min_size=2, max_size=3),
        picks=st.lists(st.integers(0, N_USERS + N_GROUPS), max_size=3),
    )
    def start_with_documents(self, owners: list[int], picks: list[int]) -> None:
        """Begin every example with a few documents, so most steps change access."""
        for n, owner in enumerate(owners):
            self.add_document(owner, picks[n:])

    @precondition(lambda self: len(self.grants) < MAX_DOCS)
    @rule(
        owner=st.integers(0, N_USERS - 1),
        picks=st.lists(st.integers(0, N_USERS + N_GROUPS), max_size=3),
    )
    def upload(self, owner: int, picks: list[int]) -> None:
        """Upload and ingest another document."""
        Stats.step("upload")
        self.add_document(owner, picks)

    @precondition(lambda self: self.grants)
    @rule(data=st.data(), pick=st.integers(0, N_USERS + N_GROUPS))
    def grant_read(self, data: st.DataObject, pick: int) -> None:
        """Grant read to a user, a group or everyone."""
        Stats.step("grant_read")
        self.grant(data, pick, "read")

    @precondition(lambda self: self.grants)
    @rule(data=st.data(), pick=st.integers(0, N_USERS + N_GROUPS))
    def grant_manage(self, data: st.DataObject, pick: int) -> None:
        """Grant manage (which implies read) to a user, a group or everyone."""
        Stats.step("grant_manage")
        self.grant(data, pick, "manage")

    def grant(self, data: st.DataObject, pick: int, level: str) -> None:
        """Grant a level; downgrading the last manager must be refused."""
        doc = self.pick_document(data)
        principal = self.principal_choices()[pick]
        grants = self.grants[doc]
        last_manager = (
            grants.get(principal) == "manage" and list(grants.values()).count("manage") == 1
        )
        with self.rt.sessions() as s:
            d = s.get_one(Document, doc)
            if last_manager and level == "read":
                with pytest.raises(InvalidInput):
                    acl.grant(
                        session=s,
                        index=self.rt.index(),
                        doc=d,
                        principal=principal,
                        level=level,
                        actor=OPERATOR,
                    )
                return
            held = acl.grant(
                session=s,
                index=self.rt.index(),
                doc=d,
                principal=principal,
                level=level,
                actor=OPERATOR,
            )
            assert held is None  # operators are never held for approval
        grants[principal] = level

    @precondition(lambda self: self.grants)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        """Revoke one of a document's grants (the last manage grant must be refused)."""
        Stats.step("revoke")
        doc = self.pick_document(data)
        grants = self.grants[doc]
        # In a fixed order (ids are random per run, so sorting by them would not replay).
        held = [p for p in self.principal_choices() if p in grants]
        principal = data.draw(st.sampled_from(held))
        last_manager = grants[principal] == "manage" and list(grants.values()).count("manage") == 1
        with self.rt.sessions() as s:
            d = s.get_one(Document, doc)
            kw = {"session": s, "index": self.rt.index(), "doc": d, "principal": principal}
            if last_manager:
                with pytest.raises(InvalidInput):
                    acl.revoke(**kw, actor=OPERATOR)  # type: ignore[arg-type]
                return
            assert acl.revoke(**kw, actor=OPERATOR)  # type: ignore[arg-type]
        del grants[principal]

    # One rule for both kinds of user change: disabling ends sessions and tokens (the
    # costliest step), and as a rule of its own it would take a seventh of all steps.
    @rule(u=st.integers(0, N_USERS - 1), change=st.integers(0, N_GROUPS))
    def change_user(self, u: int, change: int) -> None:
        """Toggle a user's membership of a group, or (change == N_GROUPS) disable/enable them."""
        uid = self.user_ids[u]
        gid = self.group_ids[change] if change < N_GROUPS else ""
        with self.rt.sessions() as s:
            if change == N_GROUPS:
                Stats.step("toggle_active")
                active = not self.active[uid]
                users.set_active(s, user_id=uid, active=active, actor=OPERATOR, now=utcnow())
                self.active[uid] = active
            elif (gid, uid) in self.members:
                Stats.step("remove_member")
                assert remove_member(s, group_id=gid, user_id=uid, actor=OPERATOR)
                self.members.discard((gid, uid))
            else:
                Stats.step("add_member")
                assert add_member(s, group_id=gid, user_id=uid, actor=OPERATOR)
                self.members.add((gid, uid))
            s.commit()

    @precondition(lambda self: self.grants)
    @rule(data=st.data())
    def delete_document(self, data: st.DataObject) -> None:
        """Delete a document (begin: hidden at once; finish: key, points and rows gone)."""
        Stats.step("delete_document")
        doc = self.pick_document(data)
        rt = self.rt
        with rt.sessions() as s:
            acl.delete_document(
                session=s,
                index=rt.index(),
                crypto=rt.crypto,
                blobs=rt.blobs,
                doc=s.get_one(Document, doc),
                actor=OPERATOR,
            )
        del self.grants[doc]
        del self.chunks[doc]

    # -- the check -----------------------------------------------------------------------

    @invariant()
    def every_user_sees_exactly_what_the_model_allows(self) -> None:
        """Search, retrieval and the library agree with the model for every user."""
        rt = self.rt
        index = rt.index()
        started = time.perf_counter()
        with rt.sessions() as s:
            loaded = {
                u.id: u for u in s.execute(select(User).where(User.id.in_(self.user_ids))).scalars()
            }
            for uid in self.user_ids:
                Stats.checks += 1
                user = loaded[uid]
                readable = self.model_readable(uid)
                chunks = set().union(*(self.chunks[d] for d in readable))
                principals = principals_for(s, user)
                assert set(principals) == self.model_principals(uid)
                if principals:
                    hits = index.search(self.query_vector, principals, k=100)
                    assert {(h.doc_id, h.chunk_no) for h in hits} == chunks
                sources = retrieve(rt=rt, session=s, user=user, query=QUERY, k=60, min_score=-1.0)
                assert {(x.doc_id, x.chunk_no) for x in sources} == chunks
                listed = s.execute(rules.readable_documents_query(principals)).scalars()
                assert {d.id for d in listed} == readable
            s.rollback()
        Stats.check_seconds += time.perf_counter() - started

    @invariant()
    def every_answer_shows_only_readable_passages(self) -> None:
        """The answer path (evidence event, cited sources, claims) shows readable chunks only.

        One user per check, in turn (a whole answer is stored and audited): the evidence the
        asker sees before the model starts, the passages the checked answer cites and the
        ranks its claims name all come from chunks the model says they may read.
        """
        self.answer_checks += 1
        uid = self.user_ids[self.answer_checks % len(self.user_ids)]
        if self.answer_checks % ANSWER_EVERY or not self.active[uid]:
            return
        Stats.answers += 1
        readable = self.model_readable(uid)
        chunks = set().union(*(self.chunks[d] for d in readable))
        # A model that repeats every source it was given: whatever reached the prompt shows.
        # Every readable chunk counts as a match (hashed fake vectors can cancel "alpha").
        self.rt._generator = FakeGenerator(lambda msgs: msgs[-1].content)
        self.rt.settings.chat.min_score = -1.0
        events = list(
            pipeline.answer(rt=self.rt, scheduler=self.rt.scheduler, user_id=uid, question=QUERY)
        )
        by_kind = {e.kind: e.data for e in events}
        shown = {(p["doc_id"], p["chunk_no"]) for p in by_kind["evidence"]["passages"]}
        assert shown <= chunks
        if chunks:
            assert shown, "readable chunks match the query, yet no evidence was shown"
        cited = {(c["doc_id"], c["chunk_no"]) for c in by_kind["sources"]["sources"]}
        assert cited <= shown
        ranks = {p["rank"] for p in by_kind["evidence"]["passages"]}
        assert {r for c in by_kind["done"]["claims"] for r in c["ranks"]} <= ranks

    def teardown(self) -> None:
        """Delete this example's documents, so the next example starts from an empty index."""
        rt = self.rt
        for doc_id in list(self.grants):
            with rt.sessions() as s:
                docs.finish_delete(
                    session=s, index=rt.index(), crypto=rt.crypto, blobs=rt.blobs, doc_id=doc_id
                )
        self.worker.close()
        if Stats.examples % 10 == 0:
            # Deleted points stay in the shard's segments until its optimisers run (on
            # flush); without this, searches slow down as examples accumulate.
            rt.index().flush()


@pytest.mark.timeout(600)
def test_search_chat_and_library_match_the_reference_model(
    runtime: Runtime, tmp_path: Path
) -> None:
    AclMachine.rt = runtime
    AclMachine.tmp = tmp_path
    Stats.steps = Stats.checks = Stats.examples = Stats.answers = 0
    Stats.check_seconds = 0.0
    Stats.by_rule = {}
    started = time.monotonic()
    run_state_machine_as_test(
        AclMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS_PER_EXAMPLE,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    elapsed = time.monotonic() - started
    print(  # noqa: T201 - the figure CI reports
        f"\nacl property: {Stats.examples} examples, {Stats.steps} steps, "
        f"{Stats.checks} per-user checks, {Stats.answers} whole answers "
        f"in {elapsed:.1f}s ({Stats.check_seconds:.1f}s "
        f"checking); steps per rule: {Stats.by_rule}"
    )
    assert runtime.index().count() == 0  # every example cleaned up after itself
    assert Stats.steps >= MIN_TOTAL_STEPS
    assert elapsed < BUDGET_SECONDS
