"""Chunking elements: sections, packing, splitting, overlap, and the limits it must keep."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.chunk import Chunk, chunk_elements
from ingest.parse import Element, parse_file
from tests.fixtures.documents import filler_pages, make_pdf


def words(text: str) -> int:
    """A whitespace tokenizer, standing in for the embedder's."""
    return len(text.split())


def wordpieces(text: str) -> int:
    """A rough word-piece counter: long words and punctuation cost more than one token."""
    return sum((len(piece) + 3) // 4 for piece in re.findall(r"\w+|[^\w\s]", text))


def para(count: int, start: int = 0, *, sentence: int = 10) -> str:
    """count distinct words w{start}..., with a full stop every `sentence` words."""
    out = []
    for n in range(start, start + count):
        out.append(f"w{n}" + ("." if (n - start + 1) % sentence == 0 else ""))
    return " ".join(out)


def el(text: str, heading: str | None = None, page: int | None = 1, category: str = "") -> Element:
    return Element(text=text, page=page, heading=heading, category=category or "NarrativeText")


def title(text: str, page: int | None = 1) -> Element:
    return Element(text=text, page=page, heading=text, category="Title")


def test_small_elements_of_a_section_share_one_chunk() -> None:
    elements = [title("Intro"), el("first part.", "Intro"), el("second part.", "Intro")]

    chunks = chunk_elements(elements, count_tokens=words)

    assert chunks == [
        Chunk(chunk_no=0, text="first part.\n\nsecond part.", page=1, heading="Intro")
    ]


def test_a_new_heading_starts_a_new_chunk() -> None:
    elements = [
        el("preamble text."),
        title("One", page=1),
        el("alpha text.", "One", page=1),
        title("Two", page=2),
        el("beta text.", "Two", page=2),
    ]

    chunks = chunk_elements(elements, count_tokens=words)

    assert [(c.chunk_no, c.text, c.heading, c.page) for c in chunks] == [
        (0, "preamble text.", None, 1),
        (1, "alpha text.", "One", 1),
        (2, "beta text.", "Two", 2),
    ]


def test_a_section_with_only_a_title_keeps_its_text() -> None:
    chunks = chunk_elements([title("Chapter 1"), title("Scope")], count_tokens=words)
    assert [(c.text, c.heading) for c in chunks] == [
        ("Chapter 1", "Chapter 1"),
        ("Scope", "Scope"),
    ]


def test_the_same_title_twice_starts_two_sections() -> None:
    elements = [
        title("Agenda", 1),
        el("a.", "Agenda", 1),
        title("Agenda", 2),
        el("b.", "Agenda", 2),
    ]
    chunks = chunk_elements(elements, count_tokens=words)
    assert [(c.text, c.page) for c in chunks] == [("a.", 1), ("b.", 2)]


def test_packing_stops_at_max_tokens() -> None:
    elements = [el(para(30, start=30 * n), "S") for n in range(5)]

    chunks = chunk_elements(elements, count_tokens=words, max_tokens=70, overlap_tokens=0)

    assert [words(c.text) for c in chunks] == [60, 60, 30]
    assert all(c.heading == "S" for c in chunks)


def test_an_overlong_element_is_split_at_sentences() -> None:
    chunks = chunk_elements([el(para(500), "S")], count_tokens=words, max_tokens=100)

    assert len(chunks) > 5
    assert all(words(c.text) <= 100 for c in chunks)
    for chunk in chunks:
        assert chunk.text.endswith(".")
        assert re.match(r"w\d+", chunk.text)


def test_a_sentence_without_stops_is_split_at_words() -> None:
    chunks = chunk_elements(
        [el(para(450, sentence=10_000))], count_tokens=words, max_tokens=100, overlap_tokens=0
    )
    assert [words(c.text) for c in chunks] == [100, 100, 100, 100, 50]
    assert " ".join(c.text for c in chunks) == para(450, sentence=10_000)


def test_a_giant_word_is_cut_by_characters() -> None:
    blob = "x" * 5000  # a base64 blob or URL with no spaces

    chunks = chunk_elements([el(f"see {blob} end")], count_tokens=wordpieces, max_tokens=100)

    assert all(wordpieces(c.text) <= 100 for c in chunks)
    assert "".join(c.text for c in chunks).count("x") >= 5000


def test_overlap_repeats_the_end_of_the_previous_chunk() -> None:
    chunks = chunk_elements(
        [el(para(400), "S", page=4)], count_tokens=words, max_tokens=100, overlap_tokens=20
    )

    assert len(chunks) > 3
    for before, after in zip(chunks, chunks[1:], strict=False):
        shared = _shared_prefix_words(before.text, after.text)
        assert 10 <= shared <= 20, shared
        assert after.page == 4
        assert words(after.text) <= 100


def _shared_prefix_words(before: str, after: str) -> int:
    """How many leading words of `after` are the trailing words of `before`."""
    after_words = after.split()
    before_words = before.split()
    for size in range(min(len(after_words), len(before_words)), 0, -1):
        if before_words[-size:] == after_words[:size]:
            return size
    return 0


def test_overlap_prefers_to_start_at_a_sentence() -> None:
    chunks = chunk_elements([el(para(300))], count_tokens=words, max_tokens=100, overlap_tokens=20)
    for chunk in chunks[1:]:
        # Every sentence is 10 words, so an overlap of up to 20 words starts at one.
        assert re.match(r"w\d*0 ", chunk.text), chunk.text[:40]


def test_no_overlap_across_sections() -> None:
    elements = [title("A"), el(para(150), "A"), title("B"), el(para(50, start=1000), "B")]

    chunks = chunk_elements(elements, count_tokens=words, max_tokens=100, overlap_tokens=30)

    b_chunks = [c for c in chunks if c.heading == "B"]
    assert [c.text for c in b_chunks] == [para(50, start=1000)]


def test_chunk_page_is_its_first_new_element_page() -> None:
    elements = [el(para(60, start=100 * p), "S", page=p) for p in (1, 2, 3, 4)]

    chunks = chunk_elements(elements, count_tokens=words, max_tokens=130, overlap_tokens=20)

    assert [c.page for c in chunks] == [1, 3, 4]
    assert chunks[1].text.split()[0] == "w240"  # it begins with overlap from page 2


def test_overlap_larger_than_half_a_chunk_is_clamped() -> None:
    chunks = chunk_elements([el(para(300))], count_tokens=words, max_tokens=40, overlap_tokens=500)
    assert all(words(c.text) <= 40 for c in chunks)
    assert len(chunks) < 300 // 10


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, -1)])
def test_invalid_limits_are_rejected(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="tokens"):
        chunk_elements([el("x")], count_tokens=words, max_tokens=max_tokens, overlap_tokens=overlap)


