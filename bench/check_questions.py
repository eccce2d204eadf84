"""Check bench/answers_questions.json against the python3.11-doc corpus in answers_corpus.txt."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
DEFAULT_HTML_ROOT = Path("/usr/share/doc/python3.11/html")
DEFAULT_CORPUS = BENCH / "answers_corpus.txt"
DEFAULT_QUESTIONS = BENCH / "answers_questions.json"
CORPUS_NAME = "python3.11-doc"

# Minimums the question set is held to.
MIN_QUESTIONS = 45
MIN_PAGES = 20
MIN_FOLLOWUPS = 5
MIN_LONG_FOLLOWUPS = 5  # sequences of LONG_TURNS turns: the answer target is turn 5
LONG_TURNS = 5
MIN_TOPIC_SWITCHES = 2
KEY_PHRASE_WORDS = (2, 8)

# Elements whose edges separate words; everything else (code, span, a, em...) is inline.
BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "caption",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
SKIP_TAGS = frozenset({"script", "style", "template", "noscript"})
VOID_TAGS = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower-case and collapse every run of whitespace to one space."""
    return _WS.sub(" ", text).strip().casefold()


class _MainText(HTMLParser):
    """Visible text of a Sphinx page's ``<div role="main">``, without the chrome.

    Everything outside the main body (mobile menu, related-links bars, sidebar, footer)
    is dropped, and so are scripts, styles and the pilcrow permalinks (``a.headerlink``).
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, opens main, skipped)
        self._main_depth = 0
        self._skip_depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in BLOCK_TAGS:
            self.parts.append(" ")
        if tag in VOID_TAGS:
            return
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        opens_main = attributes.get("role") == "main"
        skipped = tag in SKIP_TAGS or (tag == "a" and "headerlink" in classes)
        self._stack.append((tag, opens_main, skipped))
        self._main_depth += opens_main
        self._skip_depth += skipped

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in BLOCK_TAGS:
            self.parts.append(" ")
        if tag in VOID_TAGS or not any(open_tag == tag for open_tag, _, _ in self._stack):
            return
        while self._stack:  # also closes elements left open inside this one
            open_tag, opens_main, skipped = self._stack.pop()
            self._main_depth -= opens_main
            self._skip_depth -= skipped
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._main_depth > 0 and self._skip_depth == 0:
            self.parts.append(data)


def visible_text(page: Path) -> str:
    """The main body text of one HTML page of the documentation, whitespace-normalised."""
    parser = _MainText()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    return _WS.sub(" ", "".join(parser.parts)).strip()


def read_corpus_list(path: Path) -> list[str]:
    """Page paths from answers_corpus.txt, relative to the HTML root, in file order."""
    pages: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            pages.append(entry)
    return pages


@dataclass(frozen=True)
class Item:
    """One question to check: a stand-alone question or one turn of a follow-up sequence."""

    ref: str  # "q07" or "f02.2"
    question: str
    page: str
    key_phrase: str


def _items(data: dict[str, Any], problems: list[str]) -> Iterator[Item]:
    seen: set[str] = set()

    def item(ref: str, raw: Any) -> Item | None:
        if not isinstance(raw, dict):
            problems.append(f"{ref}: not an object")
            return None
        fields = [raw.get(k) for k in ("question", "page", "key_phrase")]
        strings = [v for v in fields if isinstance(v, str) and v.strip()]
        if len(strings) != len(fields):
            problems.append(f"{ref}: needs non-empty question, page and key_phrase strings")
            return None
        question, page, key_phrase = strings
        return Item(ref, question, page, key_phrase)

    def new_id(raw: Any, prefix: str, index: int) -> str:
        ident = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(ident, str) or not re.fullmatch(rf"{prefix}\d{{2,}}", ident):
            problems.append(f"{prefix} entry #{index + 1}: id {ident!r} is not {prefix}NN")
            ident = f"{prefix}?{index + 1}"
        if ident in seen:
            problems.append(f"{ident}: duplicate id")
        seen.add(ident)
        return ident

    for index, raw in enumerate(data.get("questions", [])):
        ident = new_id(raw, "q", index)
        if (one := item(ident, raw)) is not None:
            yield one
    for index, raw in enumerate(data.get("followups", [])):
        ident = new_id(raw, "f", index)
        turns = raw.get("turns") if isinstance(raw, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            problems.append(f"{ident}: a follow-up needs a 'turns' list of at least 2")
            continue
        switch = raw.get("topic_switch_at")  # optional: the turn that changes the subject
        if switch is not None and (
            not isinstance(switch, int) or isinstance(switch, bool) or not 2 <= switch <= len(turns)
        ):
            problems.append(f"{ident}: topic_switch_at {switch!r} is not null or a turn 2..N")
        for turn_no, turn in enumerate(turns, start=1):
            if (one := item(f"{ident}.{turn_no}", turn)) is not None:
                yield one


def check(html_root: Path, corpus_file: Path, questions_file: Path) -> dict[str, Any]:
    """Every problem found, plus counts and how many corpus pages hold each key phrase."""
    problems: list[str] = []
    corpus = read_corpus_list(corpus_file)
    corpus_set = set(corpus)
    if len(corpus_set) != len(corpus):
        problems.append("answers_corpus.txt lists a page more than once")
    texts: dict[str, str] = {}
    html_bytes = 0
    for page in corpus:
        path = html_root / page
        if not path.is_file():
            problems.append(f"corpus page {page} does not exist under {html_root}")
            continue
        html_bytes += path.stat().st_size
        texts[page] = normalise(visible_text(path))

    data = json.loads(questions_file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise SystemExit(f"{questions_file}: top level is not an object")
    if data.get("corpus") != CORPUS_NAME:
        problems.append(f"top-level 'corpus' is {data.get('corpus')!r}, not {CORPUS_NAME!r}")
    items = list(_items(data, problems))

    phrases: list[dict[str, Any]] = []
    for it in items:
        words = len(it.key_phrase.split())
        if not KEY_PHRASE_WORDS[0] <= words <= KEY_PHRASE_WORDS[1]:
            problems.append(f"{it.ref}: key phrase has {words} words, not 2-8")
        if it.page not in corpus_set:
            problems.append(f"{it.ref}: page {it.page} is not in {corpus_file.name}")
            continue
        if it.page not in texts:
            continue  # missing file, reported above
        phrase = normalise(it.key_phrase)
        if phrase not in texts[it.page]:
            problems.append(f"{it.ref}: key phrase {it.key_phrase!r} not found in {it.page}")
        holders = sorted(p for p, text in texts.items() if phrase in text)
        phrases.append(
            {
                "ref": it.ref,
                "key_phrase": it.key_phrase,
                "page": it.page,
                "corpus_pages": len(holders),
                "in_page": texts[it.page].count(phrase),
                **({"also_in": [p for p in holders if p != it.page]} if len(holders) > 1 else {}),
            }
        )

    n_questions = len(data.get("questions", []))
    n_followups = len(data.get("followups", []))
    pages_used = sorted({it.page for it in items})
    if n_questions < MIN_QUESTIONS:
        problems.append(f"only {n_questions} questions, want at least {MIN_QUESTIONS}")
    if len(pages_used) < MIN_PAGES:
        problems.append(f"only {len(pages_used)} pages answer questions, want {MIN_PAGES}")
    if n_followups < MIN_FOLLOWUPS:
        problems.append(f"only {n_followups} follow-up sequences, want {MIN_FOLLOWUPS}")
    turn_lists = [f.get("turns") for f in data.get("followups", []) if isinstance(f, dict)]
    long_followups = sum(
        1 for turns in turn_lists if isinstance(turns, list) and len(turns) >= LONG_TURNS
    )
    if long_followups < MIN_LONG_FOLLOWUPS:
        problems.append(
            f"only {long_followups} follow-ups have {LONG_TURNS} turns, want {MIN_LONG_FOLLOWUPS}"
        )
    switching = sum(
        1 for f in data.get("followups", []) if isinstance(f, dict) and f.get("topic_switch_at")
    )
    if switching < MIN_TOPIC_SWITCHES:
        problems.append(f"only {switching} follow-ups switch topic, want {MIN_TOPIC_SWITCHES}")

    return {
        "questions": n_questions,
        "followups": n_followups,
        "followup_turns": sum(1 for it in items if "." in it.ref),
        f"followups_of_{LONG_TURNS}_or_more_turns": long_followups,
        "followups_switching_topic": switching,
        "pages": len(pages_used),
        "corpus_pages": len(corpus),
        "corpus_html_bytes": html_bytes,
        "key_phrases_in_one_page": sum(1 for p in phrases if p["corpus_pages"] == 1),
        "key_phrases": phrases,
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Verify that every question and follow-up turn of the answer benchmark names a "
            "page of answers_corpus.txt that exists under the HTML root and whose visible "
            "text (main body only, whitespace-normalised, case-insensitive) contains the key "
            "phrase. Prints JSON; exits 1 on any problem."
        )
    )
    parser.add_argument("--html-root", type=Path, default=DEFAULT_HTML_ROOT)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument(
        "--brief", action="store_true", help="leave the per-phrase list out of the output"
    )
    parser.add_argument(
        "--dump-text",
        metavar="PAGE",
        help="print the visible text of one page (relative to the HTML root) and exit",
    )
    args = parser.parse_args(argv)
    if args.dump_text:
        print(visible_text(args.html_root / args.dump_text))
        return 0
    if not (args.html_root / "index.html").is_file():
        print(
            f"{args.html_root} is not a documentation root: run bench/answers_corpus.sh",
            file=sys.stderr,
        )
        return 2
    report = check(args.html_root, args.corpus, args.questions)
    if args.brief:
        report.pop("key_phrases")
    json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
