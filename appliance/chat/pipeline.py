"""The one place a question's path is composed.

retrieve (question alone and with its context, fused; `candidates` of them) -> evidence
(re-ranked by their best sentences, the best `top_k` kept) -> prompt (sentence windows
within a budget) -> generate (queued, loop-guarded) -> attribute (each sentence checked
against the evidence) -> store and audit.

``answer()`` is a plain generator of events, so the HTTP route (Server-Sent Events, run off
the event loop) and the CLI (`appliance ask`) share it. Events, in order:

    conversation  {id}
    evidence      {passages: [...], documents, evidence_ms}     before the model starts
    status        {message, position, estimate_seconds}         while it waits and reads
    queue         {position}                                    (older clients)
    token         {text}                                        the answer as it streams
    sources       {sources: [...]}                              the passages cited
    done          {html, claims, unsupported, abstained, cut_short, timings, ...}

Setting ``cancel`` (a client went away) stops generation at the next token.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from appliance.admin import service as switches
from appliance.audit import service as audit
from appliance.chat import claims, evidence, prompt
from appliance.chat.citations import CitationFilter
from appliance.chat.conversations import active_user, encrypt_for, history_of, own_conversation
from appliance.chat.render import UNSUPPORTED_MARK, render_answer
from appliance.chat.repetition import CUT_NOTE, RepetitionGuard
from appliance.chat.retrieval import retrieve
from appliance.chat.tables import Conversation, Message
from appliance.core import places
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput
from appliance.core.runtime import Runtime
from appliance.core.scheduler import FairScheduler
from models.protocols import ChatMessage

NO_SOURCE_ANSWER = (
    "I could not find anything about this in the documents you can access. "
    "Try other words, or ask the document's owner to share it with you."
)
MAX_QUESTION_CHARS = 4000


@dataclass
class Event:
    """One server-sent event: ``kind`` is the SSE event name, ``data`` its JSON body."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def sse(self) -> str:
        """Encode as a Server-Sent Event."""
        return f"event: {self.kind}\ndata: {json.dumps(self.data)}\n\n"


