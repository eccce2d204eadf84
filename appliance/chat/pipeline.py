"""The one place a question's path is composed: retrieve -> check -> prompt -> generate -> audit.

``answer()`` is a plain generator of events, so the HTTP route (Server-Sent Events, run off
the event loop) and the CLI (`appliance ask`) share it. Setting ``cancel`` (a client went
away) stops generation at the next token.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.acl.principals import principals_for
from appliance.acl.rules import readable_document_ids
from appliance.admin import service as switches
from appliance.audit import service as audit
from appliance.auth.tables import User
from appliance.chat import prompt
from appliance.chat.citations import CitationFilter
from appliance.chat.render import render_answer
from appliance.chat.retrieval import Source, retrieve
from appliance.chat.tables import Conversation, Feedback, Message
from appliance.core import places
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput, NotFound, PermissionDenied
from appliance.core.places import CHAT_KEY
from appliance.core.runtime import Runtime
from appliance.core.scheduler import FairScheduler
from models.protocols import ChatMessage

NO_SOURCE_ANSWER = (
    "I could not find anything about this in the documents you can access. "
    "Try other words, or ask the document's owner to share it with you."
)
MAX_QUESTION_CHARS = 4000
UNAVAILABLE = "no longer available"


@dataclass
class Event:
    """One server-sent event: ``kind`` is the SSE event name, ``data`` its JSON body."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def sse(self) -> str:
        """Encode as a Server-Sent Event."""
        return f"event: {self.kind}\ndata: {json.dumps(self.data)}\n\n"


def encrypt_for(rt: Runtime, user_id: str, place: str, text: str) -> bytes:
    """Encrypt with the user's chat-history key (created on first use)."""
    rt.crypto.create_data_key(CHAT_KEY, user_id)
    return rt.crypto.encrypt_text(CHAT_KEY, user_id, place, text)


def decrypt_for(rt: Runtime, user_id: str, place: str, blob: bytes) -> str:
    """Decrypt with the user's chat-history key."""
    return rt.crypto.decrypt_text(CHAT_KEY, user_id, place, blob)


def active_user(session: Session, user_id: str) -> User:
    """The user, loaded fresh; a disabled account asks nothing."""
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        raise PermissionDenied("This account is disabled.")
    return user


def own_conversation(session: Session, user: User, conv_id: str) -> Conversation:
    """A conversation of this user's, else NotFound (never 'forbidden')."""
    conv = session.get(Conversation, conv_id)
    if conv is None or conv.owner_id != user.id:
        raise NotFound("No such conversation.")
    return conv


def history_of(rt: Runtime, session: Session, conv: Conversation, turns: int) -> list[ChatMessage]:
    """The last `turns` messages, oldest first, decrypted."""
    if turns <= 0:
        return []
    rows = (
        session.execute(
            select(Message)
            .where(Message.conversation_id == conv.id)
            .order_by(Message.id.desc())
            .limit(turns)
        )
        .scalars()
        .all()
    )
    return [
        ChatMessage(
            "user" if m.role == "user" else "assistant",
            decrypt_for(rt, conv.owner_id, places.message_text(conv.id, m.id), m.content_ct),
        )
        for m in reversed(rows)
    ]


def retrieval_query(history: list[ChatMessage], question: str) -> str:
    """A follow-up is searched together with the previous question, which gives it context."""
    previous = [m.content for m in history if m.role == "user"]
    return f"{previous[-1]}\n{question}" if previous else question


def _store_message(
    rt: Runtime,
    session: Session,
    conv: Conversation,
    role: str,
    text: str,
    *,
    sources: list[dict[str, Any]] | None = None,
    model: str | None = None,
) -> Message:
    msg = Message(conversation_id=conv.id, role=role, content_ct=b"", model=model)
    session.add(msg)
    session.flush()  # the id is part of the associated data
    msg.content_ct = encrypt_for(rt, conv.owner_id, places.message_text(conv.id, msg.id), text)
    if sources is not None:
        msg.sources_ct = encrypt_for(
            rt, conv.owner_id, places.message_sources(conv.id, msg.id), json.dumps(sources)
        )
    conv.updated_at = utcnow()
    return msg


