"""The deterministic model fakes other components' unit tests rely on."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from models.fakes import FakeEmbedder, FakeGenerator
from models.protocols import (
    ChatMessage,
    ContextLengthExceededError,
    Embedder,
    Generator,
    ModelError,
)

QUESTION = [
    ChatMessage("system", "Answer from the sources."),
    ChatMessage("user", "What colour is the sky?"),
]

# --- FakeEmbedder ------------------------------------------------------------------------------


def test_fake_embedder_implements_protocol(fake_embedder: FakeEmbedder) -> None:
    assert isinstance(fake_embedder, Embedder)
    assert (fake_embedder.dimension, fake_embedder.max_tokens) == (384, 256)


def test_fake_embedder_shape_dtype_and_norm(fake_embedder: FakeEmbedder) -> None:
    vectors = fake_embedder.embed(["one two three", "", "!!!", "word"])
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)


def test_fake_embedder_empty_input(fake_embedder: FakeEmbedder) -> None:
    assert fake_embedder.embed([]).shape == (0, 384)


def test_fake_embedder_is_deterministic_across_instances() -> None:
    texts = ["Quarterly revenue grew 5%", "The cat sat on the mat"]
    np.testing.assert_array_equal(FakeEmbedder().embed(texts), FakeEmbedder().embed(texts))
    np.testing.assert_array_equal(
        FakeEmbedder().embed(texts[:1])[0], FakeEmbedder().embed(texts)[0]
    )


def test_fake_embedder_similarity_follows_shared_words(fake_embedder: FakeEmbedder) -> None:
    query, near, far = fake_embedder.embed(
        ["the cat sat on the mat", "a cat on a mat", "quarterly revenue grew five percent"]
    )
    assert float(query @ near) > float(query @ far)
    assert float(query @ near) > 0.3


def test_fake_embedder_ignores_case_and_punctuation(fake_embedder: FakeEmbedder) -> None:
    a, b = fake_embedder.embed(["Hello, World!", "hello world"])
    np.testing.assert_allclose(a, b)


def test_fake_embedder_dimension_is_configurable() -> None:
    embedder = FakeEmbedder(dimension=8)
    assert embedder.embed(["a b c d e f g h i j"]).shape == (1, 8)


def test_fake_embedder_refuses_a_bare_string(fake_embedder: FakeEmbedder) -> None:
    with pytest.raises(TypeError):
        fake_embedder.embed("not a list")


def test_fake_embedder_counts_words_and_records_calls(fake_embedder: FakeEmbedder) -> None:
    assert fake_embedder.count_tokens("  three  little words ") == 3
    fake_embedder.embed(["x"])
    assert fake_embedder.calls == [["x"]]


# --- FakeGenerator -----------------------------------------------------------------------------


def test_fake_generator_implements_protocol(fake_generator: FakeGenerator) -> None:
    assert isinstance(fake_generator, Generator)


def test_fake_generator_echoes_word_by_word(fake_generator: FakeGenerator) -> None:
    pieces = list(fake_generator.stream(QUESTION, max_tokens=100))
    assert pieces == ["Echo:", " What", " colour", " is", " the", " sky?"]
    assert fake_generator.messages == tuple(QUESTION)
    assert fake_generator.calls[0].max_tokens == 100


def test_fake_generator_scripted_answers_in_order() -> None:
    generator = FakeGenerator(["First answer [1].", "Second."])
    assert "".join(generator.stream(QUESTION, max_tokens=50)) == "First answer [1]."
    assert "".join(generator.stream(QUESTION, max_tokens=50)) == "Second."
    assert "".join(generator.stream(QUESTION, max_tokens=50)) == "Second."


def test_fake_generator_pieces_join_to_the_exact_answer() -> None:
    answer = "  Line one.\n\nLine  two.  "
    assert "".join(FakeGenerator(answer).stream(QUESTION, max_tokens=50)) == answer


def test_fake_generator_callable_answer() -> None:
    generator = FakeGenerator(lambda messages: f"{len(messages)} messages")
    assert "".join(generator.stream(QUESTION, max_tokens=10)) == "2 messages"


def test_fake_generator_respects_max_tokens_and_stop() -> None:
    generator = FakeGenerator("one two three four five")
    assert list(generator.stream(QUESTION, max_tokens=2)) == ["one", " two"]
    assert "".join(generator.stream(QUESTION, max_tokens=9, stop=[" four"])) == "one two three"
    with pytest.raises(ModelError):
        generator.stream(QUESTION, max_tokens=0)


def test_fake_generator_honours_cancel() -> None:
    generator = FakeGenerator("one two three four five")
    cancel = threading.Event()
    received = []
    for piece in generator.stream(QUESTION, max_tokens=10, cancel=cancel):
        received.append(piece)
        cancel.set()
    assert received == ["one"]
    assert list(generator.stream(QUESTION, max_tokens=10, cancel=cancel)) == []


def test_fake_generator_cancel_from_another_thread_interrupts_delay() -> None:
    generator = FakeGenerator("word " * 100, delay=0.05)
    cancel = threading.Event()
    threading.Timer(0.12, cancel.set).start()
    started = time.monotonic()
    pieces = list(generator.stream(QUESTION, max_tokens=100, cancel=cancel))
    assert 1 <= len(pieces) <= 4
    assert time.monotonic() - started < 1.0


def test_fake_generator_raises_scripted_error_mid_stream() -> None:
    generator = FakeGenerator("one two three", error=ModelError("boom"), error_after=2)
    received: list[str] = []
    with pytest.raises(ModelError, match="boom"):
        received.extend(generator.stream(QUESTION, max_tokens=10))
    assert received == ["one", " two"]


def test_fake_generator_token_counts(fake_generator: FakeGenerator) -> None:
    text = " ".join(m.content for m in QUESTION)
    assert fake_generator.count_tokens(text) == 9
    assert fake_generator.count_chat_tokens(QUESTION) > fake_generator.count_tokens(text)


def test_fake_generator_refuses_prompt_over_context() -> None:
    generator = FakeGenerator(context_length=10)
    with pytest.raises(ContextLengthExceededError):
        generator.stream([ChatMessage("user", "word " * 20)], max_tokens=5)
