"""Feedback on answers: a conversation's owner rates its answers helpful or not helpful."""

from __future__ import annotations

from sqlalchemy.orm import Session

from appliance.auth.tables import User
from appliance.chat.tables import RATINGS, Conversation, Feedback, Message
from appliance.db import utcnow
from appliance.errors import InvalidInput, NotFound

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
    row = session.get(Feedback, (message.id, user.id))
    if rating is None:
        if row is not None:
            session.delete(row)
        return
    if row is None:
        session.add(Feedback(message_id=message.id, user_id=user.id, rating=rating))
    else:
        row.rating = rating
        row.created_at = utcnow()