def answer(
    *,
    rt: Runtime,
    scheduler: FairScheduler,
    user_id: str,
    question: str,
    conversation_id: str | None = None,
    cancel: threading.Event | None = None,
    client: str | None = None,
) -> Iterator[Event]:
    """Answer a question for a user; yields conversation, queue, token, sources, done events."""
    cancel = cancel or threading.Event()
    cfg = rt.settings.chat
    question = question.strip()
    if not question:
        raise InvalidInput("Ask a question: the text is empty.")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidInput(f"A question has at most {MAX_QUESTION_CHARS} characters.")
    with rt.sessions() as session:
        switches.check_answering(session)  # kill switch: paused or read-only, nothing stored
    scheduler.check_capacity(user_id)  # refuse before storing anything
    t0 = time.perf_counter()
    with rt.sessions() as session:
        user = active_user(session, user_id)
        if conversation_id:
            conv = own_conversation(session, user, conversation_id)
        else:
            conv = Conversation(owner_id=user.id, title_ct=b"")
            session.add(conv)
            session.flush()
            conv.title_ct = encrypt_for(
                rt, user.id, places.conversation_title(conv.id), question[:80]
            )
        history = history_of(rt, session, conv, cfg.history_turns)
        sources = retrieve(
            rt=rt,
            session=session,
            user=user,
            query=retrieval_query(history, question),
            k=cfg.top_k,
            min_score=cfg.min_score,
        )
        _store_message(rt, session, conv, "user", question)
        session.commit()
        conv_id = conv.id
    t_retrieved = time.perf_counter()
    yield Event("conversation", {"id": conv_id})

    model_name: str | None = None
    text_parts: list[str] = []
    cited: list[Source] = []
    queue_wait = 0.0
    first_token: float | None = None
    stopped = False
    if not sources:
        # Nothing readable matched: say so without asking the model to invent an answer,
        # and without any hint that documents the user cannot read exist.
        text_parts.append(NO_SOURCE_ANSWER)
        yield Event("token", {"text": NO_SOURCE_ANSWER})
    else:
        generator = rt.generator()
        model_name = generator.name
        messages, used = prompt.fit(
            sources=sources,
            history=history,
            question=question,
            count_tokens=generator.count_chat_tokens,
            context_length=generator.context_length,
            answer_tokens=cfg.answer_max_tokens,
        )
        ticket = scheduler.enter(user_id)
        try:
            t_queue = time.perf_counter()
            position = scheduler.position(ticket)
            while position > 0 and not cancel.is_set():
                yield Event("queue", {"position": position})
                position = scheduler.wait(ticket, 0.5)
            queue_wait = time.perf_counter() - t_queue
            citations = CitationFilter(len(used) if not cancel.is_set() else 0)
            deadline = time.monotonic() + cfg.generation_timeout_seconds
            timer = threading.Timer(cfg.generation_timeout_seconds, cancel.set)
            timer.daemon = True
            timer.start()
            try:
                stream = (
                    iter(())
                    if cancel.is_set()
                    else generator.stream(
                        messages,
                        max_tokens=cfg.answer_max_tokens,
                        temperature=cfg.temperature,
                        cancel=cancel,
                    )
                )
                try:
                    for piece in stream:
                        if first_token is None:
                            first_token = time.perf_counter()
                        out = citations.feed(piece)
                        if out:
                            text_parts.append(out)
                            yield Event("token", {"text": out})
                finally:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()
            finally:
                timer.cancel()
            stopped = cancel.is_set()
            if stopped and time.monotonic() >= deadline:
                note = "\n\n[The answer was cut off: it took too long.]"
                text_parts.append(note)
                yield Event("token", {"text": note})
            tail = citations.flush()
            if tail:
                text_parts.append(tail)
                yield Event("token", {"text": tail})
            cited = [used[n - 1] for n in citations.cited]
        finally:
            scheduler.leave(ticket)

    t_done = time.perf_counter()
    # fit() drops sources from the end, so a source's [n] in the prompt is its rank.
    cited_public = [{**s.public(), "marker": s.rank} for s in cited]
    with rt.sessions() as session:
        conv = session.get_one(Conversation, conv_id)
        stored = _store_message(
            rt,
            session,
            conv,
            "assistant",
            "".join(text_parts),
            sources=cited_public,
            model=model_name,
        )
        timings = {
            "retrieve_ms": round((t_retrieved - t0) * 1000, 1),
            "queue_ms": round(queue_wait * 1000, 1),
            "first_token_ms": round((first_token - t0) * 1000, 1) if first_token else None,
            "total_ms": round((t_done - t0) * 1000, 1),
        }
        audit.record(
            session,
            actor=f"user:{user_id}",
            client=client,
            action="chat.answer",
            target=f"conversation:{conv_id}",
            outcome="stopped" if stopped else "ok",
            details={
                "chunks": [f"{s.doc_id}:{s.chunk_no}" for s in sources],
                "cited": [f"{s.doc_id}:{s.chunk_no}" for s in cited],
                "model": model_name,
                "timings": timings,
            },
        )
        session.commit()
        message_id = stored.id
    yield Event("sources", {"sources": cited_public})
    yield Event(
        "done",
        {
            "conversation": conv_id,
            "message_id": message_id,
            # The page shows tokens as plain text while they stream, then swaps in this
            # server-sanitised rendering of the whole answer (render.py).
            "html": render_answer("".join(text_parts), [s.rank for s in cited]),
            "timings": timings,
            "stopped": stopped,
        },
    )


