// The evidence panel: the ranked passages an answer may draw on, shown as soon as the
// search is done, with the sentences that best match the question marked. Text only:
// every string here comes from documents and goes into the page with createElement and
// text nodes, never as markup.
import { clear, el } from "./api.js";

const SHOWN = 3; // passages listed before "Show N more passages"
let panels = 0; // for unique heading ids

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

export const rankOf = (p) => String(p.rank ?? p.marker);

export function documentName(p) {
  return p.title || p.filename || "Untitled document";
}

// "handbook.md · page 2 · Office Hours": where a passage is, after its document's name.
export function whereIn(p) {
  const parts = [];
  if (p.title && p.filename && p.filename !== p.title) parts.push(p.filename);
  if (p.page) parts.push(`page ${p.page}`);
  if (p.heading && p.heading !== p.title) parts.push(p.heading);
  return parts.join(" · ");
}

function highlighted(p) {
  return Array.isArray(p.sentences) ? p.sentences.filter((s) => s.highlight).map((s) => s.text) : [];
}

// The passage's sentences: highlighted ones in <mark>, each run of the others in a span
// that is folded away (an ellipsis shows where) until the passage is expanded.
function passageText(p) {
  const text = el("p", { class: "evidence-text" });
  const sentences = Array.isArray(p.sentences) ? p.sentences : [];
  if (!sentences.some((s) => s.highlight)) {
    // Older stored answers kept a snippet, not sentences.
    text.append(sentences.map((s) => s.text).join(" ") || p.snippet || "");
    return { text, folded: false };
  }
  let run = null;
  let folded = false;
  sentences.forEach((s, i) => {
    if (s.highlight) {
      run = null;
      text.append(i ? " " : "", el("mark", {}, s.text));
      return;
    }
    if (!run) {
      folded = true;
      text.append(i ? " " : "", el("span", { class: "evidence-gap", "aria-hidden": "true" }, "…"));
      run = el("span", { class: "evidence-context" });
      text.append(run);
      run.append(i ? " " : "", s.text);
    } else {
      run.append(" ", s.text);
    }
  });
  return { text, folded };
}

function passageItem(p) {
  const rank = rankOf(p);
  if (p.status) {
    return el("li", { class: "evidence-item gone", dataset: { rank } },
      el("span", { class: "evidence-rank" }, `[${rank}]`), ` This passage is ${p.status} to you.`);
  }
  const where = whereIn(p);
  const head = el("div", { class: "evidence-where" },
    el("span", { class: "evidence-rank" }, `[${rank}]`),
    el("span", { class: "evidence-doc" }, documentName(p)),
    where ? el("span", { class: "evidence-loc" }, where) : null,
    el("span", { class: "evidence-cited", hidden: true }, "cited"));
  const { text, folded } = passageText(p);
  const item = el("li", { class: "evidence-item", dataset: { rank } }, head, text);
  // Opened by the answer's click handler (chat.js), like a citation button of this rank.
  const actions = el("div", { class: "evidence-actions" }, el("button", {
    type: "button", class: "evidence-open", dataset: { marker: rank }, "aria-label": `Open passage ${rank}`,
  }, "Open passage"));
  if (folded) {
    const more = el("button", { type: "button", class: "evidence-more", "aria-expanded": "false" }, "Show more");
    more.addEventListener("click", () => {
      const open = item.classList.toggle("expanded");
      more.setAttribute("aria-expanded", String(open));
      more.textContent = open ? "Show less" : "Show more";
    });
    actions.append(more);
  }
  item.append(actions);
  return item;
}

// The panel for one answer; null when nothing readable was found (the answer says so).
export function evidencePanel(passages) {
  if (!passages.length) return null;
  panels += 1;
  const id = `evidence-title-${panels}`;
  const readable = passages.filter((p) => !p.status);
  const documents = new Set(readable.map((p) => p.doc_id)).size;
  const summary = readable.length
    ? `${plural(readable.length, "passage", "passages")} in ${plural(documents, "document", "documents")}, best match first`
    : "These passages are no longer available to you";
  const list = el("ol", { class: "evidence-list" });
  const items = passages.map(passageItem);
  items.forEach((item, i) => {
    if (i >= SHOWN) {
      item.classList.add("evidence-extra");
      item.hidden = true;
    }
    list.append(item);
  });
  const panel = el("section", { class: "evidence", "aria-labelledby": id },
    el("div", { class: "evidence-head" },
      el("h3", { class: "evidence-title", id }, "From your documents"),
      el("p", { class: "evidence-summary" }, summary)),
    list);
  const extra = items.length - SHOWN;
  if (extra > 0) {
    const all = el("button", { type: "button", class: "evidence-all", "aria-expanded": "false" },
      `Show ${plural(extra, "more passage", "more passages")}`);
    all.addEventListener("click", () => {
      const open = all.getAttribute("aria-expanded") !== "true";
      for (const item of items.slice(SHOWN)) item.hidden = !open;
      all.setAttribute("aria-expanded", String(open));
      all.textContent = open ? "Show fewer passages" : `Show ${plural(extra, "more passage", "more passages")}`;
    });
    panel.append(all);
  }
  return panel;
}

// Mark the passages the checked answer cites (by evidence rank).
export function markCited(panel, ranks) {
  if (!panel) return;
  for (const item of panel.querySelectorAll(".evidence-item")) {
    const cited = ranks.has(item.dataset.rank);
    item.classList.toggle("cited", cited);
    const badge = item.querySelector(".evidence-cited");
    if (badge) badge.hidden = !cited;
    if (cited) item.hidden = false; // a cited passage is never folded away
  }
}

const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

// Fill `box` with `text`, the passage's highlighted sentences in <mark> (matched loosely on
// whitespace: sentences are stored with their whitespace collapsed). Returns how many.
export function markedPassage(box, text, p) {
  clear(box);
  const ranges = [];
  for (const sentence of highlighted(p)) {
    const words = sentence.split(/\s+/).filter(Boolean).map(escapeRegExp);
    if (!words.length) continue;
    const m = new RegExp(words.join("\\s+")).exec(text);
    if (m) ranges.push([m.index, m.index + m[0].length]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  let pos = 0;
  let marked = 0;
  for (const [start, end] of ranges) {
    if (start < pos) continue;
    box.append(text.slice(pos, start), el("mark", {}, text.slice(start, end)));
    pos = end;
    marked += 1;
  }
  box.append(text.slice(pos));
  return marked;
}

// What the dialog shows before the full passage has loaded.
export function previewText(p) {
  const sentences = Array.isArray(p.sentences) ? p.sentences.map((s) => s.text) : [];
  return sentences.join(" ") || p.snippet || "Loading…";
}
