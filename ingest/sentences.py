"""Sentences of a passage: how evidence, claims and the sentence vectors stored at
ingestion all split a chunk's text, so the stored vectors line up with the sentences shown.

A sentence ends at . ! ? (or a closing quote or bracket after them) followed by space and
something that starts a sentence; a blank line, and a line break before a list item or a
heading, end one too. Very long runs are cut at a word near ``MAX_SENTENCE_CHARS``.
``SPLIT_VERSION`` names these rules in what is stored: change it with them.
"""

from __future__ import annotations

import re
import struct

import numpy as np
import numpy.typing as npt

MAX_SENTENCE_CHARS = 400
SPLIT_VERSION = 1

# A sentence ends at . ! ? (or a closing quote/bracket after them) followed by space and
# something that starts a sentence; line breaks between list items and headings end one too.
_BOUNDARY = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])"
    r"|\n\s*\n"
    r"|\n(?=\s*(?:[-*\u2022]|\d+[.)]|#+)\s)"
)
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "no.", "fig.", "mr.", "dr.")


def split_sentences(text: str) -> list[str]:
    """Split a passage or an answer into sentences (list items and headings count as one)."""
    pieces: list[str] = []
    for raw in _BOUNDARY.split(text):
        piece = " ".join(raw.split())
        if not piece:
            continue
        if pieces and pieces[-1].lower().endswith(_ABBREVIATIONS):
            pieces[-1] = f"{pieces[-1]} {piece}"
            continue
        while len(piece) > MAX_SENTENCE_CHARS:
            cut = piece.rfind(" ", 0, MAX_SENTENCE_CHARS)
            cut = cut if cut > MAX_SENTENCE_CHARS // 2 else MAX_SENTENCE_CHARS
            pieces.append(piece[:cut])
            piece = piece[cut:].lstrip()
        if piece:
            pieces.append(piece)
    return pieces


_HEADER = struct.Struct("<2sBHI")  # magic, split version, dimension, sentence count


def pack_vectors(vectors: npt.NDArray[np.float32]) -> bytes:
    """The sentence vectors of one chunk as bytes (float16: a cosine moves by < 0.001)."""
    count, dimension = vectors.shape
    return _HEADER.pack(b"SV", SPLIT_VERSION, dimension, count) + vectors.astype("<f2").tobytes()


def unpack_vectors(blob: bytes, *, sentences: int) -> npt.NDArray[np.float32] | None:
    """The vectors packed by ``pack_vectors``, or None when they no longer fit the text's
    sentences (another split version, another count): the caller embeds them afresh."""
    if len(blob) < _HEADER.size:
        return None
    magic, version, dimension, count = _HEADER.unpack_from(blob)
    body = blob[_HEADER.size :]
    if magic != b"SV" or version != SPLIT_VERSION or count != sentences:
        return None
    if len(body) != count * dimension * 2:
        return None
    return np.frombuffer(body, dtype="<f2").astype(np.float32).reshape(count, dimension)
