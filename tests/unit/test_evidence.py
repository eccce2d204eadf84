"""Evidence scoring and the prompt's source budget, without models."""

from __future__ import annotations

import re
import sys
import threading

import numpy as np

from appliance.chat import evidence, prompt
from appliance.chat.evidence import Passage, content_terms, overlap
from appliance.chat.retrieval import Source
from models.protocols import ChatMessage


def test_inflected_forms_meet() -> None:
    question = content_terms("How do I dump a dict as nicely indented JSON?")
    sentence = content_terms("JSON array elements will be pretty-printed with that indent level.")
    assert "indent" in question & sentence
    assert overlap(content_terms("inserting items"), content_terms("Insert x in sorted order."))


def test_stopwords_and_single_letters_are_not_terms() -> None:
    assert content_terms("What is a x of the") == set()


def _passage(rank: int, heading: str) -> Passage:
    sentences = [f"Sentence {rank}.{i} says something about topic {rank}." for i in range(3)]
    source = Source(
        rank=rank,
        doc_id=f"d{rank}",
        chunk_no=0,
        filename=f"doc{rank}.md",
        title=None,
        page=None,
        heading=heading,
        text=" ".join(sentences),
        score=0.5,
    )
    return Passage(
        source=source,
        sentences=sentences,
        scores=[0.5, 0.4, 0.3],
        highlights=[0],
        vectors=np.zeros((3, 4), dtype=np.float32),
        terms=[content_terms(x) for x in sentences],
        rank=rank,
    )


def _words(text: str) -> int:
    return len(text.split())


def test_the_source_budget_counts_each_source_with_its_tag() -> None:
    """Long section headings are part of what the model reads, so they use the budget."""
    heading = " ".join(["Section"] * 30)
    passages = [_passage(r, heading) for r in range(1, 9)]
    messages, used = prompt.from_evidence(
        passages=passages,
        history=[],
        question="What about topic 1?",
        count_tokens=_words,
        count_chat_tokens=lambda ms: sum(_words(m.content) for m in ms),
        context_length=4096,
        answer_tokens=100,
        source_tokens=150,
        history_tokens=0,
    )
    body = messages[-1].content
    sources = re.findall(r"<source .*?</source>", body, flags=re.DOTALL)
    assert len(sources) == len(used) >= 1
    assert sum(_words(s) for s in sources) <= 150
    assert isinstance(messages[-1], ChatMessage)


def test_terms_are_the_same_when_many_askers_score_at_once() -> None:
    """The stemmer holds its word in itself; threads must not share it unguarded."""
    words = [
        stem + suffix
        for stem in ("connect", "general", "indent", "insert", "nation", "relate", "happy")
        for suffix in ("", "ed", "ing", "ions", "ational", "ness", "ly", "s", "izing")
    ]
    text = " ".join(words)
    expected = content_terms(text)
    failures: list[str] = []

    def score() -> None:
        for _ in range(15):
            evidence._stem.cache_clear()  # every word goes through the stemmer again
            try:
                if content_terms(text) != expected:
                    failures.append("different terms")
            except Exception as exc:  # noqa: BLE001 - the race raised IndexError
                failures.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=score) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
