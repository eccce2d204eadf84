"""Answer quality and latency on a real corpus: the Python 3.11 documentation.

    python bench/answers.py [--no-generate] [--limit N] [--no-followups] [--workdir DIR]

Sets up a throw-away appliance in this process (``init``, ``open_runtime``, the start-up
wiring), ingests the pages of ``answers_corpus.txt`` (python3.11-doc, installed by
``answers_corpus.sh``) with the real bundled embedder, granted to ``everyone``, and asks
every question of ``answers_questions.json`` through ``chat.pipeline.answer`` as a plain
user, with the real bundled chat model. Follow-ups are asked turn by turn in one
conversation. Each page is submitted under a filename that spells its path
(``library/pathlib.html`` -> ``library__pathlib.html``) and the document id of each page is
kept, so a passage is traced back to its page by id (by filename as a fallback).

Metrics (JSON on stdout; ``--details`` adds one record per question or turn):

- ``hit_at_1``, ``hit_at_5``: share of questions whose expected page is the document of
  the first passage / of one of the first five passages of the evidence, ranked as shown.
- ``mrr_at_10``: mean of 1/rank of the first passage from the expected page (0 past 10).
- ``evidence_shows_page``: share whose evidence holds the expected page at any rank.
- ``key_phrase_visible``: share where the key phrase (case-insensitive, whitespace
  collapsed, Unicode quotes folded, a table row's ' | ' read as a space) is in text the
  asker sees: a passage of the evidence or the answer (``done.text``). Split into
  ``key_phrase_in_evidence``, ``key_phrase_in_highlight`` (inside a run of highlighted
  evidence sentences) and ``key_phrase_in_answer``. ``key_phrase_indexed`` is the ceiling:
  the share whose phrase is in some indexed chunk of the expected page at all.
- ``supported_sentence_share``: of the answer sentences the pipeline checked
  (``done.claims``, ``checked``) in answers that did not abstain, the share it found
  supported by the evidence. Abstentions are left out: when a draft is withheld for a
  quote, ``done.claims`` holds the quoted sentence, not what the model wrote.
- ``loop_rate``: share of answers where one sentence occurs 3 or more times in the final
  text; ``cut_short_rate``: share the loop guard stopped (``done.cut_short``);
  ``abstention_rate``: share that abstained (``done.abstained``), of which ``quoted_rate``
  had the draft withheld for the best evidence sentence, quoted (all claims supported).
- ``timings``: median and p90 of the wall time to the ``evidence`` event, to the first
  ``token`` and to the end, and of the pipeline's own ``done.timings``.
- Follow-ups: the same figures for the first turn, on-topic later turns and the turns that
  switch topic (``topic_switch_at``), and per turn number.

Shares are over the items where the figure exists; a figure no item has is ``null``.

The same script measures older code, whose pipeline had no ``evidence`` event (commit
9f07574: conversation, queue, token, sources, done): there the cited ``sources`` are the
evidence (their 300-character snippets are the visible text), the answer is the joined
tokens, and claims, highlights, abstention and cut-short figures are ``null``. With
``--no-generate`` on such code, the evidence is what ``retrieve()`` returns for the query
the old pipeline built, which that pipeline showed nobody before the answer.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
BENCH = Path(__file__).resolve().parent
# bench/ingest.py would shadow the `ingest` package, so this folder leaves the path; the
# checkout is appended, not inserted: PYTHONPATH decides which one is measured (--help).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.append(str(BENCH.parent))

CORPUS_SCRIPT = BENCH / "answers_corpus.sh"
CORPUS_LIST = BENCH / "answers_corpus.txt"
QUESTIONS = BENCH / "answers_questions.json"
STATE_FILE = "bench-answers.json"
ASKER = "bench-asker"
ACTOR = "operator:bench-answers"
LOOP_REPEATS = 3
MRR_DEPTH = 10
_WS = re.compile(r"\s+")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_MARKER = re.compile(r"\[\d{1,3}\]")
_NOT_FOUND = "(not found in your documents)"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def log(message: str) -> None:
    """Print a progress line to stderr."""
    print(f"[answers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def normalise(text: str) -> str:
    """Compare texts as the asker reads them: NFKC, straight quotes, one space, no case.

    A table row's cell separator (' | ', as ingestion renders tables) reads as a space.
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    return _WS.sub(" ", text).replace(" | ", " ").strip().casefold()