def test_blank_elements_and_empty_input_make_no_chunks() -> None:
    assert chunk_elements([], count_tokens=words) == []
    assert chunk_elements([el("  \n "), el("")], count_tokens=words) == []


def test_table_rows_are_split_at_line_ends() -> None:
    rows = "\n".join(f"Row {n} | value {n} | owner {n}" for n in range(100))

    chunks = chunk_elements(
        [el(rows, "Budget", category="Table")], count_tokens=words, max_tokens=60, overlap_tokens=0
    )

    assert len(chunks) > 1
    for chunk in chunks:
        assert all(
            re.fullmatch(r"Row \d+ \| value \d+ \| owner \d+", line)
            for line in chunk.text.split("\n")
        )


def test_parsed_pdf_chunks_keep_pages_and_headings(documents_dir: Path) -> None:
    path = make_pdf(documents_dir / "long.pdf", filler_pages(6))
    doc = parse_file(path, max_bytes=50 * 1024 * 1024)

    chunks = chunk_elements(doc.elements, count_tokens=words, max_tokens=200, overlap_tokens=40)

    assert {c.page for c in chunks} == set(range(1, 7))
    for chunk in chunks:
        assert chunk.heading == f"Section {chunk.page} Overview"
        assert not chunk.text.startswith("Section ")
        assert words(chunk.text) <= 200
    assert [c.chunk_no for c in chunks] == list(range(len(chunks)))


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------

_word = st.from_regex(r"[a-z]{1,12}[.,;!?]?", fullmatch=True)
_text = st.lists(_word, min_size=0, max_size=120).map(" ".join)
_element = st.tuples(
    _text, st.sampled_from([None, "Alpha", "Beta", "Gamma"]), st.integers(1, 9), st.booleans()
)


def _elements(raw: list[tuple[str, str | None, int, bool]]) -> list[Element]:
    out = []
    for text, heading, page, is_title in raw:
        if is_title and heading is not None:
            out.append(Element(heading, page, heading, "Title"))
        out.append(Element(text, page, heading, "NarrativeText"))
    return out


@settings(max_examples=100, deadline=None)
@given(
    raw=st.lists(_element, max_size=25),
    max_tokens=st.integers(8, 120),
    overlap=st.integers(0, 60),
    counter=st.sampled_from([words, wordpieces]),
)
def test_chunking_invariants(
    raw: list[tuple[str, str | None, int, bool]], max_tokens: int, overlap: int, counter: object
) -> None:
    count = words if counter is words else wordpieces
    elements = _elements(raw)

    chunks = chunk_elements(
        elements, count_tokens=count, max_tokens=max_tokens, overlap_tokens=overlap
    )

    assert [c.chunk_no for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text.strip() == chunk.text != ""
        assert count(chunk.text) <= max_tokens
    # Nothing is lost: every body word appears, in order (overlap only adds repeats).
    expected = [w for e in elements if e.category != "Title" for w in e.text.split()]
    produced = iter(w for c in chunks for w in re.split(r"\s+", c.text))
    assert all(any(w == p for p in produced) for w in expected)
    assert (
        chunk_elements(elements, count_tokens=count, max_tokens=max_tokens, overlap_tokens=overlap)
        == chunks
    )
    headings = {e.heading for e in elements}
    assert {c.heading for c in chunks} <= headings
