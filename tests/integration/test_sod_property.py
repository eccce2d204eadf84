"""Property test of DESIGN invariant 4: no single admin reads what they may not.

A hypothesis state machine lets one admin (`A`) act alone over HTTP: create accounts,
reset passwords and second factors, grant, add to groups, erase (transferring or deleting
documents), change classifications, delete, set retain-until dates, and approve requests
(as themselves, or as any admin account they can sign in as). A second admin (`B`), whose
credentials A never set, sometimes approves A's requests; the owners of the other accounts
sometimes sign in and take their password back.

The harness tracks what A actually knows: each account's password and second-factor
secret, learnt from the API's answers (one-time passwords) and from enrolling. An account
A can sign in as is A's. After every step, A signs in as every such account and looks for
the secret words of every *protected* document and conversation on every route that could
show them: the library listing (titles, filenames), the document's metadata, passages and
download, conversations, and (every few checks) a whole chat answer, with a generator that
repeats its prompt. A document is protected once it is confidential or personal while no
account of A's can read it; a victim's chat history is protected from the start. Only an
approval decided by B lifts that, for what the approved request was about.

The invariant: no protected word ever reaches an account of A's, and the database read
rule agrees (no protected document is granted to any of their principals).

Documents are ingested as tests/integration/test_acl_property.py does (two encrypted chunk
rows, hidden points, the worker's own atomic publish) so that thousands of checked steps
fit in a few minutes; one app and a pool of HTTP clients serve every example; each example
starts with fresh accounts, groups and documents and a clock at the same start.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyotp
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from appliance.acl import duties
from appliance.acl.principals import principals_for
from appliance.approvals import service as approvals
from appliance.approvals.tables import ApprovalRequest
from appliance.auth import totp
from appliance.auth.tables import Group, GroupMember, User
from appliance.chat import pipeline
from appliance.core.classification import SENSITIVE
from appliance.core.places import DOC_KEY, DOC_TITLE
from appliance.core.runtime import Runtime
from appliance.documents import service as docs
from appliance.documents.ingestion import IngestionWorker, Parser
from appliance.documents.tables import DELETING, EMBEDDING, INDEXED, Chunk, Document, DocumentGrant
from ingest.index import ChunkPoint
from models.fakes import FakeGenerator
from tests.fixtures.auth import ORIGIN, Browser, Clock, make_user

EXAMPLES = 45  # at most STEPS_PER_EXAMPLE each (hypothesis ends some sooner)
STEPS_PER_EXAMPLE = 150
MIN_TOTAL_STEPS = 5_000
BUDGET_SECONDS = 600.0  # 426 s measured at load 10 on 2 cores; aim: under 240 s on idle cores
CHAT_EVERY = 25  # a whole answer for one account of A's on every 25th check
MAX_PUPPETS = 2
CLASSES = ("public", "internal", "confidential", "personal")
NEW_PASSWORD = "correct horse battery staple %d"  # noqa: S105 - test passwords


class Stats:
    """Counts across all examples of one run."""

    steps = 0
    checks = 0
    account_checks = 0
    chats = 0
    approvals_by_b = 0
    examples = 0
    held = 0
    by_rule: ClassVar[dict[str, int]] = {}

    @classmethod
    def step(cls, name: str) -> None:
        """Count one step of a rule."""
        cls.steps += 1
        cls.by_rule[name] = cls.by_rule.get(name, 0) + 1


@dataclass
class Creds:
    """An account's credentials and who knows them ("A", "owner")."""

    username: str
    password: str
    pw_knowers: set[str]
    secret: str | None  # None: no second factor enrolled
    secret_knowers: set[str] = field(default_factory=set)

    def usable_by(self, party: str) -> bool:
        """Whether that party can sign in with what they know."""
        return party in self.pw_knowers and (self.secret is None or party in self.secret_knowers)


