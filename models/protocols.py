"""The small interfaces the rest of the appliance codes against, and the model error tree.

```
ModelError                      base: a model cannot be used; the message says what to do
├── ModelVerificationError      file missing or its sha256 differs from the manifest
├── ModelLoadError              llama.cpp / sentence-transformers refused to load it
└── ContextLengthExceededError  a prompt does not fit the generator's context window
```
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Role = Literal["system", "user", "assistant"]


class ModelError(Exception):
    """A model cannot be used; the message says what to do about it."""


class ModelVerificationError(ModelError):
    """A model file is missing or its sha256 does not match the manifest."""


class ModelLoadError(ModelError):
    """The runtime (llama.cpp or sentence-transformers) failed to load a verified model."""


class ContextLengthExceededError(ModelError):
    """A prompt has at least as many tokens as the generator's context window."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of a chat, as handed to the model's chat template."""

    role: Role
    content: str


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    name: str
    dimension: int
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Return a float32 array of shape (len(texts), dimension), rows L2-normalised."""
        ...

    def count_tokens(self, text: str) -> int:
        """Count tokens with the embedder's own tokenizer, without special tokens."""
        ...


@runtime_checkable
class Generator(Protocol):
    """Streams a chat model's answer."""

    name: str
    context_length: int

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.2,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
        repeat_penalty: float = 1.0,
    ) -> Iterator[str]:
        """Yield text pieces as they are produced; stop early once `cancel` is set.

        ``repeat_penalty`` above 1.0 makes tokens already in the context less likely
        (llama.cpp's repetition penalty); 1.0 leaves sampling as it is.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Count tokens with the model's own tokenizer, without special tokens."""
        ...

    def count_chat_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Count the prompt tokens after applying the model's chat template."""
        ...