def _store_message(
    rt: Runtime,
    session: Session,
    conv: Conversation,
    role: str,
    text: str,
    *,
    sources: list[dict[str, Any]] | None = None,
    claims: list[dict[str, Any]] | None = None,
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
    if claims is not None:
        msg.claims_ct = encrypt_for(
            rt, conv.owner_id, places.message_claims(conv.id, msg.id), json.dumps(claims)
        )
    conv.updated_at = utcnow()
    return msg


def retrieval_query(history: list[ChatMessage], question: str) -> str:
    """A follow-up searched with the previous question, which gives it context."""
    previous = [m.content for m in history if m.role == "user"]
    return f"{previous[-1]}\n{question}" if previous else question


@dataclass
class _Throughput:
    """Measured prompt-evaluation speed of the chat model, for honest wait estimates."""

    tokens_per_second: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        speed = tokens / seconds
        with self.lock:
            old = self.tokens_per_second
            self.tokens_per_second = speed if old is None else 0.7 * old + 0.3 * speed

    def estimate(self, tokens: int) -> float | None:
        with self.lock:
            speed = self.tokens_per_second
        return round(tokens / speed, 1) if speed else None


_throughput: dict[str, _Throughput] = {}


def _wait_message(passages: int, documents: int, position: int, estimate: float | None) -> str:
    found = (
        f"Found {passages} passage{'s' if passages != 1 else ''} in {documents} "
        f"document{'s' if documents != 1 else ''}."
    )
    where = f" (place {position + 1} in the queue)" if position > 0 else ""
    about = f" About {max(1, round(estimate))} s." if estimate else ""
    return f"{found} The assistant is reading them{where}...{about}"


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
    """Answer a question for a user; yields the events listed in the module docstring."""
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
        with_context = retrieval_query(history, question)
        sources = retrieve(
            rt=rt,
            session=session,
            user=user,
            query=question,
            also=[with_context] if with_context != question else [],
            k=max(cfg.candidates, cfg.top_k),
            min_score=cfg.min_score,
        )
        _store_message(rt, session, conv, "user", question)
        session.commit()
        conv_id = conv.id
    t_retrieved = time.perf_counter()
    passages = evidence.build(
        embedder=rt.embedder(),
        question=question,
        sources=sources,
        context=with_context,
        keep=cfg.top_k,
    )
    documents = len({p.source.doc_id for p in passages})
    t_evidence = time.perf_counter()
    yield Event("conversation", {"id": conv_id})
    yield Event(
        "evidence",
        {
            "passages": [_public(p) for p in passages],
            "documents": documents,
            "evidence_ms": round((t_evidence - t0) * 1000, 1),
        },
    )

    model_name: str | None = None
    text = ""
    attribution: claims.Attribution | None = None
    queue_wait = 0.0
    first_token: float | None = None
    stopped = cut_short = False
    used: list[evidence.Passage] = []
    if not passages:
        # Nothing readable matched: say so without asking the model to invent an answer,
        # and without any hint that documents the user cannot read exist.
        text = NO_SOURCE_ANSWER
        yield Event("token", {"text": text})
    elif claims.evidence_is_weak(passages):
        text = claims.ABSTAIN_TEXT
        attribution = claims.Attribution([], text, True, "weak_evidence")
        yield Event("token", {"text": text})
    else:
        generator = rt.generator()
        model_name = generator.name
        messages, used = prompt.from_evidence(
            passages=passages,
            history=prompt.model_history(
                history, canned=(NO_SOURCE_ANSWER, claims.ABSTAIN_TEXT, claims.QUOTE_INTRO)
            ),
            question=question,
            count_tokens=generator.count_tokens,
            count_chat_tokens=generator.count_chat_tokens,
            context_length=generator.context_length,
            answer_tokens=cfg.answer_max_tokens,
            source_tokens=cfg.source_tokens,
            history_tokens=cfg.history_tokens,
        )
        prompt_tokens = generator.count_chat_tokens(messages)
        speed = _throughput.setdefault(generator.name, _Throughput())
        ticket = scheduler.enter(user_id)
        try:
            t_queue = time.perf_counter()
            position = scheduler.position(ticket)
            shown = -1
            while not cancel.is_set():
                if position != shown:
                    wait = speed.estimate(prompt_tokens * (position + 1))
                    message = _wait_message(len(passages), documents, position, wait)
                    yield Event(
                        "status",
                        {"message": message, "position": position, "estimate_seconds": wait},
                    )
                    if position > 0:
                        yield Event("queue", {"position": position})
                    shown = position
                if position == 0:
                    break
                position = scheduler.wait(ticket, 0.5)
            queue_wait = time.perf_counter() - t_queue
            markers = CitationFilter(len(used) if not cancel.is_set() else 0)
            guard = RepetitionGuard()
            deadline = time.monotonic() + cfg.generation_timeout_seconds
            timer = threading.Timer(cfg.generation_timeout_seconds, cancel.set)
            timer.daemon = True
            timer.start()
            t_start = time.perf_counter()
            try:
                stream = (
                    iter(())
                    if cancel.is_set()
                    else generator.stream(
                        messages,
                        max_tokens=cfg.answer_max_tokens,
                        temperature=cfg.temperature,
                        cancel=cancel,
                        repeat_penalty=cfg.repeat_penalty,
                    )
                )
                try:
                    for piece in stream:
                        if first_token is None:
                            first_token = time.perf_counter()
                            speed.observe(prompt_tokens, first_token - t_start)
                        out = markers.feed(piece)
                        if guard.feed(out):
                            cut_short = True
                            break
                        if out:
                            yield Event("token", {"text": out})
                finally:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()
            finally:
                timer.cancel()
            stopped = cancel.is_set()
            if not cut_short:
                guard.feed(markers.flush())
            text = _strip_markup(guard.kept())
            if text:
                attribution = claims.attribute(
                    embedder=rt.embedder(),
                    answer=text,
                    passages=passages,
                    prompt_ranks=[p.rank for p in used],
                )
                if attribution.abstained and not stopped and claims.evidence_is_strong(passages):
                    attribution = claims.quote_best(passages)
                # An answer the asker stopped stays as far as it went, flags and all.
                if not (stopped and attribution.abstained):
                    text = attribution.text
            notes = []
            if cut_short:
                notes.append(CUT_NOTE)
            if stopped and time.monotonic() >= deadline:
                notes.append("[The answer was cut off: it took too long.]")
            for note in notes:
                text = f"{text}\n\n{note}"
                yield Event("token", {"text": f"\n\n{note}"})
        finally:
            scheduler.leave(ticket)

    t_done = time.perf_counter()
    cited = attribution.cited_ranks if attribution is not None else []
    by_rank = {p.rank: p for p in passages}
    cited_public = [{**_public(by_rank[r]), "marker": r} for r in cited if r in by_rank]
    claim_list = [c.public() for c in attribution.claims] if attribution is not None else []
    abstained = attribution.abstained if attribution is not None else not passages
    unsupported = attribution.unsupported if attribution is not None else 0
    timings = {
        "retrieve_ms": round((t_retrieved - t0) * 1000, 1),
        "evidence_ms": round((t_evidence - t0) * 1000, 1),
        "queue_ms": round(queue_wait * 1000, 1),
        "first_token_ms": round((first_token - t0) * 1000, 1) if first_token else None,
        "total_ms": round((t_done - t0) * 1000, 1),
    }
    with rt.sessions() as session:
        conv = session.get_one(Conversation, conv_id)
        stored = _store_message(
            rt,
            session,
            conv,
            "assistant",
            text,
            # Only the highlighted sentences are kept with the answer: the stored copy of
            # document text stays small, and the retention job scrubs it with the document.
            sources=[_stored(p) for p in passages],
            claims=claim_list,
            model=model_name,
        )
        audit.record(
            session,
            actor=f"user:{user_id}",
            client=client,
            action="chat.answer",
            target=f"conversation:{conv_id}",
            outcome="stopped" if stopped else "ok",
            details={
                "chunks": [f"{p.source.doc_id}:{p.source.chunk_no}" for p in passages],
                "cited": [
                    f"{by_rank[r].source.doc_id}:{by_rank[r].source.chunk_no}" for r in cited
                ],
                # Per sentence: which passages (evidence ranks) support it, and how well;
                # never the sentence itself (no document text in the log).
                "claims": [
                    {"ranks": c["ranks"], "score": c["score"], "supported": c["supported"]}
                    for c in claim_list
                    if c["checked"]
                ],
                "unsupported": unsupported,
                "abstained": abstained,
                "cut_short": cut_short,
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
            # server-sanitised rendering of the checked answer (render.py).
            "html": render_answer(text, cited),
            "text": text.replace(UNSUPPORTED_MARK, " (not found in your documents)"),
            "claims": claim_list,
            "unsupported": unsupported,
            "abstained": abstained,
            "cut_short": cut_short,
            "timings": timings,
            "stopped": stopped,
        },
    )


def _public(passage: evidence.Passage) -> dict[str, Any]:
    s = passage.source
    return passage.public(f"/api/documents/{s.doc_id}/chunks/{s.chunk_no}")


def _stored(passage: evidence.Passage) -> dict[str, Any]:
    data = _public(passage)
    data["sentences"] = [x for x in data["sentences"] if x["highlight"]]
    return {**data, "marker": passage.rank}


_MARKUP = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>\n]{0,300})?/?>")
# A tag the model began but never closed when the answer ended ("... company. </").
_CUT_TAG = re.compile(r"\s*</?[A-Za-z0-9-]*\s*$")


def _strip_markup(text: str) -> str:
    """Drop tag-like debris a small model copies from the prompt (``</source>``, ``</pre>``).

    The renderer would show it inert anyway; removed, it cannot pass for a sentence either.
    """
    return _CUT_TAG.sub("", _MARKUP.sub("", text)).strip()
