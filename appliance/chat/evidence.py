"""Evidence: the retrieved passages, ranked, each with the sentences that best answer the question.

Shown to the asker right after retrieval, before the model says a word, so every answer can
be checked against its documents. Sentences are scored with the embedder already loaded
for retrieval (cosine to the question) plus term overlap (the share of the question's
stemmed content words a sentence contains): no extra model, and exact terms such as "level
minus two" count even when the small embedder blurs them.

Retrieval hands over more candidates than are shown (`chat.candidates`) and their best
sentences decide which `chat.top_k` are: the small embedder ranks whole chunks coarsely,
and the chunk that states the answer is often 15th to 40th.

The same sentence vectors later decide which passage supports each sentence of the answer
(`appliance.chat.claims`).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import snowballstemmer

from appliance.chat.retrieval import Source
from ingest.sentences import split_sentences
from models.protocols import Embedder

COSINE_WEIGHT = 0.65
"""Share of a sentence's score from the embedder; the rest is term overlap."""
MAX_HIGHLIGHTS = 3
HIGHLIGHT_RATIO = 0.8
"""A further sentence is highlighted when it scores at least this share of the best one."""

_WORD = re.compile(r"[a-z0-9][a-z0-9_'-]*")
# A word list reads better as text than as 150 quoted strings.
STOPWORDS = frozenset(
    """
    a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further get got had has have having he her here hers him his how i if in into is it its
    itself just let me more most my no nor not now of off on once only or other our out over
    own same she should so some such than that the their them then there these they this
    those through to too under until up very was we were what when where which while who
    whom why will with would you your yours please tell know want need
    """.split()  # noqa: SIM905
)


_STEMMER = snowballstemmer.stemmer("english")
# The stemmer keeps the word it works on in itself: two threads at once (two askers) get
# each other's stems or an IndexError. Cached words need no lock.
_STEMMER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=65_536)
def _stem(word: str) -> str:
    # Snowball (Porter 2): "indented" meets "indent", "inserting" meets "insert".
    with _STEMMER_LOCK:
        return str(_STEMMER.stemWord(word))


def content_terms(text: str) -> set[str]:
    """Stemmed, lower-cased content words (stopwords out) for term overlap."""
    return {
        _stem(word)
        for word in _WORD.findall(text.lower())
        if len(word) >= 2 and word not in STOPWORDS
    }


def overlap(wanted: set[str], found: set[str]) -> float:
    """Share of `wanted` terms that occur in `found` (0 when nothing is wanted)."""
    return len(wanted & found) / len(wanted) if wanted else 0.0


@dataclass
class Passage:
    """One retrieved passage the asker may read, with its scored sentences."""

    source: Source
    sentences: list[str]
    scores: list[float]
    highlights: list[int]
    vectors: npt.NDArray[np.float32] = field(repr=False)
    terms: list[set[str]] = field(repr=False)
    relevance: float = 0.0
    rank: int = 0

    @property
    def best_score(self) -> float:
        """The score of its best sentence."""
        return max(self.scores, default=0.0)

    def public(self, link: str) -> dict[str, object]:
        """What the asker sees: where it is, and its text as sentences, the best marked."""
        s = self.source
        return {
            "rank": self.rank,
            "doc_id": s.doc_id,
            "chunk_no": s.chunk_no,
            "filename": s.filename,
            "title": s.title,
            "page": s.page,
            "heading": s.heading,
            "url": link,
            "score": round(self.relevance, 3),
            "sentences": [
                {"text": text, "highlight": i in self.highlights, "score": round(score, 3)}
                for i, (text, score) in enumerate(zip(self.sentences, self.scores, strict=True))
            ],
        }


def score_sentences(
    question_vector: npt.NDArray[np.float32],
    question_terms: set[str],
    vectors: npt.NDArray[np.float32],
    terms: Sequence[set[str]],
) -> list[float]:
    """Each sentence's match to the question: cosine and term overlap, weighted."""
    if not len(terms):
        return []
    cosines = vectors @ question_vector
    return [
        COSINE_WEIGHT * max(float(c), 0.0) + (1 - COSINE_WEIGHT) * overlap(question_terms, t)
        for c, t in zip(cosines, terms, strict=True)
    ]


def _highlights(scores: Sequence[float]) -> list[int]:
    if not scores:
        return []
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    best = scores[order[0]]
    chosen = [order[0]]
    for i in order[1:MAX_HIGHLIGHTS]:
        if scores[i] >= HIGHLIGHT_RATIO * best and scores[i] > 0:
            chosen.append(i)
    return sorted(chosen)


def build(
    *,
    embedder: Embedder,
    question: str,
    sources: Sequence[Source],
    context: str | None = None,
    keep: int | None = None,
) -> list[Passage]:
    """Score every sentence of every passage against the question (one embedding batch).

    Returns the ``keep`` best (all with None), ranked from 1.

    With ``context`` (a follow-up's question together with the previous one), a sentence
    scores the better of its match to either, so "and for visitors?" still finds its answer.
    Passages are re-ranked by their retrieval score and their best sentence together, so a
    passage that states the answer outright comes before one that only shares its topic.
    """
    # A passage that is a heading alone ("Staff Handbook") shows nothing worth checking.
    sources = [s for s in sources if any(len(x.split()) >= 3 for x in split_sentences(s.text))]
    split = [split_sentences(s.text) for s in sources]
    flat = [sentence for sentences in split for sentence in sentences]
    if not flat:
        return []
    queries = [question] if not context or context == question else [question, context]
    # Sentences whose vectors were stored at ingestion are not embedded again: then only the
    # question is, and the evidence is ready in milliseconds after the search.
    stored = [
        s.sentence_vectors
        if s.sentence_vectors is not None and len(s.sentence_vectors) == len(sentences)
        else None
        for s, sentences in zip(sources, split, strict=True)
    ]
    missing = [x for v, group in zip(stored, split, strict=True) if v is None for x in group]
    vectors = embedder.embed([*queries, *missing])
    query_vectors, fresh = vectors[: len(queries)], vectors[len(queries) :]
    query_terms = [content_terms(q) for q in queries]
    passages: list[Passage] = []
    for source, sentences, cached in zip(sources, split, stored, strict=True):
        if cached is not None:
            block = cached
        else:
            block, fresh = fresh[: len(sentences)], fresh[len(sentences) :]
        terms = [content_terms(s) for s in sentences]
        scores = [
            max(many)
            for many in zip(
                *(
                    score_sentences(qv, qt, block, terms)
                    for qv, qt in zip(query_vectors, query_terms, strict=True)
                ),
                strict=True,
            )
        ]
        passages.append(
            Passage(
                source=source,
                sentences=sentences,
                scores=scores,
                highlights=_highlights(scores),
                vectors=block,
                terms=terms,
            )
        )
    for p in passages:
        p.relevance = 0.5 * p.source.score + 0.5 * p.best_score
    passages.sort(key=lambda p: (-p.relevance, p.source.rank))
    if keep is not None:
        del passages[keep:]
    for rank, p in enumerate(passages, start=1):
        p.rank = rank
    return passages
