"""Stop degenerate output: an answer that starts repeating itself is cut where the loop begins.

Small models loop ("Visitors park in the parking area." twenty times). llama.cpp's
repetition penalty makes loops rarer; this guard ends the ones that still happen: the
second time a sentence (of a few words or more) appears, or when the same run of words
comes back three times in a row without punctuation, the answer is cut before the repeat.
"""

from __future__ import annotations

import re

CUT_NOTE = "[The answer was cut short: it started repeating itself.]"

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?](?:[\"')\]]*)(?=\s)|\n")
MIN_SENTENCE_WORDS = 3
RUN_LENGTHS = range(3, 16)
RUN_REPEATS = 3


def find_loop(text: str) -> int | None:
    """Where the repetition starts in `text` (a cut offset), or None when there is none."""
    seen: set[tuple[str, ...]] = set()
    start = 0
    for m in _SENTENCE_END.finditer(text):
        sentence = text[start : m.end()]
        words = tuple(w.lower() for w in _WORD.findall(sentence))
        if len(words) >= MIN_SENTENCE_WORDS:
            if words in seen:
                return start + (len(sentence) - len(sentence.lstrip()))
            seen.add(words)
        start = m.end()
    return _word_run(text)


def _word_run(text: str) -> int | None:
    matches = list(_WORD.finditer(text))
    words = [m.group(0).lower() for m in matches]
    n = len(words)
    for k in RUN_LENGTHS:
        if n < k * RUN_REPEATS:
            break
        tail = words[n - k :]
        if all(words[n - k * (i + 1) : n - k * i] == tail for i in range(1, RUN_REPEATS)):
            return matches[n - k * (RUN_REPEATS - 1)].start()
    return None


class RepetitionGuard:
    """Feed the answer as it streams; `looped` turns true once it repeats itself."""

    def __init__(self) -> None:
        self.text = ""
        self.looped = False
        self.cut_at: int | None = None

    def feed(self, piece: str) -> bool:
        """Add a piece; True when generation should stop (the loop is found)."""
        if self.looped:
            return True
        self.text += piece
        cut = find_loop(self.text)
        if cut is not None:
            self.looped = True
            self.cut_at = cut
        return self.looped

    def kept(self) -> str:
        """The answer up to the loop (all of it when there is none)."""
        return self.text if self.cut_at is None else self.text[: self.cut_at].rstrip()
