"""The operator's questions as a user (`appliance search|ask --as USER`), wherever they run.

The same functions serve the CLI when it opens the data itself and the running service
when the CLI reaches it over the operator socket, so the output is the same either way.
Each acts with exactly the named user's access; searches are audited as the operator's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from appliance.audit import service as audit
from appliance.auth import service as users
from appliance.chat import evidence, pipeline
from appliance.chat.retrieval import Source, retrieve
from appliance.core.runtime import Runtime


def search_as(*, rt: Runtime, as_user: str, question: str, k: int, operator: str) -> list[Source]:
    """The `k` best passages for this user, ranked as an answer's evidence ranks them; audited.

    Like an answer, the search takes `chat.candidates` from the index and keeps the `k` whose
    best sentences match the question; each score is that combined relevance.
    """
    with rt.sessions() as session:
        user = users.get_user_by_name(session, as_user)
        found = retrieve(
            rt=rt,
            session=session,
            user=user,
            query=question,
            k=max(k, rt.settings.chat.candidates),
            min_score=rt.settings.chat.min_score,
        )
        passages = evidence.build(embedder=rt.embedder(), question=question, sources=found, keep=k)
        sources = [replace(p.source, rank=p.rank, score=round(p.relevance, 4)) for p in passages]
        audit.record(
            session,
            actor=operator,
            action="search.as_user",
            target=f"user:{user.id}",
            details={"chunks": [f"{s.doc_id}:{s.chunk_no}" for s in sources]},
        )
        session.commit()
    return sources


def ask_as(
    *, rt: Runtime, as_user: str, question: str, conversation: str | None
) -> Iterator[pipeline.Event]:
    """The answer events for this user (the conversation is theirs, stored as any other)."""
    with rt.sessions() as session:
        user_id = users.get_user_by_name(session, as_user).id
    yield from pipeline.answer(
        rt=rt,
        scheduler=rt.scheduler,
        user_id=user_id,
        question=question,
        conversation_id=conversation,
        client="cli",
    )
