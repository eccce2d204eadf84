"""Citation markers in a streamed answer: keep [n] that name a provided source, drop the rest.

Works on a stream: a trailing fragment that could still become a marker (``[1`` or ``!``)
is held back until the next piece shows what it is. Image syntax ``![`` is defused into
plain ``[`` so an answer can never ask a renderer to fetch an image.
"""

from __future__ import annotations

import re

_MARKER = re.compile(r"\[(\d{1,3})\]")
_PARTIAL = re.compile(r"(!?\[\d{0,3}|!)$")  # "![" split over pieces is held whole


class CitationFilter:
    """Feed text pieces, get back text with invented markers removed."""

    def __init__(self, n_sources: int) -> None:
        self.n_sources = n_sources
        self.cited: list[int] = []
        self._pending = ""

    def _clean(self, text: str) -> str:
        def keep(match: re.Match[str]) -> str:
            n = int(match.group(1))
            if 1 <= n <= self.n_sources:
                if n not in self.cited:
                    self.cited.append(n)
                return match.group(0)
            return ""

        return _MARKER.sub(keep, text.replace("![", "["))

    def feed(self, piece: str) -> str:
        """Add a piece; return the part that is now safe to emit."""
        text = self._pending + piece
        hold = _PARTIAL.search(text)
        if hold:
            self._pending, text = text[hold.start() :], text[: hold.start()]
        else:
            self._pending = ""
        return self._clean(text)

    def flush(self) -> str:
        """Emit whatever is held back at the end of the stream."""
        text, self._pending = self._pending, ""
        return self._clean(text)


def clean_answer(text: str, n_sources: int) -> tuple[str, list[int]]:
    """Filter a whole answer at once; returns (text, cited numbers in order of first use)."""
    f = CitationFilter(n_sources)
    out = f.feed(text) + f.flush()
    return out, f.cited
