"""Cut parsed elements into overlapping, section-aligned chunks that fit the embedder's window."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ingest.parse import Element

_ELEMENT_SEPARATOR = "\n\n"
_SENTENCE_END_RE = re.compile(r"(?<=[.!?…。！？])\s+")
_BOUNDARY_RE = re.compile(r"(?<=[.!?…。！？])\s+|\n\s*")  # where a sentence or line starts
# A token is rarely longer than this many characters; bounds the search when a single
# "word" (a URL, base64) has to be cut by characters.
_MAX_CHARS_PER_TOKEN = 50


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document's text, small enough to embed, with where it came from."""

    chunk_no: int
    text: str
    page: int | None
    heading: str | None


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str
    tokens: int
    page: int | None
    separator: str  # what joins it to the piece before it in the same chunk


def chunk_elements(
    elements: Sequence[Element],
    *,
    count_tokens: Callable[[str], int],
    max_tokens: int = 200,
    overlap_tokens: int = 40,
) -> list[Chunk]:
    """Pack elements into chunks of at most max_tokens, one section at a time, numbered from 0.

    A heading starts a new chunk; consecutive elements of a section share a chunk while they
    fit; an element too long for one chunk is cut at sentence, then word boundaries. A chunk
    that continues its section begins with about overlap_tokens of the previous chunk's end.
    Title elements are not repeated in the text (the heading travels with the chunk) unless
    a section has nothing else. The page is that of the chunk's first new piece of text.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if overlap_tokens < 0:
        raise ValueError("overlap_tokens must not be negative")
    # Overlap is context, not content: at most half a chunk, so every chunk carries new text.
    overlap = min(overlap_tokens, max_tokens // 2)
    piece_limit = max_tokens - overlap

    chunks: list[Chunk] = []
    for heading, section in _sections(elements):
        pieces = list(_section_pieces(section, heading, piece_limit, count_tokens))
        for text, page in _pack(pieces, max_tokens, overlap, count_tokens):
            chunks.append(Chunk(chunk_no=len(chunks), text=text, page=page, heading=heading))
    return chunks


def _sections(elements: Sequence[Element]) -> Iterator[tuple[str | None, list[Element]]]:
    """Runs of elements under one heading; every Title element opens a new run."""
    current: list[Element] = []
    heading: str | None = None
    for element in elements:
        if not element.text.strip():
            continue
        if current and (element.category == "Title" or element.heading != heading):
            yield heading, current
            current = []
        if not current:
            heading = element.heading
        current.append(element)
    if current:
        yield heading, current


def _section_pieces(
    section: list[Element],
    heading: str | None,
    limit: int,
    count_tokens: Callable[[str], int],
) -> Iterator[_Piece]:
    """The section's text as pieces of at most limit tokens each."""
    body = [e for e in section if not (e.category == "Title" and e.text.strip() == heading)]
    for element in body or section:
        parts = _split(element.text.strip(), limit, count_tokens)
        for index, (text, separator, tokens) in enumerate(parts):
            yield _Piece(text, tokens, element.page, separator if index else _ELEMENT_SEPARATOR)


def _pack(
    pieces: list[_Piece],
    max_tokens: int,
    overlap: int,
    count_tokens: Callable[[str], int],
) -> Iterator[tuple[str, int | None]]:
    """Greedily join pieces into chunk texts; each new chunk starts with the last one's tail."""
    sizes = [piece.tokens for piece in pieces]
    start = 0
    tail = ""
    while start < len(pieces):
        end = start + 1
        total = (count_tokens(tail) if tail else 0) + sizes[start]
        while end < len(pieces) and total + sizes[end] <= max_tokens:
            total += sizes[end]
            end += 1
        text = _compose(tail, pieces[start:end])
        # Adding counts is exact for word-piece tokenizers; confirm, and back off for others.
        while count_tokens(text) > max_tokens and (end - start > 1 or tail):
            if end - start > 1:
                end -= 1
            else:
                tail = _tail(tail, count_tokens(tail) - 1, count_tokens)
            text = _compose(tail, pieces[start:end])
        yield text, pieces[start].page
        start = end
        if start < len(pieces):
            tail = _tail(text, min(overlap, max_tokens - sizes[start]), count_tokens)


