"""Asking in the chat page, and checking what it shows against what the server computed.

The server's own account of an answer is the `evidence` and `done` events of the same
request, read from a copy of the stream the page receives. Each check compares the page
with it, so the checks hold for whatever the real model writes, and fail when the page
drops the evidence, opens the wrong passage or leaves an unsupported sentence unflagged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import Locator, Page, expect

# Records, in the page, the order in which the newest answer gets its evidence panel, its
# first streamed text and its end (the Copy button), and whether it was still busy then.
WATCH_ANSWER = """(before) => {
  window.__answer = [];
  const seen = new Set();
  const note = (what, yes) => {
    if (!yes || seen.has(what)) return;
    seen.add(what);
    window.__answer.push(what === "evidence" && !document.getElementById("stop").hidden
      ? "evidence while busy" : what);
  };
  new MutationObserver(() => {
    const answer = document.querySelectorAll(".msg-answer")[before];
    if (!answer) return;
    note("evidence", answer.querySelector(".evidence"));
    note("text", answer.querySelector(".body").textContent.trim());
    note("done", answer.querySelector(".msg-actions button"));
  }).observe(document.getElementById("messages"),
    { subtree: true, childList: true, characterData: true });
}"""


# Keeps a copy of each /api/chat response body as the page reads it (a clone of the stream:
# the page still gets every event as it comes). DevTools keeps no body of a streamed fetch.
TAP_CHAT = """() => {
  if (!window.__chat) {
    window.__chat = [];
    const fetch = window.fetch;
    window.fetch = async (...args) => {
      const response = await fetch(...args);
      if (String(args[0]).endsWith("/api/chat")) {
        const copy = { text: null };
        window.__chat.push(copy);
        response.clone().text().then((t) => { copy.text = t; }, () => { copy.text = ""; });
      }
      return response;
    };
  }
  return window.__chat.length;
}"""


def tap_chat(page: Page) -> int:
    """Start keeping the page's /api/chat bodies; the index the next question's will have."""
    return int(page.evaluate(TAP_CHAT))


def chat_events(page: Page, index: int) -> dict[str, Any]:
    """The events of the page's `index`-th /api/chat response, once it has ended."""
    page.wait_for_function("(i) => window.__chat[i] && window.__chat[i].text !== null", arg=index)
    return sse(page.evaluate("(i) => window.__chat[i].text", index))


def sse(body: str) -> dict[str, Any]:
    """The events of one /api/chat response by kind (the first of each kind)."""
    events: dict[str, Any] = {}
    for block in body.split("\n\n"):
        kind, data = "message", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                data += line[len("data: ") :]
        if data:
            events.setdefault(kind, json.loads(data))
    return events


def ask(page: Page, question: str) -> tuple[Locator, dict[str, Any]]:
    """On the chat page: ask, see it stream, wait for the end; the answer and its events."""
    page.evaluate(WATCH_ANSWER, page.locator(".msg-answer").count())
    index = tap_chat(page)
    page.get_by_label("Your question").fill(question)
    page.get_by_label("Your question").press("Enter")
    expect(page.locator(".msg-user").last).to_have_text(re.compile(re.escape(question)))
    answer = page.locator(".msg-answer").last
    expect(answer.locator(".msg-actions button", has_text="Copy")).to_be_visible(timeout=120_000)
    expect(page.locator("#stop")).to_be_hidden()
    events = chat_events(page, index)
    assert "done" in events, events
    return answer, events


def passage_of(events: dict[str, Any], rank: int) -> dict[str, Any]:
    """The evidence passage of this rank in an answer's events."""
    return next(p for p in events["evidence"]["passages"] if p["rank"] == rank)


def highlights(passage: dict[str, Any]) -> list[str]:
    """The sentences of a passage the server highlighted."""
    return [s["text"] for s in passage["sentences"] if s["highlight"]]


def opens_passage(page: Page, opener: Locator, passage: dict[str, Any]) -> None:
    """Clicking `opener` shows this passage (title, place, marked sentences) in the dialog."""
    opener.click()
    dialog = page.locator("#passage")
    expect(dialog).to_be_visible()
    name = passage["title"] or passage["filename"]
    expect(dialog.locator("#passage-title")).to_have_text(f"[{passage['rank']}] {name}")
    if passage["heading"] and passage["heading"] != passage["title"]:
        expect(dialog.locator("#passage-meta")).to_contain_text(passage["heading"])
    marks = dialog.locator("#passage-text mark")
    expect(marks).to_have_text(highlights(passage))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def shows_evidence(answer: Locator, events: dict[str, Any]) -> None:
    """The panel lists every passage of the `evidence` event, ranked, best sentences marked."""
    passages = events["evidence"]["passages"]
    panel = answer.locator("section.evidence")
    expect(panel.get_by_role("heading", name="From your documents")).to_be_visible()
    items = panel.locator(".evidence-item")
    expect(items).to_have_count(len(passages))
    for i, p in enumerate(passages):
        item = items.nth(i)
        expect(item).to_have_attribute("data-rank", str(p["rank"]))
        expect(item.locator(".evidence-doc")).to_have_text(p["title"] or p["filename"])
        expect(item.locator("mark")).to_have_text(highlights(p))


def checked_as_computed(page: Page, answer: Locator, events: dict[str, Any]) -> None:
    """The answer shows the server's checking: citations open the passage of their evidence
    rank, each unsupported sentence is flagged (visibly, with a name) and counted."""
    done = events["done"]
    body = answer.locator(".body")
    flags = body.locator(".unsupported")
    expect(flags).to_have_count(done["html"].count('class="unsupported"'))
    unsupported = 0 if done["abstained"] else done["unsupported"]
    if not done["abstained"]:
        expect(flags).to_have_count(unsupported)
    note = answer.locator(".answer-note")
    if unsupported:
        words = "1 sentence was" if unsupported == 1 else f"{unsupported} sentences were"
        expect(note).to_be_visible()
        expect(note).to_have_text(f"{words} not found in your documents.")
    else:
        expect(note).to_be_hidden()
    for i in range(flags.count()):
        flag = flags.nth(i)
        expect(flag).to_be_visible()
        expect(flag).to_have_accessible_name(re.compile("not found in your documents"))
        background = flag.evaluate("f => getComputedStyle(f).backgroundColor")
        assert background not in ("transparent", "rgba(0, 0, 0, 0)"), background
    supported = {r for c in done["claims"] if c["supported"] for r in c["ranks"]}
    cites = body.locator("button.cite")
    markers = {int(m) for m in cites.evaluate_all("bs => bs.map((b) => b.dataset.marker)")}
    if not done["abstained"]:
        assert markers == supported, (markers, done["claims"])
    for n in sorted(markers):
        expect(answer.locator(f'.evidence-item[data-rank="{n}"]')).to_have_class(
            re.compile(r"\bcited\b")
        )
        opens_passage(
            page, body.locator(f'button.cite[data-marker="{n}"]').first, passage_of(events, n)
        )


def evidence_came_first(page: Page) -> None:
    """The panel appeared while the answer was still being prepared, before its text."""
    order = page.evaluate("() => window.__answer")
    assert order[:1] == ["evidence while busy"], order
    assert order.index("done") > 0, order


def no_horizontal_scroll(page: Page) -> None:
    """Nothing is wider than the viewport."""
    wide = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 0, f"{wide}px of horizontal scroll"
