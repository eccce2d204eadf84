"""Citations computed by the appliance: each answer sentence matched against the evidence.

A model, small or large, may misquote or invent; its ``[n]`` markers are not trusted. Each
sentence of the answer is compared with every evidence sentence (the same embedder
vectors, plus the share of the sentence's content words the evidence contains). A sentence
that some passage supports gets that passage's marker; a model-written marker survives only
where the match confirms it; a sentence no passage supports is flagged "not found in your
documents". When the evidence is weak, or most of the answer is unsupported, the answer
abstains honestly instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.chat.evidence import COSINE_WEIGHT, Passage, content_terms
from appliance.chat.render import UNSUPPORTED_MARK
from ingest.sentences import split_sentences
from models.protocols import Embedder

SUPPORT_THRESHOLD = 0.62
"""A sentence is supported when its best evidence sentence scores at least this."""
EVIDENCE_THRESHOLD = 0.35
"""Below this best-sentence score for the question, the documents do not clearly answer it."""
STRONG_EVIDENCE = 0.5
"""At or above this, a withheld draft is replaced by the best sentence, quoted."""
UNSUPPORTED_SHARE = 0.5
"""Abstain when more than this share of the answer's checkable sentences is unsupported."""
MIN_WORDS = 4
"""Shorter sentences ("Sure.", "In short:") are not checked: they claim nothing."""
MAX_RANKS = 2

ABSTAIN_TEXT = (
    "The documents found do not clearly answer this question. The passages below are the "
    "closest matches: check them, try other words, or ask the document's owner."
)

QUOTE_INTRO = (
    "I could not write an answer that your documents support. The passage that matches "
    "your question best says:"
)

_MARKER = re.compile(r"\s*\[(\d{1,3})\]")


@dataclass(frozen=True)
class Claim:
    """One sentence of the answer and the passages (by evidence rank) that support it."""

    sentence: str
    ranks: list[int]
    score: float
    supported: bool
    checked: bool = True

    def public(self) -> dict[str, object]:
        """As the API, the stored message and the audit entry carry it."""
        return {
            "sentence": self.sentence,
            "ranks": self.ranks,
            "score": round(self.score, 3),
            "supported": self.supported,
            "checked": self.checked,
        }


@dataclass(frozen=True)
class Attribution:
    """The checked answer: its claims, the text with computed markers, and whether it abstains."""

    claims: list[Claim]
    text: str
    abstained: bool
    reason: str | None

    @property
    def cited_ranks(self) -> list[int]:
        """Evidence ranks cited by at least one supported sentence, in order of first use."""
        seen: list[int] = []
        for c in self.claims:
            for r in c.ranks:
                if c.supported and r not in seen:
                    seen.append(r)
        return seen

    @property
    def unsupported(self) -> int:
        """How many checked sentences no passage supports."""
        return sum(1 for c in self.claims if c.checked and not c.supported)


_NUMBER = re.compile(r"\b\d+(?:[.,:]\d+)*\b")
_NUMBER_WORDS = frozenset(
    """
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy
    eighty ninety hundred thousand million first second third fourth fifth half
    """.split()  # noqa: SIM905
)
_NEGATION = re.compile(r"\b(?:not|no|never|none|cannot)\b|n't\b", re.IGNORECASE)


def _numbers(text: str) -> set[str]:
    words = {w for w in re.findall(r"[a-z]+", text.lower()) if w in _NUMBER_WORDS}
    return words | set(_NUMBER.findall(text))


def _consistent(sentence: str, passage: Passage) -> bool:
    """Whether a sentence keeps the passage's numbers and polarity (similarity ignores both).

    Every number the sentence states must occur in one passage sentence it resembles, and
    a negation must not appear on one side only: "Laptops do not lock" is not supported by
    "Laptops lock after five minutes", however alike the words.
    """
    wanted = _numbers(sentence)
    negated = bool(_NEGATION.search(sentence))
    for candidate in passage.sentences:
        if wanted and not wanted <= _numbers(candidate):
            continue
        if negated != bool(_NEGATION.search(candidate)):
            continue
        return True
    return False


def evidence_is_weak(passages: Sequence[Passage]) -> bool:
    """Whether no passage has a sentence that clearly matches the question."""
    return not passages or max(p.best_score for p in passages) < EVIDENCE_THRESHOLD


