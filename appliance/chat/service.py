"""Feedback on answers: a conversation's owner rates its answers helpful or not helpful."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from appliance.auth.tables import User
from appliance.chat.tables import RATINGS, Conversation, Feedback, Message
from appliance.core.db import utcnow
from appliance.core.errors import InvalidInput, NotFound

NO_SUCH_ANSWER = "No such answer of yours."


def rate_answer(*, session: Session, user: User, message_id: int, rating: str | None) -> None:
    """Store (or with rating None, clear) the user's rating of an answer in their conversation.

    An answer in someone else's conversation, a question, or an unknown id is NotFound.
    """
    if rating is not None and rating not in RATINGS:
        raise InvalidInput(f"A rating is one of: {', '.join(RATINGS)}.")
    message = session.get(Message, message_id)
    conv = session.get(Conversation, message.conversation_id) if message is not None else None
    if message is None or conv is None or conv.owner_id != user.id or message.role != "assistant":
        raise NotFound(NO_SUCH_ANSWER)
    if rating is None:
        row = session.get(Feedback, (message.id, user.id))
        if row is not None:
            session.delete(row)
        return
    # One statement, so two ratings sent at once cannot both insert (a 500 on the second).
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    session.execute(
        insert(Feedback)
        .values(message_id=message.id, user_id=user.id, rating=rating, created_at=now)
        .on_conflict_do_update(
            index_elements=["message_id", "user_id"], set_={"rating": rating, "created_at": now}
        )
    )
