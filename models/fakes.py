"""Deterministic, dependency-free stand-ins for the Embedder and Generator protocols.

For unit tests of other components; they never load a model. Texts that share words get
similar FakeEmbedder vectors, so retrieval ordering in tests behaves plausibly.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.protocols import ChatMessage, ContextLengthExceededError, ModelError

_WORD = re.compile(r"\w+")
# Roughly what a ChatML-style template adds around each message and after the last one.
_TEMPLATE_TOKENS_PER_MESSAGE = 4
_TEMPLATE_TOKENS_PER_PROMPT = 3


class FakeEmbedder:
    """Bag-of-words embedder: each lower-cased word adds a hashed +-1 to one dimension."""

    def __init__(
        self, *, dimension: int = 384, max_tokens: int = 256, name: str = "fake-embedder"
    ) -> None:
        """Create an embedder of `dimension`-sized vectors."""
        if dimension < 2:
            raise ValueError("dimension must be at least 2")
        self.name = name
        self.dimension = dimension
        self.max_tokens = max_tokens
        self.calls: list[list[str]] = []

    def _slot(self, word: str) -> tuple[int, float]:
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return (value >> 1) % self.dimension, (1.0 if value & 1 else -1.0)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Return (len(texts), dimension) float32 L2-normalised bag-of-words vectors."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            # A text without words still gets a unit vector, the same one every time.
            for word in _WORD.findall(text.lower()) or [""]:
                index, sign = self._slot(word)
                out[row, index] += sign
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:  # words that cancelled out exactly
                index, sign = self._slot("")
                out[row, index] = sign
            else:
                out[row] /= norm
        return out

    def count_tokens(self, text: str) -> int:
        """Count whitespace-separated words."""
        return len(text.split())


@dataclass(frozen=True, slots=True)
class FakeCall:
    """One FakeGenerator.stream call, as recorded."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]


Answer = str | Sequence[str] | Callable[[Sequence[ChatMessage]], str] | None


class FakeGenerator:
    """Streams a scripted answer (or an echo of the last user message) word by word.

    `answer` may be a string (always that), a sequence of strings (one per call, the last
    repeated), a function of the messages, or None for "Echo: <last user message>".
    `error` is raised after `error_after` pieces; `delay` seconds pass before each piece.
    """

    def __init__(
        self,
        answer: Answer = None,
        *,
        name: str = "fake-generator",
        context_length: int = 4096,
        delay: float = 0.0,
        error: Exception | None = None,
        error_after: int = 0,
    ) -> None:
        """Create a generator that answers as scripted by `answer`."""
        self.name = name
        self.context_length = context_length
        self.calls: list[FakeCall] = []
        self._answer = answer
        self._delay = delay
        self._error = error
        self._error_after = error_after
        self._lock = threading.Lock()

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        """The messages of the most recent call."""
        if not self.calls:
            raise AssertionError("FakeGenerator.stream was never called")
        return self.calls[-1].messages

    def _script(self, messages: Sequence[ChatMessage], call_index: int) -> str:
        answer = self._answer
        if answer is None:
            last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
            return f"Echo: {last_user}"
        if isinstance(answer, str):
            return answer
        if callable(answer):
            return answer(messages)
        if not answer:
            return ""
        return answer[min(call_index, len(answer) - 1)]

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.2,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
        repeat_penalty: float = 1.0,
    ) -> Generator[str, None, None]:
        """Yield the answer word by word (the pieces join to the answer), at most max_tokens."""
        if max_tokens < 1:
            raise ModelError(f"max_tokens must be at least 1, got {max_tokens}.")
        if isinstance(stop, str):
            stop = (stop,)
        prompt_tokens = self.count_chat_tokens(messages)
        if prompt_tokens >= self.context_length:
            raise ContextLengthExceededError(
                f"The prompt has {prompt_tokens} tokens but {self.name!r} runs with a context "
                f"of {self.context_length}."
            )
        if repeat_penalty < 1.0:
            raise ModelError(f"repeat_penalty must be at least 1.0, got {repeat_penalty}.")
        with self._lock:
            index = len(self.calls)
            self.calls.append(FakeCall(tuple(messages), max_tokens, temperature, tuple(stop)))
        text = self._script(messages, index)
        cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
        return self._pieces(text[:cut], max_tokens, cancel)

    def _pieces(
        self, text: str, max_tokens: int, cancel: threading.Event | None
    ) -> Generator[str, None, None]:
        pieces = re.findall(r"\s*\S+", text)
        # Trailing whitespace stays on the last piece so the pieces always join to the text.
        if pieces and len("".join(pieces)) < len(text):
            pieces[-1] += text[len("".join(pieces)) :]
        for count, piece in enumerate(pieces[:max_tokens]):
            if self._error is not None and count >= self._error_after:
                raise self._error
            if self._delay:
                if cancel is not None:
                    cancel.wait(self._delay)
                else:
                    time.sleep(self._delay)
            if cancel is not None and cancel.is_set():
                return
            yield piece
        if self._error is not None:
            raise self._error

    def count_tokens(self, text: str) -> int:
        """Count whitespace-separated words."""
        return len(text.split())

    def count_chat_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Count words plus a fixed per-message template overhead."""
        return _TEMPLATE_TOKENS_PER_PROMPT + sum(
            self.count_tokens(m.content) + _TEMPLATE_TOKENS_PER_MESSAGE for m in messages
        )