# -- the code under test ---------------------------------------------------------------


OWN_PACKAGES = ("appliance", "models", "ingest")


def _in_checkout(root: Path, module: str) -> bool:
    """Whether ``module`` is a file of the checkout at ``root``.

    Asked before importing: the venv's editable install of /work/main answers for any
    ``appliance.*`` module the checkout on PYTHONPATH lacks, and would mix the two.
    """
    base = root.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _first(root: Path, attr: str, *modules: str) -> Any:
    """``attr`` of the first of ``modules`` the checkout has (the package layout changed)."""
    for name in modules:
        if _in_checkout(root, name):
            return getattr(importlib.import_module(name), attr)
    raise ImportError(f"none of {', '.join(modules)} is in {root}")


def foreign_modules(root: Path) -> list[str]:
    """Our modules loaded from outside the checkout under test (should be none)."""
    found = []
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if (
            name.split(".")[0] in OWN_PACKAGES
            and where
            and not Path(where).resolve().is_relative_to(root)
        ):
            found.append(name)
    return sorted(found)


def _no_wiring() -> None:
    """Before appliance.wiring existed, nothing needed installing at start-up."""


@dataclass(frozen=True)
class Api:
    """The appliance functions this benchmark calls, from whichever checkout is imported."""

    settings_cls: Any
    init: Any
    open_runtime: Any
    install: Any
    worker_cls: Any
    parser_cls: Any
    resolve_principal: Any
    users: Any
    not_found: Any
    docs: Any
    tables: Any
    user_cls: Any
    pipeline: Any
    retrieve: Any
    chat_message: Any
    chunk_place: Any
    doc_key: str
    has_evidence: bool
    root: Path


def _chunk_place(root: Path) -> Any:
    if _in_checkout(root, "appliance.core.places"):
        return _first(root, "chunk_text", "appliance.core.places")
    return lambda chunk_no: f"chunk:{chunk_no}:text"  # the place string before places.py


def load_api() -> Api:
    """Import the appliance: the current ring layout, or the flat one of older commits."""
    import appliance

    root = Path(appliance.__file__).resolve().parent.parent
    if _in_checkout(root, "appliance.wiring"):
        install = _first(root, "install", "appliance.wiring")
    else:
        install = _no_wiring
    api = Api(
        settings_cls=_first(root, "Settings", "appliance.core.config", "appliance.config"),
        init=_first(root, "init", "appliance.auth.bootstrap", "appliance.bootstrap"),
        open_runtime=_first(root, "open_runtime", "appliance.core.runtime", "appliance.runtime"),
        install=install,
        worker_cls=_first(root, "IngestionWorker", "appliance.documents.ingestion"),
        parser_cls=_first(root, "Parser", "appliance.documents.ingestion"),
        resolve_principal=_first(
            root, "resolve_principal", "appliance.acl.principals", "appliance.auth.service"
        ),
        users=importlib.import_module("appliance.auth.service"),
        not_found=_first(root, "NotFound", "appliance.core.errors", "appliance.errors"),
        docs=importlib.import_module("appliance.documents.service"),
        tables=importlib.import_module("appliance.documents.tables"),
        user_cls=_first(root, "User", "appliance.auth.tables"),
        pipeline=importlib.import_module("appliance.chat.pipeline"),
        retrieve=_first(root, "retrieve", "appliance.chat.retrieval"),
        chat_message=_first(root, "ChatMessage", "models.protocols"),
        chunk_place=_chunk_place(root),
        doc_key=_first(root, "DOC_KEY", "appliance.core.places", "appliance.documents.service"),
        has_evidence=_in_checkout(root, "appliance.chat.evidence"),
        root=root,
    )
    if mixed := foreign_modules(root):
        raise SystemExit(f"modules loaded from outside {root}: {', '.join(mixed)}")
    return api


def code_identity(root: Path) -> dict[str, Any]:
    """The checkout measured: its path, commit and whether its code has local changes."""

    def git(*args: str) -> str:
        done = subprocess.run(  # noqa: S603 - fixed git arguments
            ["git", "-C", str(root), *args],  # noqa: S607 - git from PATH, as developers run it
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "appliance", "models", "ingest")
    return {
        "root": str(root),
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted_changes": changed.splitlines() if changed else [],
    }


# -- instance and corpus ---------------------------------------------------------------