def _compose(tail: str, pieces: Sequence[_Piece]) -> str:
    text = tail + pieces[0].separator + pieces[0].text if tail else pieces[0].text
    return text + "".join(piece.separator + piece.text for piece in pieces[1:])


def _split(text: str, limit: int, count_tokens: Callable[[str], int]) -> list[tuple[str, str, int]]:
    """Cut text into (piece, separator, tokens) of at most limit tokens: lines, sentences, words."""
    tokens = count_tokens(text)
    if tokens <= limit:
        return [(text, "", tokens)]
    units: list[tuple[str, str, int]] = []  # text, separator before it, tokens
    for line in text.split("\n"):
        sentences = [s for s in _SENTENCE_END_RE.split(line.strip()) if s]
        for index, sentence in enumerate(sentences):
            separator = " " if index else "\n"
            tokens = count_tokens(sentence)
            if tokens <= limit:
                units.append((sentence, separator, tokens))
                continue
            for word_no, word in enumerate(sentence.split()):
                for cut_no, cut in enumerate(_cut_word(word, limit, count_tokens)):
                    first = word_no == 0 and cut_no == 0
                    # Pieces of one word rejoin without a space when they share a chunk.
                    joiner = separator if first else (" " if cut_no == 0 else "")
                    units.append((cut, joiner, count_tokens(cut)))

    pieces: list[tuple[str, str, int]] = []
    start = 0
    while start < len(units):
        end, total = start + 1, units[start][2]
        while end < len(units) and total + units[end][2] <= limit:
            total += units[end][2]
            end += 1
        piece, tokens = _measure(units[start:end], count_tokens)
        # Adding counts is exact for word-piece tokenizers; confirm, and back off for others.
        while tokens > limit and end - start > 1:
            end -= 1
            piece, tokens = _measure(units[start:end], count_tokens)
        pieces.append((piece, "" if start == 0 else units[start][1], tokens))
        start = end
    return pieces


def _measure(
    units: Sequence[tuple[str, str, int]], count_tokens: Callable[[str], int]
) -> tuple[str, int]:
    """Join units and count the result's tokens (a single unit's count is known)."""
    if len(units) == 1:
        return units[0][0], units[0][2]
    text = _join(units)
    return text, count_tokens(text)


def _join(units: Sequence[tuple[str, str, int]]) -> str:
    return units[0][0] + "".join(separator + text for text, separator, _ in units[1:])


def _cut_word(word: str, limit: int, count_tokens: Callable[[str], int]) -> Iterator[str]:
    """Cut one over-long word into runs of characters of at most limit tokens."""
    rest = word
    while rest:
        if count_tokens(rest) <= limit:
            yield rest
            return
        low, high = 1, min(len(rest), limit * _MAX_CHARS_PER_TOKEN)
        while low < high:  # the longest prefix that fits
            middle = (low + high + 1) // 2
            if count_tokens(rest[:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        yield rest[:low]
        rest = rest[low:]


def _tail(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The longest end of text within budget tokens, starting at a sentence if that keeps half."""
    if budget <= 0:
        return ""
    # Every word is at least one token, so the answer starts within the last budget words.
    starts = [0] + [match.end() for match in re.finditer(r"\s+", text)]
    starts = [start for start in starts[-(budget + 1) :] if start < len(text)]
    low, high = 0, len(starts)  # find the first start whose suffix fits
    while low < high:
        middle = (low + high) // 2
        if count_tokens(text[starts[middle] :]) <= budget:
            high = middle
        else:
            low = middle + 1
    if low == len(starts):
        return ""
    start = starts[low]
    boundaries = [m.end() for m in _BOUNDARY_RE.finditer(text) if m.end() >= start]
    if boundaries and 2 * count_tokens(text[min(boundaries) :]) >= budget:
        start = min(boundaries)
    return text[start:].strip()
