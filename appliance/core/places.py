"""Where each ciphertext lives: the key kinds and the one home of every "place" string.

A ciphertext's additional authenticated data is ``"<kind>:<owner_id>:<place>"``
(`appliance.core.crypto`), so a ciphertext copied to another place fails to open. Every
domain builds its places here, so ingestion, retrieval, export and rotation always agree.
"""

from __future__ import annotations

DOC_KEY = "doc"
"""Key-store kind of a document's data key (owner: the document id)."""
CHAT_KEY = "chat"
"""Key-store kind of a user's chat-history data key (owner: the user id)."""
SYSTEM_KIND = "system"
"""Key-store kind of the appliance's own data keys (account fields, the MAC key)."""
FIELDS_KIND = SYSTEM_KIND
"""Kind of the system data key that encrypts account fields (TOTP secrets)."""
FIELDS_OWNER = "fields"
"""Owner id of that system data key."""
MAC_OWNER = "mac"
"""Owner id of the system key behind keyed hashes (audit checkpoints, pseudonyms)."""
VECTORS_OWNER = "vectors"
"""Owner id of the system key that turns the index's vectors (``ingest.keyed``)."""

DOC_FILENAME = "filename"
DOC_TITLE = "title"
DOC_BLOB = "blob"
"""The encrypted original file."""


def chunk_text(chunk_no: int) -> str:
    """A chunk's text, in its document's key."""
    return f"chunk:{chunk_no}:text"


def chunk_heading(chunk_no: int) -> str:
    """A chunk's heading, in its document's key."""
    return f"chunk:{chunk_no}:heading"


def chunk_sentence_vectors(chunk_no: int) -> str:
    """The vectors of a chunk's sentences, in its document's key."""
    return f"chunk:{chunk_no}:sentence-vectors"


def conversation(conv_id: str, what: str) -> str:
    """Part of a conversation, in its owner's chat key: ``title``, ``message:<id>``, ..."""
    return f"conversation:{conv_id}:{what}"


def conversation_title(conv_id: str) -> str:
    """A conversation's title."""
    return conversation(conv_id, "title")


def message_text(conv_id: str, msg_id: int) -> str:
    """A message's text."""
    return conversation(conv_id, f"message:{msg_id}")


def message_sources(conv_id: str, msg_id: int) -> str:
    """The sources (evidence) stored with an answer."""
    return conversation(conv_id, f"sources:{msg_id}")


def message_claims(conv_id: str, msg_id: int) -> str:
    """The checked claims stored with an answer (sentence, supporting ranks, score)."""
    return conversation(conv_id, f"claims:{msg_id}")


def totp_secret(user_id: str) -> str:
    """A user's TOTP secret, in the system fields key."""
    return f"user:{user_id}:totp"