# -- conversations -------------------------------------------------------------------


def list_conversations(rt: Runtime, session: Session, user: User) -> list[dict[str, Any]]:
    """The user's conversations, newest first, with decrypted titles."""
    rows = session.execute(
        select(Conversation)
        .where(Conversation.owner_id == user.id)
        .order_by(Conversation.updated_at.desc())
    ).scalars()
    return [
        {
            "id": c.id,
            "title": decrypt_for(rt, user.id, places.conversation_title(c.id), c.title_ct),
            "updated_at": c.updated_at.isoformat(),
        }
        for c in rows
    ]


def show_conversation(rt: Runtime, session: Session, user: User, conv_id: str) -> dict[str, Any]:
    """A conversation's messages; each stored source is re-checked against current grants."""

    conv = own_conversation(session, user, conv_id)
    messages = (
        session.execute(
            select(Message).where(Message.conversation_id == conv.id).order_by(Message.id)
        )
        .scalars()
        .all()
    )
    decoded = []
    cited_ids: set[str] = set()
    for m in messages:
        sources = (
            json.loads(
                decrypt_for(rt, user.id, places.message_sources(conv.id, m.id), m.sources_ct)
            )
            if m.sources_ct
            else []
        )
        cited_ids.update(s["doc_id"] for s in sources)
        decoded.append((m, sources))
    readable = readable_document_ids(session, cited_ids, principals_for(session, user))
    rated = session.execute(
        select(Feedback.message_id, Feedback.rating).where(
            Feedback.user_id == user.id,
            Feedback.message_id.in_([m.id for m in messages if m.role == "assistant"]),
        )
    )
    ratings: dict[int, str] = {row.message_id: row.rating for row in rated}
    out = []
    for m, sources in decoded:
        shown = [
            s if s["doc_id"] in readable else {"marker": s.get("marker"), "status": UNAVAILABLE}
            for s in sources
        ]
        text = decrypt_for(rt, user.id, places.message_text(conv.id, m.id), m.content_ct)
        item: dict[str, Any] = {
            "id": m.id,
            "role": m.role,
            "text": text,
            "sources": shown,
            "model": m.model,
            "created_at": m.created_at.isoformat(),
        }
        if m.role == "assistant":
            item["html"] = render_answer(text, [s["marker"] for s in shown if "doc_id" in s])
            item["feedback"] = ratings.get(m.id)
        out.append(item)
    return {
        "id": conv.id,
        "title": decrypt_for(rt, user.id, places.conversation_title(conv.id), conv.title_ct),
        "messages": out,
    }


def rename_conversation(
    rt: Runtime, session: Session, user: User, conv_id: str, title: str
) -> None:
    """Rename one of the user's conversations."""
    title = title.strip()
    if not title or len(title) > 200:
        raise InvalidInput("A title has 1-200 characters.")
    conv = own_conversation(session, user, conv_id)
    conv.title_ct = encrypt_for(rt, user.id, places.conversation_title(conv.id), title)


def delete_conversation(session: Session, user: User, conv_id: str) -> None:
    """Delete one of the user's conversations and its messages."""
    conv = own_conversation(session, user, conv_id)
    session.execute(delete(Message).where(Message.conversation_id == conv.id))
    session.delete(conv)