def corpus_root() -> Path:
    """Run answers_corpus.sh (installs python3.11-doc when missing); the HTML root."""
    done = subprocess.run(  # noqa: S603 - our own script
        ["bash", str(CORPUS_SCRIPT)],  # noqa: S607 - bash from PATH
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{CORPUS_SCRIPT.name} failed:\n{done.stderr}")
    log(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "corpus ready")
    return Path(done.stdout.strip().splitlines()[-1])


def corpus_pages() -> list[str]:
    """Pages of answers_corpus.txt, relative to the HTML root."""
    lines = CORPUS_LIST.read_text(encoding="utf-8").splitlines()
    return [entry for line in lines if (entry := line.split("#", 1)[0].strip())]


def page_filename(page: str) -> str:
    """The filename a page is submitted under: its relative path, '/' spelt '__'."""
    return page.replace("/", "__")


def isolate_environment(workdir: Path) -> None:
    """No APPLIANCE_* variable or /etc/appliance file of this machine applies."""
    for name in list(os.environ):
        if name.startswith("APPLIANCE_"):
            del os.environ[name]
    empty = workdir / "empty-config.toml"
    empty.write_text("")
    os.environ["APPLIANCE_CONFIG"] = str(empty)


def make_settings(api: Api, workdir: Path, chat_overrides: dict[str, int]) -> Any:
    """Settings for the instance under ``workdir`` (the layout tests/fixtures/app.py uses)."""
    root = workdir / "instance"
    values: dict[str, Any] = {
        "data_dir": root / "lib" / "appliance",
        "key_file": root / "etc" / "appliance" / "kek",
        "keystore_dir": root / "lib" / "appliance-keys",
    }
    settings = api.settings_cls(**values)
    known = type(settings.chat).model_fields
    for name in [n for n in chat_overrides if n not in known]:
        log(f"--{name.replace('_', '-')} ignored: this code has no chat.{name} setting")
    usable = {n: v for n, v in chat_overrides.items() if n in known}
    if usable:
        chat = {**settings.chat.model_dump(), **usable}
        settings = api.settings_cls(**values, chat=chat)
    return settings


@dataclass
class Corpus:
    """The ingested pages: document id per page, and how ingestion went."""

    doc_pages: dict[str, str]
    filename_pages: dict[str, str]
    report: dict[str, Any]
    chunk_texts: dict[str, list[str]] = field(default_factory=dict)  # page -> normalised

    def page_of(self, doc_id: str | None, filename: str | None) -> str | None:
        """The corpus page a passage comes from (by document id, else by filename)."""
        if doc_id and doc_id in self.doc_pages:
            return self.doc_pages[doc_id]
        return self.filename_pages.get(filename or "")


def _document_states(api: Api, rt: Any, ids: Sequence[str]) -> dict[str, Any]:
    t = api.tables
    with rt.sessions() as s:
        rows = s.execute(
            select(t.Document.id, t.Document.state, t.Document.error_reason).where(
                t.Document.id.in_(list(ids))
            )
        ).all()
        chunks = dict(
            s.execute(
                select(t.Chunk.doc_id, func.count())
                .where(t.Chunk.doc_id.in_(list(ids)))
                .group_by(t.Chunk.doc_id)
            ).all()
        )
    return {r.id: (r.state, r.error_reason, chunks.get(r.id, 0)) for r in rows}


def ensure_corpus(api: Api, rt: Any, html_root: Path, workdir: Path) -> Corpus:
    """Submit every page not yet indexed in this instance, run the worker, report."""
    state_path = workdir / STATE_FILE
    state: dict[str, Any] = (
        json.loads(state_path.read_text()) if state_path.is_file() else {"documents": {}}
    )
    if state.get("appliance", str(api.root)) != str(api.root):
        raise SystemExit(
            f"{workdir} was set up by the code in {state['appliance']}, not {api.root}: "
            "the database schemas differ. Give each checkout its own --workdir."
        )
    pages = corpus_pages()
    known: dict[str, str] = dict(state["documents"])
    states = _document_states(api, rt, list(known.values()))
    indexed = api.tables.INDEXED
    missing = [p for p in pages if p not in known or states.get(known[p], ("",))[0] != indexed]
    started = time.perf_counter()
    if missing:
        log(f"submitting {len(missing)} of {len(pages)} pages")
        with rt.sessions() as s:
            owner = api.users.get_user_by_name(s, "admin")
            grants = [api.resolve_principal(s, "everyone")]
            for page in missing:
                result = api.docs.submit_file(
                    session=s,
                    crypto=rt.crypto,
                    blobs=rt.blobs,
                    path=html_root / page,
                    filename=page_filename(page),
                    owner=owner,
                    grants=grants,
                    classification="internal",
                    max_bytes=rt.settings.max_upload_bytes,
                    actor=ACTOR,
                )
                known[page] = result.document.id
            s.commit()
        state.update(appliance=str(api.root), html_root=str(html_root), documents=known)
        state_path.write_text(json.dumps(state, indent=2))
        parser = api.parser_cls(max_bytes=rt.settings.max_upload_bytes, ocr=False, isolated=False)
        worker = api.worker_cls(rt, parser=parser)
        try:
            worker.recover()  # a previous run may have stopped mid-document
            log("ingesting (parse, chunk, embed, publish) ...")
            worker.run_until_idle()
        finally:
            worker.close()
        states = _document_states(api, rt, list(known.values()))
    else:
        log(f"reusing the {len(pages)} pages already indexed in {workdir}")
    failed = {
        page: states.get(doc, ("missing", None, 0))[:2]
        for page, doc in known.items()
        if states.get(doc, ("",))[0] != indexed
    }
    for page, (doc_state, reason) in failed.items():
        log(f"page {page} not indexed ({doc_state}): {reason}")
    chunks = [states[d][2] for d in known.values() if d in states]
    return Corpus(
        doc_pages={doc: page for page, doc in known.items()},
        filename_pages={page_filename(p): p for p in pages},
        report={
            "pages": len(pages),
            "indexed": len(pages) - len(failed),
            "not_indexed": {p: {"state": s, "reason": r} for p, (s, r) in failed.items()},
            "chunks": sum(chunks),
            "chunks_per_page_median": statistics.median(chunks) if chunks else None,
            "ingested_now": len(missing),
            "ingest_seconds": round(time.perf_counter() - started, 1) if missing else None,
        },
    )


def read_chunks(api: Api, rt: Any, corpus: Corpus) -> None:
    """Every indexed chunk's text, normalised, by page: where a key phrase could be found."""
    t = api.tables
    with rt.sessions() as s:
        rows = s.execute(
            select(t.Chunk.doc_id, t.Chunk.chunk_no, t.Chunk.text_ct).where(
                t.Chunk.doc_id.in_(list(corpus.doc_pages))
            )
        ).all()
    for row in rows:
        text = rt.crypto.decrypt_text(
            api.doc_key, row.doc_id, api.chunk_place(row.chunk_no), row.text_ct
        )
        corpus.chunk_texts.setdefault(corpus.doc_pages[row.doc_id], []).append(normalise(text))


def asker_id(api: Api, rt: Any) -> str:
    """A plain (non-admin) user who asks every question."""
    with rt.sessions() as s:
        try:
            user = api.users.get_user_by_name(s, ASKER)
        except api.not_found:
            user, _ = api.users.create_user(s, username=ASKER, actor=ACTOR)
            s.commit()
        return str(user.id)


@contextmanager
def instance(
    api: Api, workdir: Path, chat_overrides: dict[str, int]
) -> Iterator[tuple[Any, Corpus, str]]:
    """An initialised runtime with the corpus indexed, and the asker's user id."""
    html_root = corpus_root()
    isolate_environment(workdir)
    api.install()
    settings = make_settings(api, workdir, chat_overrides)
    api.init(settings)
    rt = api.open_runtime(settings)
    try:
        corpus = ensure_corpus(api, rt, html_root, workdir)
        read_chunks(api, rt, corpus)
        yield rt, corpus, asker_id(api, rt)
    finally:
        rt.close()


# -- asking ----------------------------------------------------------------------------


@dataclass
class Shown:
    """One evidence passage as the asker sees it."""

    rank: int
    page: str | None
    filename: str | None
    text: str
    highlighted: list[str] | None  # runs of highlighted sentences; None: no highlights exist


@dataclass
class Asked:
    """What one question produced: the evidence, the answer, and the times."""

    evidence: list[Shown] = field(default_factory=list)
    answer: str | None = None
    draft: str | None = None  # the streamed tokens, before the pipeline's checks
    done: dict[str, Any] | None = None
    conversation_id: str | None = None
    evidence_wall_ms: float | None = None
    first_token_wall_ms: float | None = None
    total_wall_ms: float | None = None
    evidence_ms: float | None = None  # as the pipeline reports it
    error: str | None = None


def _highlight_runs(sentences: list[dict[str, Any]]) -> list[str]:
    runs: list[list[str]] = []
    previous = False
    for s in sentences:
        if s.get("highlight"):
            if previous:
                runs[-1].append(s["text"])
            else:
                runs.append([s["text"]])
        previous = bool(s.get("highlight"))
    return [" ".join(run) for run in runs]


def _from_passages(corpus: Corpus, passages: list[dict[str, Any]]) -> list[Shown]:
    ordered = sorted(passages, key=lambda p: p.get("rank") or p.get("marker") or 0)
    shown = []
    for position, p in enumerate(ordered, start=1):
        sentences = p.get("sentences")
        if sentences is not None:
            text = " ".join(s["text"] for s in sentences)
            highlighted: list[str] | None = _highlight_runs(sentences)
        else:  # older pipeline: a cited source's snippet
            text, highlighted = p.get("snippet") or p.get("text") or "", None
        page = corpus.page_of(p.get("doc_id"), p.get("filename"))
        shown.append(Shown(position, page, p.get("filename"), text, highlighted))
    return shown


def _ms(start: float, end: float | None) -> float | None:
    return round((end - start) * 1000, 1) if end is not None else None


def ask(
    api: Api,
    rt: Any,
    corpus: Corpus,
    user_id: str,
    question: str,
    *,
    conversation_id: str | None,
    previous: list[str],
    generate: bool,
) -> Asked:
    """Ask through the pipeline (up to the evidence with ``generate`` off)."""
    if not generate and not api.has_evidence:
        return _retrieve_only(api, rt, corpus, user_id, question, previous)
    out = Asked(conversation_id=conversation_id)
    t0 = time.perf_counter()
    t_evidence = t_first = None
    tokens: list[str] = []
    sources: list[dict[str, Any]] | None = None
    events = api.pipeline.answer(
        rt=rt,
        scheduler=rt.scheduler,
        user_id=user_id,
        question=question,
        conversation_id=conversation_id,
    )
    try:
        for event in events:
            now = time.perf_counter()
            if event.kind == "conversation":
                out.conversation_id = event.data["id"]
            elif event.kind == "evidence":
                t_evidence = now
                out.evidence = _from_passages(corpus, event.data["passages"])
                out.evidence_ms = event.data.get("evidence_ms")
                if not generate:
                    break
            elif event.kind == "token":
                t_first = t_first or now
                tokens.append(event.data["text"])
            elif event.kind == "sources":
                sources = event.data["sources"]
            elif event.kind == "done":
                out.done = event.data
    except Exception as exc:  # one failing question must not lose the whole run
        out.error = f"{type(exc).__name__}: {exc}"
        log(f"error: {out.error}")
    finally:
        events.close()
    end = time.perf_counter()
    if not api.has_evidence and sources is not None:
        out.evidence = _from_passages(corpus, sources)
        t_evidence = end  # the old pipeline showed its (cited) sources after the answer
    if out.done is not None:
        out.draft = "".join(tokens)
        out.answer = out.done.get("text", out.draft)
        out.evidence_ms = out.evidence_ms or (out.done.get("timings") or {}).get("evidence_ms")
    out.evidence_wall_ms = _ms(t0, t_evidence)
    out.first_token_wall_ms = _ms(t0, t_first)
    out.total_wall_ms = _ms(t0, end)
    return out


def _retrieve_only(
    api: Api, rt: Any, corpus: Corpus, user_id: str, question: str, previous: list[str]
) -> Asked:
    """Old pipeline, no generation: the passages it retrieved for its prompt, in order."""
    cfg = rt.settings.chat
    history = [api.chat_message("user", q) for q in previous]
    query = api.pipeline.retrieval_query(history, question)
    t0 = time.perf_counter()
    with rt.sessions() as s:
        user = s.get(api.user_cls, user_id)
        found = api.retrieve(
            rt=rt, session=s, user=user, query=query, k=cfg.top_k, min_score=cfg.min_score
        )
    end = time.perf_counter()
    return Asked(
        evidence=[
            Shown(src.rank, corpus.page_of(src.doc_id, src.filename), src.filename, src.text, None)
            for src in found
        ],
        evidence_wall_ms=_ms(t0, end),
        total_wall_ms=_ms(t0, end),
    )


# -- scoring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One question to ask: stand-alone, or one turn of a follow-up sequence."""

    ref: str
    question: str
    page: str
    key_phrase: str
    turn: int = 1
    group: str = "question"  # or turn_1, on_topic, topic_switch


def max_sentence_repeats(text: str) -> int:
    """How often the most repeated sentence (two words or more) occurs in ``text``."""
    counts: Counter[str] = Counter()
    for piece in _SENTENCE_END.split(text.replace(_NOT_FOUND, "")):
        sentence = normalise(_MARKER.sub("", piece)).strip(" .!?:;,-*")
        if len(sentence.split()) >= 2:
            counts[sentence] += 1
    return max(counts.values(), default=0)


def score(item: Item, asked: Asked, corpus: Corpus) -> dict[str, Any]:
    """The per-item record: ranks of the expected page, key phrase, claims, loops, times."""
    ranks = [p.rank for p in asked.evidence if p.page == item.page]
    first = min(ranks, default=None)
    phrase = normalise(item.key_phrase)
    in_evidence = any(phrase in normalise(p.text) for p in asked.evidence)
    in_chunks = sum(phrase in text for text in corpus.chunk_texts.get(item.page, []))
    has_highlights = bool(asked.evidence) and all(p.highlighted is not None for p in asked.evidence)
    in_highlight = (
        any(phrase in normalise(h) for p in asked.evidence for h in p.highlighted or [])
        if has_highlights
        else None
    )
    in_answer = phrase in normalise(asked.answer) if asked.answer is not None else None
    done = asked.done or {}
    claims = done.get("claims") if not done.get("abstained") else []
    checked = [c for c in claims if c.get("checked")] if claims is not None else None
    repeats = max_sentence_repeats(asked.answer) if asked.answer is not None else None
    timings = done.get("timings") or {}
    return {
        "ref": item.ref,
        "group": item.group,
        "turn": item.turn,
        "question": item.question,
        "page": item.page,
        "key_phrase": item.key_phrase,
        "error": asked.error,
        "evidence_pages": [p.page or f"?{p.filename}" for p in asked.evidence],
        "page_ranks": ranks,
        "hit_at_1": first == 1,
        "hit_at_5": first is not None and first <= 5,
        "rr_at_10": 1 / first if first is not None and first <= MRR_DEPTH else 0.0,
        "evidence_shows_page": first is not None,
        "key_phrase_chunks": in_chunks,
        "key_phrase_indexed": in_chunks > 0,
        "key_phrase_in_evidence": in_evidence,
        "key_phrase_in_highlight": in_highlight,
        "key_phrase_in_answer": in_answer,
        "key_phrase_visible": in_evidence or bool(in_answer),
        "checked_sentences": len(checked) if checked is not None else None,
        "supported_sentences": sum(bool(c.get("supported")) for c in checked)
        if checked is not None
        else None,
        "max_sentence_repeats": repeats,
        "loop": repeats >= LOOP_REPEATS if repeats is not None else None,
        "cut_short": done.get("cut_short"),
        "abstained": done.get("abstained"),
        # Withheld for a quote: an abstention whose claims are all supported (the quote);
        # a plain abstention has no claims (weak evidence) or mostly unsupported ones.
        "quoted": bool(
            done.get("abstained")
            and done.get("claims")
            and all(c.get("supported") for c in done["claims"])
        )
        if done.get("abstained") is not None
        else None,
        "answer": asked.answer,
        "draft": asked.draft if asked.draft != asked.answer else None,
        "load_1min": round(os.getloadavg()[0], 2),
        "evidence_wall_ms": asked.evidence_wall_ms,
        "first_token_wall_ms": asked.first_token_wall_ms,
        "total_wall_ms": asked.total_wall_ms,
        "evidence_ms": asked.evidence_ms,
        "retrieve_ms": timings.get("retrieve_ms"),
        "first_token_ms": timings.get("first_token_ms"),
        "queue_ms": timings.get("queue_ms"),
        "total_ms": timings.get("total_ms"),
    }


def _share(records: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r[key] is not None]
    return round(sum(map(float, values)) / len(values), 3) if values else None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1), linearly interpolated between the nearest ranks."""
    ordered = sorted(values)
    where = (len(ordered) - 1) * q
    low, high = math.floor(where), math.ceil(where)
    return ordered[low] + (ordered[high] - ordered[low]) * (where - low)


def _spread(records: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    values = [float(r[key]) for r in records if r[key] is not None]
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 1),
        "p90": round(percentile(values, 0.9), 1),
        "n": len(values),
    }


TIMING_KEYS = (
    "evidence_wall_ms",
    "first_token_wall_ms",
    "total_wall_ms",
    "evidence_ms",
    "retrieve_ms",
    "first_token_ms",
    "queue_ms",
    "total_ms",
)


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The figures over a set of records (see the module docstring)."""
    ok = [r for r in records if r["error"] is None]
    checked = sum(r["checked_sentences"] or 0 for r in ok)
    supported = sum(r["supported_sentences"] or 0 for r in ok)
    has_claims = any(r["checked_sentences"] is not None for r in ok)
    return {
        "n": len(records),
        "errors": len(records) - len(ok),
        "hit_at_1": _share(ok, "hit_at_1"),
        "hit_at_5": _share(ok, "hit_at_5"),
        "mrr_at_10": _share(ok, "rr_at_10"),
        "evidence_shows_page": _share(ok, "evidence_shows_page"),
        "key_phrase_indexed": _share(ok, "key_phrase_indexed"),
        "key_phrase_visible": _share(ok, "key_phrase_visible"),
        "key_phrase_in_evidence": _share(ok, "key_phrase_in_evidence"),
        "key_phrase_in_highlight": _share(ok, "key_phrase_in_highlight"),
        "key_phrase_in_answer": _share(ok, "key_phrase_in_answer"),
        "supported_sentence_share": round(supported / checked, 3) if checked else None,
        "checked_sentences": checked if has_claims else None,
        "loop_rate": _share(ok, "loop"),
        "cut_short_rate": _share(ok, "cut_short"),
        "abstention_rate": _share(ok, "abstained"),
        "quoted_rate": _share(ok, "quoted"),
        "evidence_passages_mean": round(statistics.mean(len(r["evidence_pages"]) for r in ok), 2)
        if ok
        else None,
        "timings": {key: _spread(ok, key) for key in TIMING_KEYS if _spread(ok, key)},
        "load_1min_median": statistics.median(r["load_1min"] for r in ok) if ok else None,
    }


