"""llama.cpp adapter for the Generator protocol (bundled: SmolLM2-135M-Instruct GGUF)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import Any, cast

from models.manifest import ModelEntry, verify
from models.protocols import (
    ChatMessage,
    ContextLengthExceededError,
    ModelError,
    ModelLoadError,
)

logger = logging.getLogger(__name__)


def usable_cpus() -> int:
    """The CPUs this process may use (at least one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Threads for decoding: half the usable CPUs (at least one), roughly the physical cores."""
    # llama.cpp's threads spin at every barrier: SMT siblings add nothing to decoding, and a
    # thread whose core is taken by the web server or the embedder stalls all the others.
    return max(usable_cpus() // 2, 1)


def default_batch_threads() -> int:
    """Threads for reading the prompt: every usable CPU.

    Prompt evaluation is one dense burst per answer, the part the asker waits for before the
    first word; it scales with cores where decoding does not (the bundled model read 700
    prompt tokens in 5.0 s on one thread of a quiet 2-core machine, in 3.0 s on two).
    """
    return usable_cpus()


def _token_text(llm: Any, token: int) -> str:
    if token == -1:
        return ""
    text: bytes = llm.detokenize([token], special=True)
    return text.decode("utf-8", errors="replace")


class LlamaCppGenerator:
    """Streams chat answers from a verified GGUF model through one llama.cpp context."""

    def __init__(
        self,
        entry: ModelEntry,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_gpu_layers: int = 0,
        seed: int = 0,
    ) -> None:
        """Verify `entry`, then load it with a context of min(n_ctx, the model's trained length).

        `n_threads` (default: default_threads()) decode; `n_threads_batch` (default:
        default_batch_threads()) evaluate the prompt.
        """
        if entry.kind != "chat":
            raise ModelError(f"Model {entry.name!r} is an {entry.kind}, not a chat model.")
        if n_ctx < 16:
            raise ModelError(f"n_ctx must be at least 16 tokens, got {n_ctx}.")
        verify(entry)
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        threads = n_threads or default_threads()
        batch_threads = n_threads_batch or default_batch_threads()
        try:
            llm = Llama(
                model_path=str(entry.path),
                n_ctx=min(n_ctx, entry.context_length),
                n_threads=threads,
                n_threads_batch=batch_threads,
                n_gpu_layers=n_gpu_layers,
                seed=seed,
                verbose=False,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"llama.cpp could not load {entry.name!r} from {entry.path}: {exc}. Check that "
                "it is a GGUF file this llama.cpp build supports and that n_ctx and "
                "n_gpu_layers fit the available memory."
            ) from exc
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            llm.close()
            raise ModelLoadError(
                f"{entry.path} carries no chat template (tokenizer.chat_template); the appliance "
                "needs an instruction-tuned GGUF that has one."
            )
        eos_id = llm.token_eos()
        bos_id = llm.token_bos()
        # The same formatter llama-cpp-python builds from GGUF metadata; keeping our own lets
        # count_chat_tokens and stream render exactly the same prompt.
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(llm, eos_id),
            bos_token=_token_text(llm, bos_id),
            stop_token_ids=[eos_id],
        )
        self._llm = llm
        self._specials = _special_texts(llm)
        self._lock = threading.Lock()
        self.name = entry.name
        self.context_length: int = int(llm.n_ctx())
        self.n_threads = threads
        self.n_threads_batch = batch_threads

    def defuse(self, text: str) -> str:
        """Text in which no special token's spelling survives (tokenised as plain text)."""
        for special in self._specials:
            if special in text:
                text = text.replace(special, special[0] + ZERO_WIDTH + special[1:])
        return text

    def _prompt(self, messages: Sequence[ChatMessage]) -> tuple[list[int], Any]:
        # The rendered prompt is tokenised with special=True so that the chat template's own
        # markers become control tokens; what messages carry (documents, titles, headings,
        # questions) must never do so, so their spellings of special tokens are broken first.
        payload: list[Any] = [{"role": m.role, "content": self.defuse(m.content)} for m in messages]
        rendered = self._formatter(messages=payload)
        tokens = self._llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return tokens, rendered

    def count_tokens(self, text: str) -> int:
        """Count tokens with the model's own tokenizer, without special tokens."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_chat_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Count the prompt tokens after applying the model's chat template."""
        return len(self._prompt(messages)[0])

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
        """Yield answer text as llama.cpp produces it; at most `max_tokens` tokens."""
        if max_tokens < 1:
            # llama-cpp-python reads max_tokens <= 0 as "until the context is full".
            raise ModelError(f"max_tokens must be at least 1, got {max_tokens}.")
        if temperature < 0:
            raise ModelError(f"temperature must not be negative, got {temperature}.")
        if isinstance(stop, str):
            stop = (stop,)
        prompt, rendered = self._prompt(messages)
        if len(prompt) >= self.context_length:
            raise ContextLengthExceededError(
                f"The prompt has {len(prompt)} tokens but {self.name!r} runs with a context of "
                f"{self.context_length}; send fewer or shorter sources or turns."
            )
        if repeat_penalty < 1.0:
            raise ModelError(f"repeat_penalty must be at least 1.0, got {repeat_penalty}.")
        return self._generate(
            prompt, rendered, max_tokens, temperature, list(stop), cancel, repeat_penalty
        )

    def _generate(
        self,
        prompt: list[int],
        rendered: Any,
        max_tokens: int,
        temperature: float,
        stop: list[str],
        cancel: threading.Event | None,
        repeat_penalty: float = 1.0,
    ) -> Generator[str, None, None]:
        with self._lock:
            chunks = cast(
                Iterator[Any],
                self._llm.create_completion(
                    prompt=prompt,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    repeat_penalty=repeat_penalty,
                    stop=[*stop, *rendered.stop],
                    stopping_criteria=rendered.stopping_criteria,
                    stream=True,
                ),
            )
            try:
                while cancel is None or not cancel.is_set():
                    try:
                        chunk = next(chunks)
                    except StopIteration:
                        return
                    except Exception as exc:
                        raise ModelError(
                            f"llama.cpp failed while generating with {self.name!r}: {exc}"
                        ) from exc
                    # Checked again here: cancel may have been set while the token was computed.
                    if cancel is not None and cancel.is_set():
                        return
                    text = chunk["choices"][0]["text"]
                    if text:
                        yield text
            finally:
                # Also runs when the consumer drops or closes us: release llama.cpp promptly.
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()

    def close(self) -> None:
        """Free the llama.cpp model and context."""
        with self._lock:
            self._llm.close()


ZERO_WIDTH = "\u200b"


def _special_texts(llm: Any) -> list[str]:
    """The spellings of the model's control and user-defined tokens, longest first."""
    import llama_cpp  # start-up cost: already loaded with the model by Llama() above

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    found: set[str] = set()
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        if llama_cpp.llama_vocab_is_control(vocab, token) or (
            attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        ):
            text = llm.detokenize([token], special=True).decode("utf-8", "replace")
            if len(text) > 1:
                found.add(text)
    return sorted(found, key=len, reverse=True)