@dataclass
class World:
    """What lives across examples: the instance, the app, HTTP clients, the worker."""

    rt: Runtime
    app: FastAPI
    tmp: Path
    worker: IngestionWorker
    clients: list[TestClient]
    check_patch_response: bool
    query: list[float]


class SodMachine(RuleBasedStateMachine):
    """One admin acting alone against the real app; the harness knows what they know."""

    world: World  # set by the test

    def __init__(self) -> None:
        """Fresh accounts, groups, documents and conversations for this example."""
        super().__init__()
        Stats.examples += 1
        w = self.world
        self.rt = w.rt
        self.clock = Clock()
        w.app.state.clock = self.clock
        self.pool = iter(w.clients)
        self.serial = 0
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        with self.rt.sessions() as s:
            made = {
                "A": make_user(s, self.rt.crypto, username=f"a-{tag}", role="admin"),
                "B": make_user(s, self.rt.crypto, username=f"b-{tag}", role="admin"),
                "alice": make_user(s, self.rt.crypto, username=f"alice-{tag}"),
                "bob": make_user(s, self.rt.crypto, username=f"bob-{tag}"),
            }
            groups = [Group(name=f"g{i}-{tag}") for i in range(2)]
            s.add_all(groups)
            s.flush()
            s.add(GroupMember(group_id=groups[0].id, user_id=made["bob"].user.id))
            s.commit()
            self.group_ids = [g.id for g in groups]
            self.group_names = [g.name for g in groups]
        self.ids = {name: acc.user.id for name, acc in made.items()}
        self.a_id, self.b_id = self.ids["A"], self.ids["B"]
        self.victims = [self.ids["alice"], self.ids["bob"]]
        self.creds: dict[str, Creds] = {}
        for name, acc in made.items():
            party = "A" if name == "A" else "owner"
            self.creds[acc.user.id] = Creds(
                username=acc.username,
                password=acc.password,
                pw_knowers={party},
                secret=acc.secret,
                secret_knowers={party},
            )
        self.puppets: list[str] = []
        self.admins = {self.a_id, self.b_id}
        self.browsers: dict[str, Browser] = {}
        self.fresh: set[str] = set()  # accounts whose browser of A's holds a live session
        self.owner_browser = self.new_browser()
        self.b = self.new_browser()
        self.b.sign_in(made["B"])
        # The documents: secret words in content, title and filename.
        self.token: dict[str, str] = {}
        self.add_doc("alice", "confidential", [])
        self.add_doc("bob", "personal", [f"group:{self.group_ids[0]}"])
        self.add_doc("alice", "confidential", [f"user:{self.ids['bob']}"])
        self.add_doc("alice", "internal", ["everyone"])
        self.history: dict[str, str] = {}
        for victim in self.victims:
            word = f"h{uuid.uuid4().hex[:10]}"
            list(
                pipeline.answer(
                    rt=self.rt,
                    scheduler=self.rt.scheduler,
                    user_id=victim,
                    question=f"remember {word}",
                )
            )
            self.history[victim] = word
        self.protected: set[str] = set(self.history.values())
        self.authorized: set[str] = set()
        self.pending: list[str] = []
        self.checks = 0
        self.asked: set[str] = set()  # conversations the check's own questions made
        self.alive: set[str] | None = None  # accounts that exist; None: read them again

    # -- plumbing -------------------------------------------------------------------------

    def new_browser(self) -> Browser:
        """A client from the pool with an empty cookie jar."""
        client = next(self.pool)
        client.cookies.clear()
        return Browser(client, self.clock)

    def add_doc(self, owner: str, classification: str, grants: list[str]) -> None:
        """Submit and cheaply ingest a document with its own secret word."""
        rt = self.rt
        word = f"w{uuid.uuid4().hex[:10]}"
        path = self.world.tmp / f"{word}.md"
        path.write_text(f"alpha {word}")
        with rt.sessions() as s:
            result = docs.submit_file(
                session=s,
                crypto=rt.crypto,
                blobs=rt.blobs,
                path=path,
                filename=path.name,
                owner=s.get_one(User, self.ids[owner]),
                grants=grants,
                classification=classification,
                max_bytes=rt.settings.max_upload_bytes,
                actor="operator:property-test",
            )
            s.commit()
            doc_id = result.document.id
        path.unlink()
        texts = [f"alpha {word} first part", f"alpha {word} second part"]
        vectors = rt.embedder().embed(texts)
        with rt.sessions() as s:
            doc = s.get_one(Document, doc_id)
            doc.state, doc.chunks_total = EMBEDDING, len(texts)
            doc.title_ct = rt.crypto.encrypt_text(DOC_KEY, doc_id, DOC_TITLE, f"Title {word}")
            for n, text in enumerate(texts):
                s.add(
                    Chunk(
                        doc_id=doc_id,
                        chunk_no=n,
                        page=1,
                        text_ct=rt.crypto.encrypt_text(DOC_KEY, doc_id, f"chunk:{n}:text", text),
                    )
                )
            s.flush()
            rt.index().upsert_hidden(
                [ChunkPoint(doc_id=doc_id, chunk_no=n, vector=v) for n, v in enumerate(vectors)]
            )
            doc.chunks_done = len(texts)
            s.commit()
        self.world.worker._publish(doc_id, len(texts))
        with rt.sessions() as s:
            assert s.get_one(Document, doc_id).state == INDEXED
        self.token[doc_id] = word

    def live_docs(self) -> list[str]:
        """The example's documents that still exist, in creation order."""
        with self.rt.sessions() as s:
            alive = set(
                s.execute(
                    select(Document.id).where(
                        Document.id.in_(list(self.token)), Document.state != DELETING
                    )
                ).scalars()
            )
        return [d for d in self.token if d in alive]

    def accounts(self) -> list[str]:
        """Every account of the example that still exists (read again after an erasure)."""
        if self.alive is None:
            with self.rt.sessions() as s:
                self.alive = set(
                    s.execute(select(User.id).where(User.id.in_(list(self.creds)))).scalars()
                )
        return [u for u in self.creds if u in self.alive]

    def mine(self) -> list[str]:
        """The accounts A can sign in as, with what A knows."""
        return [u for u in self.accounts() if self.creds[u].usable_by("A")]

    def sign_in(self, user_id: str, party: str) -> Browser | None:
        """Sign in as the account as `party` (who must be able to); enrol, change as needed."""
        c = self.creds[user_id]
        browser = self.browsers.get(user_id) if party == "A" else self.owner_browser
        if browser is None:
            browser = self.browsers[user_id] = self.new_browser()
        browser.client.cookies.clear()
        r = browser.login(c.username, c.password)
        assert r.status_code == 200, (party, r.text)
        body = r.json()
        self.clock.advance(seconds=30)
        if body["stage"] == "enrol":
            c.secret = body["enrolment"]["secret"]
            c.secret_knowers = {party}
            code = pyotp.TOTP(c.secret).at(self.clock())
            r = browser.post("/api/auth/enrol/confirm", json={"code": code})
        else:
            assert body["stage"] == "totp", body
            assert c.secret is not None
            r = browser.post("/api/auth/totp", json={"code": pyotp.TOTP(c.secret).at(self.clock())})
        assert r.status_code == 200, (party, r.text)
        if r.json()["stage"] == "password":
            self.serial += 1
            new = NEW_PASSWORD % self.serial
            r = browser.post("/api/auth/password", json={"old": c.password, "new": new})
            assert r.status_code == 200, r.text
            c.password, c.pw_knowers = new, {party}
        assert r.json()["stage"] == "done", r.text
        return browser

    def as_a(self, user_id: str) -> Browser:
        """A browser signed in as one of A's accounts (signing in again if it was ended)."""
        browser = self.browsers.get(user_id)
        if browser is not None and user_id in self.fresh:
            return browser
        signed = self.sign_in(user_id, "A")
        assert signed is not None
        self.fresh.add(user_id)
        return signed

    def get(self, user_id: str, url: str, **kw: Any) -> Any:
        """GET as one of A's accounts, signing in again once if its session ended."""
        r = self.as_a(user_id).get(url, **kw)
        if r.status_code == 401:
            self.fresh.discard(user_id)
            r = self.as_a(user_id).get(url, **kw)
        return r

    def actor(self, pick: int) -> Browser:
        """A, or another admin account A can sign in as."""
        admins = [u for u in self.mine() if u in self.admins]
        return self.as_a(admins[pick % len(admins)])

    def pick(self, items: list[str], n: int) -> str | None:
        """One of the items (None if there is none)."""
        return items[n % len(items)] if items else None

    def note(self, r: Any) -> None:
        """Keep the id of a request the answer holds; no answer is a server error."""
        assert r.status_code < 500, r.text
        if r.status_code == 202:
            body = r.json()
            approval = body.get("approval", body)
            found = approval.get("id") or approval.get("approval_id")
            if found:
                Stats.held += 1
                if found not in self.pending:
                    self.pending.append(found)

    # -- rules: A acting alone --------------------------------------------------------------

    @precondition(lambda self: len(self.puppets) < MAX_PUPPETS)
    @rule(admin=st.booleans())
    def create_account(self, admin: bool) -> None:
        """A creates an account and learns its one-time password."""
        Stats.step("create_account")
        self.serial += 1
        name = f"p{self.serial}-{self.tag}"
        body = {"username": name, "role": "admin" if admin else "user"}
        r = self.as_a(self.a_id).post("/api/admin/users", json=body)
        assert r.status_code == 201, r.text
        uid = r.json()["user"]["id"]
        self.puppets.append(uid)
        self.alive = None
        self.creds[uid] = Creds(name, r.json()["one_time_password"], {"A"}, None)
        if r.json()["approval_id"]:
            self.pending.append(r.json()["approval_id"])

    @rule(who=st.integers(0, 3), whom=st.integers(0, 9), totp=st.booleans())
    def reset(self, who: int, whom: int, totp: bool) -> None:
        """A resets an account's password (learning it) or its second factor."""
        Stats.step("reset_totp" if totp else "reset_password")
        uid = self.pick(self.accounts(), whom)
        assert uid is not None
        url = f"/api/admin/users/{uid}/reset-{'totp' if totp else 'password'}"
        r = self.actor(who).post(url)
        self.note(r)
        if r.status_code != 200:
            return
        self.fresh.discard(uid)  # a reset ends the account's sessions
        c = self.creds[uid]
        if totp:
            c.secret, c.secret_knowers = None, set()
        else:
            # A hands the one-time password to the owner, and keeps knowing it.
            c.password, c.pw_knowers = r.json()["one_time_password"], {"A", "owner"}

    @rule(who=st.integers(0, 3), doc=st.integers(0, 9), to=st.integers(0, 12), manage=st.booleans())
    def grant(self, who: int, doc: int, to: int, manage: bool) -> None:
        """A grants read or manage on a document to a user, a group or everyone."""
        Stats.step("grant")
        doc_id = self.pick(self.live_docs(), doc)
        if doc_id is None:
            return
        names = [f"user:{self.creds[u].username}" for u in self.accounts()]
        names += [f"group:{name}" for name in self.group_names]
        names.append("everyone")
        body = {"principal": names[to % len(names)], "level": "manage" if manage else "read"}
        self.note(self.actor(who).post(f"/api/documents/{doc_id}/grants", json=body))

    @rule(who=st.integers(0, 3), group=st.integers(0, 1), member=st.integers(0, 9))
    def add_member(self, who: int, group: int, member: int) -> None:
        """A adds an account to a group."""
        Stats.step("add_member")
        uid = self.pick(self.accounts(), member)
        url = f"/api/admin/groups/{self.group_ids[group]}/members"
        self.note(self.actor(who).post(url, json={"user_id": uid}))

    @rule(doc=st.integers(0, 9), to=st.integers(0, 9), leave=st.booleans())
    def take_away(self, doc: int, to: int, leave: bool) -> None:
        """A revokes a grant, or takes an account out of a group (to reach other states)."""
        Stats.step("take_away")
        a = self.as_a(self.a_id)
        uid = self.pick(self.accounts(), to)
        if leave:
            gid = self.group_ids[doc % len(self.group_ids)]
            self.note(a.delete(f"/api/admin/groups/{gid}/members/{uid}"))
            return
        doc_id = self.pick(self.live_docs(), doc)
        if doc_id is not None and uid is not None:
            r = a.delete(
                f"/api/documents/{doc_id}/grants",
                params={"principal": f"user:{self.creds[uid].username}"},
            )
            self.note(r)

    @rule(whom=st.integers(0, 9), transfer=st.booleans(), to=st.integers(0, 9))
    def erase(self, whom: int, transfer: bool, to: int) -> None:
        """A erases an account, deleting its documents or transferring them to someone."""
        Stats.step("erase")
        accounts = self.accounts()
        uid = self.pick([u for u in accounts if u not in (self.a_id, self.b_id)], whom)
        if uid is None:
            return
        body: dict[str, Any] = {"documents": "delete"}
        if transfer:
            others = [u for u in accounts if u != uid]
            body = {"documents": "transfer", "transfer_to": self.pick(others, to)}
        self.note(self.as_a(self.a_id).post(f"/api/admin/users/{uid}/erase", json=body))
        self.fresh.discard(uid)
        self.alive = None

    @rule(doc=st.integers(0, 9), to=st.integers(0, 3))
    def patch(self, doc: int, to: int) -> None:
        """A changes a document's classification (a no-op included); the answer is checked."""
        Stats.step("patch")
        doc_id = self.pick(self.live_docs(), doc)
        if doc_id is None:
            return
        r = self.as_a(self.a_id).patch(
            f"/api/documents/{doc_id}", json={"classification": CLASSES[to]}
        )
        self.note(r)
        if self.world.check_patch_response:
            self.assert_hidden(r.text, f"PATCH {doc_id}")

    @rule(doc=st.integers(0, 9))
    def delete(self, doc: int) -> None:
        """A deletes a document."""
        Stats.step("delete")
        doc_id = self.pick(self.live_docs(), doc)
        if doc_id is not None:
            self.note(self.as_a(self.a_id).delete(f"/api/documents/{doc_id}"))

    @rule(doc=st.integers(0, 9), past=st.booleans())
    def retention(self, doc: int, past: bool) -> None:
        """A sets a retain-until date: in the past (delete it now) or far away."""
        Stats.step("retention")
        doc_id = self.pick(self.live_docs(), doc)
        if doc_id is None:
            return
        until = "2000-01-01T00:00:00Z" if past else "2999-01-01T00:00:00Z"
        r = self.as_a(self.a_id).request(
            "PUT", f"/api/documents/{doc_id}/retention", json={"retain_until": until}
        )
        self.note(r)

    @precondition(lambda self: self.pending)
    @rule(req=st.integers(0, 20), who=st.integers(0, 3))
    def approve(self, req: int, who: int) -> None:
        """A (or an admin account of A's) approves a pending request: always refused."""
        Stats.step("approve")
        request_id = self.pick(self.pending, req)
        r = self.actor(who).post(f"/api/admin/approvals/{request_id}/approve")
        assert r.status_code in (403, 404, 422), r.text  # never A's own eyes twice

    # -- rules: others ------------------------------------------------------------------------

    @precondition(lambda self: self.pending)
    @rule(req=st.integers(0, 20))
    def second_admin_approves(self, req: int) -> None:
        """B, whose credentials A never set, approves one of A's requests."""
        Stats.step("second_admin_approves")
        request_id = self.pick(self.pending, req)
        assert self.b_id not in self.mine()
        scope = self.scope_of(request_id)
        r = self.b.post(f"/api/admin/approvals/{request_id}/approve")
        if r.status_code == 401:
            self.b.client.cookies.clear()
            self.owner_sign_in_b()
            r = self.b.post(f"/api/admin/approvals/{request_id}/approve")
        assert r.status_code < 500, r.text
        if r.status_code == 200:
            Stats.approvals_by_b += 1
            self.alive = None
            self.authorized |= scope | self.scope_of(request_id)
            if r.json()["kind"] == "make_admin":
                self.admins.add(str(r.json()["params"]["user_id"]))
        if r.status_code != 403:
            self.pending.remove(request_id)

    @rule(victim=st.integers(0, 1), change=st.booleans())
    def owner_returns(self, victim: int, change: bool) -> None:
        """The account's owner signs in with what they know, maybe changing the password."""
        Stats.step("owner_returns")
        uid = self.victims[victim]
        c = self.creds[uid]
        if uid not in self.accounts() or not c.usable_by("owner"):
            return
        browser = self.sign_in(uid, "owner")
        assert browser is not None
        if change:
            self.serial += 1
            new = NEW_PASSWORD % self.serial
            r = browser.post("/api/auth/password", json={"old": c.password, "new": new})
            assert r.status_code == 200, r.text
            c.password, c.pw_knowers = new, {"owner"}
        self.fresh.discard(uid)  # a password change ends every other session

    def owner_sign_in_b(self) -> None:
        """B signs in again (their own credentials, which A never learns)."""
        c = self.creds[self.b_id]
        r = self.b.login(c.username, c.password)
        assert r.json()["stage"] == "totp", r.text
        self.clock.advance(seconds=30)
        assert c.secret is not None
        r = self.b.post("/api/auth/totp", json={"code": pyotp.TOTP(c.secret).at(self.clock())})
        assert r.json()["stage"] == "done", r.text

    def scope_of(self, request_id: str) -> set[str]:
        """The secret words an approval of this request may legitimately expose."""
        with self.rt.sessions() as s:
            req = s.get(ApprovalRequest, request_id)
            if req is None:
                return set()  # gone with its document or its requester
            params = approvals.params_of(req)
            docs_in: set[str] = set()
            users_in: set[str] = set()
            for ref in (req.doc_id, req.target, params.get("doc_id")):
                if isinstance(ref, str):
                    docs_in.add(ref.removeprefix("doc:"))
            for ref in (params.get("user_id"), params.get("transfer_to")):
                if isinstance(ref, str):
                    users_in.add(ref)
            if isinstance(req.target, str) and req.target.startswith("user:"):
                users_in.add(req.target.removeprefix("user:"))
            for uid in users_in:
                docs_in |= duties.readable_sensitive(s, uid)
                docs_in |= set(
                    s.execute(select(Document.id).where(Document.owner_id == uid)).scalars()
                )
            if req.kind == "add_member":
                docs_in |= set(
                    s.execute(
                        select(DocumentGrant.doc_id).where(
                            DocumentGrant.principal == f"group:{params['group_id']}"
                        )
                    ).scalars()
                )
        words = {self.token[d] for d in docs_in if d in self.token}
        return words | {self.history[u] for u in users_in if u in self.history}

    # -- the check ----------------------------------------------------------------------------

    def assert_hidden(self, text: str, where: str) -> None:
        """No protected, unauthorised word in an answer to one of A's accounts."""
        for word in self.protected - self.authorized:
            assert word not in text, f"{where} shows protected {word}"

    @invariant()
    def no_account_of_a_reads_anything_protected(self) -> None:
        """Every account A can sign in as sees nothing protected, on any route.

        Every account, every step: the read rule (the database), the ACL-filtered retrieval
        a question runs, and the chat history the account holds. Over HTTP, in turn (one
        account and one route per step, a whole answer every `CHAT_EVERY` steps): the
        library listing (titles, filenames), metadata, a passage, the download, and the
        conversations.
        """
        self.checks += 1
        Stats.checks += 1
        mine = self.mine()
        hidden = self.protected - self.authorized
        with self.rt.sessions() as s:
            live = list(
                s.execute(
                    select(Document).where(
                        Document.id.in_(list(self.token)), Document.state != DELETING
                    )
                ).scalars()
            )
            principals = {uid: duties.standing_principals(s, uid) for uid in mine}
            everyone = sorted({p for ps in principals.values() for p in ps})
            readable = set(
                s.execute(
                    select(DocumentGrant.doc_id).where(
                        DocumentGrant.doc_id.in_([d.id for d in live]),
                        DocumentGrant.principal.in_(everyone),
                    )
                ).scalars()
            )
            # Newly protected: sensitive documents none of A's accounts can read.
            for d in live:
                if d.classification in SENSITIVE and d.id not in readable:
                    self.protected.add(self.token[d.id])
            hidden = self.protected - self.authorized
            leaked = {self.token[d] for d in readable} & hidden
            assert not leaked, f"the read rule lets A's accounts read {leaked}"
            index = self.rt.index()
            for uid in mine:
                Stats.account_checks += 1
                assert self.history.get(uid) not in hidden, "A signs in as a chat history"
                # The ACL-filtered search a question runs, with the account's principals.
                user = s.get_one(User, uid)
                found = index.search(self.world.query, principals_for(s, user), k=60)
                shown = {self.token.get(x.doc_id) for x in found}
                assert not shown & hidden, f"the search shows {shown & hidden}"
            targets = [d.id for d in live if self.token[d.id] in hidden]
            s.rollback()
        if not mine:
            return
        uid = mine[self.checks % len(mine)]
        channel = (self.checks // len(mine)) % 5
        if channel == 0 or not targets:
            r = self.get(uid, "/api/documents", params={"limit": 1000})
            assert r.status_code == 200, r.text
            self.assert_hidden(r.text, "the library")
        elif channel < 4:
            doc_id = targets[self.checks % len(targets)]
            route = ("", "/chunks/0", "/download")[channel - 1]
            r = self.get(uid, f"/api/documents/{doc_id}{route}")
            assert r.status_code == 404, (route, r.text)
        else:
            convs = self.get(uid, "/api/conversations")
            self.assert_hidden(convs.text, "conversations")
            for conv in convs.json():
                if conv["id"] not in self.asked:
                    shown = self.get(uid, f"/api/conversations/{conv['id']}").text
                    self.assert_hidden(shown, "a chat history")
        if self.checks % CHAT_EVERY == 0:
            Stats.chats += 1
            r = self.as_a(uid).post("/api/chat", json={"question": "alpha"})
            assert r.status_code == 200, r.text
            self.assert_hidden(r.text, "a chat answer")
            first = next(line for line in r.text.splitlines() if line.startswith("data:"))
            self.asked.add(json.loads(first.removeprefix("data:"))["id"])

    def teardown(self) -> None:
        """Delete this example's documents (the next example starts from an empty index)."""
        rt = self.rt
        for doc_id in self.live_docs():
            with rt.sessions() as s:
                docs.finish_delete(
                    session=s, index=rt.index(), crypto=rt.crypto, blobs=rt.blobs, doc_id=doc_id
                )
        if Stats.examples % 10 == 0:
            rt.index().flush()


def _patch_shows_titles(rt: Runtime, app: FastAPI, client: TestClient, tmp: Path) -> bool:
    """Whether a no-op PATCH still answers an admin with a filename they may not read.

    That is issue 16's hole 5, closed separately. Until it is, the PATCH answer is left out of
    the check here (every other route is checked) and the run says so.
    """
    clock = Clock()
    app.state.clock = clock
    with rt.sessions() as s:
        admin = make_user(s, rt.crypto, username="probe-admin", role="admin")
        owner = make_user(s, rt.crypto, username="probe-owner")
        path = tmp / "probe-secret-name.md"
        path.write_text("probe")
        doc = docs.submit_file(
            session=s,
            crypto=rt.crypto,
            blobs=rt.blobs,
            path=path,
            filename=path.name,
            owner=s.get_one(User, owner.user.id),
            grants=[],
            classification="confidential",
            max_bytes=rt.settings.max_upload_bytes,
            actor="operator:property-test",
        ).document
        s.commit()
    browser = Browser(client, clock)
    browser.sign_in(admin)
    r = browser.patch(f"/api/documents/{doc.id}", json={"classification": "confidential"})
    client.cookies.clear()
    with rt.sessions() as s:
        docs.finish_delete(
            session=s, index=rt.index(), crypto=rt.crypto, blobs=rt.blobs, doc_id=doc.id
        )
    return path.name in r.text


@pytest.fixture
def world(
    runtime: Runtime, app: FastAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    """One app and a pool of clients for every example; fake models throughout."""
    # Cheap recovery-code hashing, as tests/fixtures/auth.py makes passwords cheap: every
    # enrolment hashes ten codes, and this test enrols hundreds of times.
    monkeypatch.setattr(totp, "_recovery_hasher", PasswordHasher(time_cost=1, memory_cost=64))
    runtime._generator = FakeGenerator(lambda msgs: msgs[-1].content)
    runtime.settings.chat.min_score = -1.0
    # Each sign-in moves the clock on a TOTP step; sessions outlive an example.
    runtime.settings.auth.session_idle_minutes = 10**6
    runtime.settings.auth.session_absolute_hours = 10**5
    clients = [TestClient(app, base_url=ORIGIN) for _ in range(MAX_PUPPETS + 8)]
    for c in clients:
        c.__enter__()
    leaks = _patch_shows_titles(runtime, app, clients[0], tmp_path)
    worker = IngestionWorker(
        runtime,
        parser=Parser(max_bytes=runtime.settings.max_upload_bytes, ocr=False, isolated=False),
    )
    yield World(
        rt=runtime,
        app=app,
        tmp=tmp_path,
        worker=worker,
        clients=clients,
        check_patch_response=not leaks,
        query=runtime.embedder().embed(["alpha"])[0],
    )
    worker.close()
    for c in clients:
        c.__exit__(None, None, None)


@pytest.mark.timeout(900)  # above BUDGET_SECONDS, so the budget check is what fails
def test_no_single_admin_reads_what_they_may_not(world: World) -> None:
    SodMachine.world = world
    Stats.steps = Stats.checks = Stats.examples = Stats.chats = Stats.held = 0
    Stats.account_checks = Stats.approvals_by_b = 0
    Stats.by_rule = {}
    started = time.monotonic()
    run_state_machine_as_test(
        SodMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS_PER_EXAMPLE,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    elapsed = time.monotonic() - started
    if not world.check_patch_response:
        print("\nsod property: PATCH answers not checked (issue 16 hole 5 open)")  # noqa: T201
    print(  # noqa: T201 - the figure CI reports
        f"\nsod property: {Stats.examples} examples, {Stats.steps} steps, {Stats.checks} "
        f"checks ({Stats.account_checks} per account, {Stats.chats} whole answers), "
        f"{Stats.held} held, {Stats.approvals_by_b} approved by the second admin "
        f"in {elapsed:.1f}s; steps per rule: {Stats.by_rule}"
    )
    assert Stats.steps >= MIN_TOTAL_STEPS
    assert elapsed < BUDGET_SECONDS