def quote_best(passages: Sequence[Passage]) -> Attribution:
    """Instead of an unsupported draft: the best-matching sentence itself, quoted and cited.

    Used when the evidence clearly matches but the model's sentences do not hold up: the
    person gets the documents' own words, marked as a quote, never a guess.
    """
    best = max(passages, key=lambda p: (p.best_score, -p.rank))
    i = max(range(len(best.sentences)), key=lambda j: best.scores[j])
    sentence = best.sentences[i]
    text = f"{QUOTE_INTRO} \u201c{sentence}\u201d [{best.rank}]"
    claim = Claim(sentence, [best.rank], 1.0, True)
    return Attribution([claim], text, True, "quoted")


def evidence_is_strong(passages: Sequence[Passage]) -> bool:
    """Whether some passage has a sentence that clearly matches the question."""
    return bool(passages) and max(p.best_score for p in passages) >= STRONG_EVIDENCE


def _strip_markers(sentence: str) -> tuple[str, set[int]]:
    written = {int(m.group(1)) for m in _MARKER.finditer(sentence)}
    return _MARKER.sub("", sentence).strip(), written


def attribute(
    *,
    embedder: Embedder,
    answer: str,
    passages: Sequence[Passage],
    prompt_ranks: Sequence[int] = (),
) -> Attribution:
    """Match each answer sentence to the evidence; rebuild the text with verified markers.

    ``prompt_ranks[i]`` is the evidence rank of the prompt's source ``[i+1]``, so a marker
    the model wrote can be compared with what the match found.
    """
    answer = answer.replace(UNSUPPORTED_MARK, "")
    sentences = split_sentences(answer)
    if not sentences:
        return Attribution([], answer, False, None)
    bare = [_strip_markers(s) for s in sentences]
    vectors = embedder.embed([text or "-" for text, _ in bare])
    claims: list[Claim] = []
    for (text, written), vector in zip(bare, vectors, strict=True):
        terms = content_terms(text)
        if len(text.split()) < MIN_WORDS or not terms:
            claims.append(Claim(text, [], 0.0, False, checked=False))
            continue
        per_passage: list[tuple[float, int]] = []
        for p in passages:
            if not p.sentences:
                continue
            cosines = p.vectors @ vector
            best = max(
                COSINE_WEIGHT * max(float(c), 0.0)
                + (1 - COSINE_WEIGHT) * (len(terms & t) / len(terms))
                for c, t in zip(np.atleast_1d(cosines), p.terms, strict=True)
            )
            per_passage.append((best, p.rank))
            if not _consistent(text, p):
                per_passage[-1] = (min(best, SUPPORT_THRESHOLD - 0.01), p.rank)
        per_passage.sort(key=lambda x: -x[0])
        top = per_passage[0][0] if per_passage else 0.0
        ranks = [r for s, r in per_passage if s >= SUPPORT_THRESHOLD][:MAX_RANKS]
        confirmed = {prompt_ranks[n - 1] for n in written if 0 < n <= len(prompt_ranks)}
        # A model's own marker is kept where the match confirms it, first.
        ranks = sorted(ranks, key=lambda r: (r not in confirmed, ranks.index(r)))
        claims.append(Claim(text, ranks, top, bool(ranks)))
    checked = [c for c in claims if c.checked]
    unsupported = sum(1 for c in checked if not c.supported)
    if checked and unsupported / len(checked) > UNSUPPORTED_SHARE:
        return Attribution(claims, ABSTAIN_TEXT, True, "unsupported")
    return Attribution(claims, _with_markers(answer, sentences, claims), False, None)


def _with_markers(answer: str, sentences: Sequence[str], claims: Sequence[Claim]) -> str:
    """The answer's own text (its layout kept), each sentence followed by its verified marks."""
    out: list[str] = []
    pos = 0
    source = answer
    for sentence, claim in zip(sentences, claims, strict=True):
        where, end = _find(source, sentence, pos)
        if where < 0:
            continue
        out.append(source[pos:where])
        text, _ = _strip_markers(source[where:end])
        marks = _marks(claim)
        stop = len(text.rstrip(".!?:;\u201d\"')")) if marks.startswith(" [") else len(text)
        # "level minus two [1]." rather than "level minus two. [1]"
        out.append(text[:stop] + marks + text[stop:])
        pos = end
    out.append(source[pos:])
    return "".join(out)


def _find(text: str, sentence: str, start: int) -> tuple[int, int]:
    where = text.find(sentence, start)
    if where >= 0:
        return where, where + len(sentence)
    # The splitter collapsed whitespace inside the sentence; match it loosely.
    pattern = r"\s+".join(re.escape(w) for w in sentence.split())
    m = re.compile(pattern).search(text, start)
    return (m.start(), m.end()) if m else (-1, -1)


def _marks(claim: Claim) -> str:
    if not claim.checked:
        return ""
    if not claim.supported:
        return UNSUPPORTED_MARK
    return "".join(f" [{r}]" for r in claim.ranks)
