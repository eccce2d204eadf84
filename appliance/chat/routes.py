"""HTTP routes: ask a question (Server-Sent Events) and manage one's conversations."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

from fastapi import Path, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import Send

from appliance.chat import conversations as convs
from appliance.chat import pipeline, service
from appliance.core.errors import LIBRARY_ERRORS, ApplianceError, translate
from appliance.deps import (
    CurrentUser,
    RuntimeDep,
    SessionDep,
    client_address,
    protected_router,
)

# Quiet validation: a question over the limit is refused with its length, never echoed.
router = protected_router(prefix="/api", tags=["chat"])


class ChatIn(BaseModel):
    """A question, optionally continuing a conversation."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        min_length=1,
        max_length=pipeline.MAX_QUESTION_CHARS,
        description="Refused (422, with its length and never its text) when longer.",
    )
    conversation_id: str | None = Field(None, max_length=32)


class FeedbackIn(BaseModel):
    """A rating of an answer; null clears it."""

    model_config = ConfigDict(extra="forbid")

    rating: Literal["helpful", "not_helpful"] | None


class RenameIn(BaseModel):
    """A new conversation title."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)


SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "A stream of Server-Sent Events, in order: `conversation` {id}; `evidence` "
            "{passages: [{rank, doc_id, chunk_no, filename, title, page, heading, url, "
            "score, sentences: [{text, highlight, score}]}], documents, evidence_ms}, every "
            "retrieved passage you may read, ranked, before the model starts; `status` "
            "{message, position, estimate_seconds} while the answer waits or is being "
            "read; `queue` {position}; `token` {text} pieces of the answer; `sources` "
            "{sources} the passages the checked answer cites (marker = evidence rank); "
            "`done` {conversation, message_id, html, text, claims: [{sentence, ranks, "
            "score, supported, checked}], unsupported, abstained, cut_short, timings: "
            "{retrieve_ms, evidence_ms, queue_ms, first_token_ms, total_ms}, stopped} "
            "where `html` is the checked answer as sanitised HTML (Markdown rendered on the "
            "server, links inert, no images, citation markers as buttons, unsupported "
            "sentences flagged); `error` {error, message} if the answer failed after it "
            "started."
        ),
        "content": {"text/event-stream": {}},
    }
}


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its body iterator however the response ends.

    When the browser goes away (the Stop button), uvicorn's `send` raises inside
    Starlette's loop, outside our generator, which stays suspended: without this its
    `finally` (stop generating, drain in the background, store, audit, free the queue
    slot) would wait for the garbage collector, holding the shared model's slot.
    """

    async def stream_response(self, send: Send) -> None:
        """Stream; then close the iterator (a no-op when it ran to its end)."""
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def _drain(events: Iterator[pipeline.Event], lock: threading.Lock) -> None:
    """Let a cancelled answer finish in the background so it is stored and audited.

    The lock waits out a step still running in the thread pool: a generator stepped from
    two threads at once raises "generator already executing", and the answer was lost.
    """
    while True:
        with lock:
            if next(events, None) is None:
                return


@router.post("/chat", responses=SSE_DOC, response_class=StreamingResponse)
async def chat(
    body: ChatIn, request: Request, user: CurrentUser, rt: RuntimeDep
) -> StreamingResponse:
    """Ask a question about the documents you may read; the answer streams as it is written.

    Only passages from documents you may read are retrieved and cited. The evidence comes
    first; every sentence of the answer is then checked against it (`done.claims`), and an
    answer the documents do not support says so. When nothing matches, the answer says so
    without consulting the model. Closing the connection stops the answer. Requests wait
    their turn for the shared model; `status` events tell the place and the estimate.
    """
    cancel = threading.Event()
    events = pipeline.answer(
        rt=rt,
        scheduler=rt.scheduler,
        user_id=user.id,
        question=body.question,
        conversation_id=body.conversation_id,
        cancel=cancel,
        client=client_address(request),
    )
    # The first step (validation, the conversation check, retrieval) runs before any byte
    # is sent, so its errors are ordinary HTTP errors rather than stream events.
    first = await run_in_threadpool(next, events)
    lock = threading.Lock()

    def step() -> pipeline.Event | None:
        with lock:
            return next(events, None)

    async def stream() -> AsyncIterator[str]:
        finished = False
        try:
            yield first.sse()
            while True:
                event = await run_in_threadpool(step)
                if event is None:
                    finished = True
                    return
                yield event.sse()
        except Exception as exc:  # the stream has started: report in-band, then end
            finished = True
            if isinstance(exc, (ApplianceError, *LIBRARY_ERRORS)):
                err = translate(exc)
                code, message = err.code, err.message
            else:
                code, message = "error", "The answer failed. Try again in a moment."
            yield pipeline.Event("error", {"error": code, "message": message}).sse()
        finally:
            if not finished:  # the client went away: stop generating, keep the record
                cancel.set()
                threading.Thread(target=_drain, args=(events, lock), daemon=True).start()

    return _ClosingStreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/conversations")
def conversations(user: CurrentUser, rt: RuntimeDep, session: SessionDep) -> list[dict[str, Any]]:
    """Your conversations, newest first."""
    return convs.list_conversations(rt, session, user)


@router.get("/conversations/{conversation_id}")
def conversation(
    conversation_id: str, user: CurrentUser, rt: RuntimeDep, session: SessionDep
) -> dict[str, Any]:
    """One of your conversations. Sources you can no longer read show as 'no longer available'."""
    return convs.show_conversation(rt, session, user, conversation_id)


@router.patch("/conversations/{conversation_id}", status_code=204)
def rename(
    conversation_id: str, body: RenameIn, user: CurrentUser, rt: RuntimeDep, session: SessionDep
) -> Response:
    """Rename one of your conversations."""
    convs.rename_conversation(rt, session, user, conversation_id, body.title)
    session.commit()
    return Response(status_code=204)


@router.delete("/conversations/{conversation_id}", status_code=204)
def remove(conversation_id: str, user: CurrentUser, session: SessionDep) -> Response:
    """Delete one of your conversations and its messages."""
    convs.delete_conversation(session, user, conversation_id)
    session.commit()
    return Response(status_code=204)


@router.put("/chat/messages/{message_id}/feedback", status_code=204)
def feedback(
    message_id: Annotated[int, Path(ge=1, le=2**62)],
    body: FeedbackIn,
    user: CurrentUser,
    session: SessionDep,
) -> Response:
    """Rate one of your answers `helpful` or `not_helpful` (null clears the rating).

    Rating again replaces the earlier rating. Answers in others' conversations are 404.
    """
    service.rate_answer(session=session, user=user, message_id=message_id, rating=body.rating)
    session.commit()
    return Response(status_code=204)