# -- the run ---------------------------------------------------------------------------


def load_items(limit: int | None) -> tuple[list[Item], list[list[Item]]]:
    """Questions (``limit`` of them, evenly spread over the file) and follow-up sequences."""
    data = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    raw = data["questions"]
    if limit is not None and limit < len(raw):
        raw = [raw[i * len(raw) // limit] for i in range(limit)]
    questions = [Item(q["id"], q["question"], q["page"], q["key_phrase"]) for q in raw]
    followups = []
    for f in data["followups"]:
        switch = f.get("topic_switch_at")
        followups.append(
            [
                Item(
                    f"{f['id']}.{n}",
                    t["question"],
                    t["page"],
                    t["key_phrase"],
                    turn=n,
                    group="turn_1" if n == 1 else "topic_switch" if n == switch else "on_topic",
                )
                for n, t in enumerate(f["turns"], start=1)
            ]
        )
    return questions, followups


def settings_used(rt: Any, source_tokens: int | None, generate: bool) -> dict[str, Any]:
    """The settings that shape an answer, as this code has them (null: no such setting)."""
    s = rt.settings
    chat = s.chat.model_dump()
    keys = (
        "top_k",
        "min_score",
        "source_tokens",
        "history_tokens",
        "history_turns",
        "answer_max_tokens",
        "temperature",
        "repeat_penalty",
    )
    return {
        **{key: chat.get(key) for key in keys},
        "source_tokens_override": source_tokens,
        "chat_model": s.models.chat_model,
        "chat_model_loaded": rt.generator().name if generate else None,
        "embedder": s.models.embedder,
        "n_ctx": s.models.n_ctx,
        "chunk_max_tokens": s.ingest.chunk_max_tokens,
        "chunk_overlap_tokens": s.ingest.chunk_overlap_tokens,
    }


def _progress(done: int, total: int, record: dict[str, Any]) -> None:
    first = min(record["page_ranks"], default=None)
    log(
        f"[{done}/{total}] {record['ref']} page rank {first or '-'}, "
        f"phrase {'yes' if record['key_phrase_visible'] else 'no'}, "
        f"{(record['total_wall_ms'] or 0) / 1000:.1f} s"
    )


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Set up, ask everything, and build the report."""
    started = time.perf_counter()
    load_start = os.getloadavg()
    api = load_api()
    generate = not args.no_generate
    questions, followups = load_items(args.limit)
    if not args.followups:
        followups = []
    total = len(questions) + sum(len(f) for f in followups)
    records: list[dict[str, Any]] = []
    overrides = {
        name: value
        for name, value in (("source_tokens", args.source_tokens), ("top_k", args.top_k))
        if value is not None
    }
    with instance(api, workdir, overrides) as (rt, corpus, user_id):
        for item in questions:
            asked = ask(
                api,
                rt,
                corpus,
                user_id,
                item.question,
                conversation_id=None,
                previous=[],
                generate=generate,
            )
            records.append(score(item, asked, corpus))
            _progress(len(records), total, records[-1])
        for turns in followups:
            conversation: str | None = None
            previous: list[str] = []
            for item in turns:
                asked = ask(
                    api,
                    rt,
                    corpus,
                    user_id,
                    item.question,
                    conversation_id=conversation,
                    previous=list(previous),
                    generate=generate,
                )
                conversation = asked.conversation_id
                previous.append(item.question)
                records.append(score(item, asked, corpus))
                _progress(len(records), total, records[-1])
        used = settings_used(rt, args.source_tokens, generate)
    stand_alone = [r for r in records if r["group"] == "question"]
    turns_done = [r for r in records if r["group"] != "question"]
    if api.has_evidence:
        evidence_from = "evidence event (ranked passages, highlighted sentences)"
    elif generate:
        evidence_from = "sources event (cited sources only, 300-character snippets)"
    else:
        evidence_from = "retrieve() (no evidence event in this code; nothing shown before)"
    report: dict[str, Any] = {
        "benchmark": "answers",
        "code": code_identity(api.root),
        "pipeline": "evidence" if api.has_evidence else "legacy (no evidence event)",
        "mode": "generate" if generate else "no-generate",
        "evidence_from": evidence_from,
        "settings": used,
        "machine": {
            "cpus": os.cpu_count(),
            # Other work on the machine slows every figure of `timings` (2 cores here).
            "load_average_1_5_15_start": [round(x, 2) for x in load_start],
            "load_average_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
            "load_1min_median_over_questions": statistics.median(r["load_1min"] for r in records)
            if records
            else None,
        },
        "corpus": corpus.report,
        "questions": summarise(stand_alone),
    }
    if turns_done:
        by_turn = sorted({r["turn"] for r in turns_done})
        report["followups"] = {
            "sequences": len(followups),
            **{
                group: summarise([r for r in turns_done if r["group"] == group])
                for group in ("turn_1", "on_topic", "topic_switch")
            },
            "by_turn": {
                str(n): summarise([r for r in turns_done if r["turn"] == n]) for n in by_turn
            },
            "first_token_wall_ms": {
                "turn_1": _spread([r for r in turns_done if r["turn"] == 1], "first_token_wall_ms"),
                "later": _spread([r for r in turns_done if r["turn"] > 1], "first_token_wall_ms"),
            },
        }
    report["code"]["modules_from_elsewhere"] = foreign_modules(api.root)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    if args.details:
        report["details"] = records
    return report


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "To measure another checkout, put it first on PYTHONPATH, e.g. "
            "`git worktree add /tmp/before 9f07574 && cd /tmp/before && "
            "PYTHONPATH=/tmp/before /work/main/.venv/bin/python /work/main/bench/answers.py`."
        ),
    )
    parser.add_argument("--limit", type=int, metavar="N", help="ask N questions, evenly spread")
    parser.add_argument(
        "--no-generate",
        action="store_true",
        help="stop at the evidence: retrieval and evidence figures only, no chat model",
    )
    parser.add_argument(
        "--followups",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also ask the follow-up sequences, each in one conversation (default: yes)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep the instance here and reuse its ingested corpus next time (default: temp)",
    )
    parser.add_argument(
        "--source-tokens", type=int, metavar="N", help="override settings.chat.source_tokens"
    )
    parser.add_argument(
        "--top-k", type=int, metavar="N", help="override settings.chat.top_k (passages shown)"
    )
    parser.add_argument(
        "--details", action="store_true", help="add one record per question and turn"
    )
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="bench-answers-") as tmp:
            report = run(args, Path(tmp))
    json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
