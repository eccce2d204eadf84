// Chat: conversations, the evidence found for each question (shown before the model
// starts), streamed answers (plain text while streaming, then the server's sanitised HTML),
// citations that open the passage of their evidence rank, copy, feedback, stop.
import { ApiError, api, clear, confirmDialog, copyText, el, errorFrom, headers, showError, toast } from "./api.js";
import { documentName, evidencePanel, markCited, markedPassage, previewText, rankOf, whereIn } from "./evidence.js";

const UNSUPPORTED_MARK = "\ue000"; // the server's mark after a sentence no passage supports
const MAX_QUESTION = 4000; // the server's limit (appliance/chat/pipeline.py MAX_QUESTION_CHARS)
const COUNT_FROM = 3000; // the counter shows from here on

const list = document.getElementById("conversation-list");
const listEmpty = document.getElementById("conversations-empty");
const messages = document.getElementById("messages");
const emptyState = document.getElementById("chat-empty");
const titleEl = document.getElementById("thread-title");
const form = document.getElementById("composer");
const question = document.getElementById("question");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");
const status = document.getElementById("chat-status");
const errorBox = document.getElementById("chat-error");
const passage = document.getElementById("passage");
const sidebar = document.getElementById("conversations");
const toggle = document.getElementById("toggle-conversations");
const counter = document.getElementById("question-count");

let current = null; // conversation id
let controller = null; // AbortController of the answer being streamed

// -- conversations ----------------------------------------------------------------------

async function loadConversations() {
  let items = [];
  try {
    items = await api("GET", "/api/conversations");
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  closeMenu();
  clear(list);
  // While the first answer streams its conversation is being made: not "no conversations".
  listEmpty.hidden = items.length > 0 || controller !== null;
  let group = null;
  let label = null;
  for (const item of items) {
    const day = dayLabel(item.updated_at);
    if (day !== label) {
      label = day;
      group = el("ul", { class: "conv-group-items", "aria-label": day });
      list.append(el("li", { class: "conv-group" }, el("h3", { class: "conv-day" }, day), group));
    }
    group.append(conversationItem(item));
  }
}

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate());
}

// Today, Yesterday, a weekday within the last week, else the date.
function dayLabel(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "Earlier";
  const days = Math.round((startOfDay(new Date()) - startOfDay(date)) / 86400000);
  if (days <= 0) return "Today";
  if (days === 1) return "Yesterday";
  if (days < 7) return date.toLocaleDateString(undefined, { weekday: "long" });
  return date.toLocaleDateString(undefined, { day: "numeric", month: "long", year: "numeric" });
}

function timeLabel(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const days = Math.round((startOfDay(new Date()) - startOfDay(date)) / 86400000);
  return days < 7
    ? date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

function conversationItem(item) {
  const open = el("button", {
    type: "button",
    class: "conversation-open",
    "aria-current": item.id === current ? "true" : null,
    onclick: () => openConversation(item.id),
  }, item.title);
  const stamp = el("time", { class: "conv-time", datetime: item.updated_at, title: new Date(item.updated_at).toLocaleString() }, timeLabel(item.updated_at));
  const menuButton = el("button", {
    type: "button", class: "conv-menu-button", "aria-haspopup": "menu", "aria-expanded": "false",
    "aria-label": `Actions for “${item.title}”`, title: "Rename or delete",
  }, "…");
  const li = el("li", { class: "conv-item", dataset: { id: item.id } }, open, stamp, menuButton);
  menuButton.addEventListener("click", () => (openMenu && openMenu.button === menuButton ? closeMenu(true) : showMenu(li, item, menuButton)));
  return li;
}

// -- the "…" menu of a conversation: one per row, opened on demand --------------------------

let openMenu = null; // { menu, button }

function closeMenu(focusButton = false) {
  if (!openMenu) return;
  const { menu, button } = openMenu;
  openMenu = null;
  menu.remove();
  button.setAttribute("aria-expanded", "false");
  if (focusButton) button.focus();
}

function showMenu(li, item, button) {
  closeMenu();
  const choose = (action) => () => {
    closeMenu();
    action();
  };
  const rename = el("button", { type: "button", role: "menuitem", tabindex: "-1", "aria-label": `Rename “${item.title}”`, onclick: choose(() => startRename(li, item)) }, "Rename");
  const remove = el("button", { type: "button", role: "menuitem", tabindex: "-1", class: "danger-text", "aria-label": `Delete “${item.title}”`, onclick: choose(() => removeConversation(item)) }, "Delete");
  const menu = el("div", { class: "conv-menu", role: "menu", "aria-label": `Actions for “${item.title}”` }, rename, remove);
  const items = [rename, remove];
  menu.addEventListener("keydown", (event) => {
    const at = items.indexOf(document.activeElement);
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      items[(at + step + items.length) % items.length].focus();
    } else if (event.key === "Home" || event.key === "End") {
      event.preventDefault();
      items[event.key === "Home" ? 0 : items.length - 1].focus();
    } else if (event.key === "Escape" || event.key === "Tab") {
      if (event.key === "Escape") event.preventDefault();
      event.stopPropagation();
      closeMenu(event.key === "Escape");
    }
  });
  li.append(menu);
  openMenu = { menu, button };
  button.setAttribute("aria-expanded", "true");
  rename.focus();
}

document.addEventListener("click", (event) => {
  if (openMenu && !openMenu.menu.contains(event.target) && event.target !== openMenu.button) closeMenu();
});

function startRename(li, item) {
  const input = el("input", { "aria-label": "New title", maxlength: 200, required: true });
  input.value = item.title;
  const save = el("button", { type: "submit" }, "Save");
  const cancel = el("button", { type: "button", onclick: () => loadConversations() }, "Cancel");
  const renameForm = el("form", { class: "rename" }, input, save, cancel);
  renameForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("PATCH", `/api/conversations/${item.id}`, { title: input.value.trim() });
      if (item.id === current) titleEl.textContent = input.value.trim();
      await loadConversations();
    } catch (error) {
      toast(error.message);
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") loadConversations();
  });
  clear(li).append(renameForm);
  input.focus();
  input.select();
}

async function removeConversation(item) {
  if (!(await confirmDialog(`Delete the conversation “${item.title}”? This cannot be undone.`))) return;
  try {
    await api("DELETE", `/api/conversations/${item.id}`);
    if (item.id === current) newConversation();
    await loadConversations();
    toast("Conversation deleted.");
  } catch (error) {
    toast(error.message);
  }
}

function newConversation() {
  if (controller) controller.abort();
  current = null;
  history.replaceState(null, "", "/");
  titleEl.textContent = "New conversation";
  clear(messages).append(emptyState);
  emptyState.hidden = false;
  errorBox.hidden = true;
  status.textContent = "";
  for (const b of list.querySelectorAll(".conversation-open")) b.removeAttribute("aria-current");
  question.focus();
}

async function openConversation(id) {
  if (controller) controller.abort();
  errorBox.hidden = true;
  let conv;
  try {
    conv = await api("GET", `/api/conversations/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status === 404) {
      newConversation();
      toast("That conversation no longer exists.");
      return;
    }
    showError(errorBox, error);
    return;
  }
  current = conv.id;
  history.replaceState(null, "", `/?c=${encodeURIComponent(conv.id)}`);
  titleEl.textContent = conv.title;
  clear(messages);
  for (const m of conv.messages) {
    if (m.role === "user") messages.append(questionNode(m.text));
    else {
      const node = answerNode();
      showEvidence(node, m.sources || []); // as stored: each passage's highlighted sentences
      finishAnswer(node, {
        html: m.html,
        text: (m.text || "").replaceAll(UNSUPPORTED_MARK, " (not found in your documents)"),
        id: m.id,
        feedback: m.feedback,
      });
      messages.append(node.root);
    }
  }
  for (const b of list.querySelectorAll(".conversation-open")) {
    if (b.closest("li[data-id]").dataset.id === current) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
  closeSidebar();
  messages.lastElementChild?.scrollIntoView({ block: "end" });
  question.focus();
}

// -- messages ---------------------------------------------------------------------------

function questionNode(text) {
  return el("div", { class: "msg msg-user" }, el("p", { class: "who" }, "You"), el("p", { class: "body" }, text));
}

function answerNode() {
  const body = el("div", { class: "body streaming" });
  const note = el("p", { class: "answer-note", hidden: true });
  const evidence = el("div", { class: "evidence-slot" });
  const actions = el("div", { class: "msg-actions" });
  const root = el("article", { class: "msg msg-answer" },
    el("p", { class: "who" }, "Assistant"), body, note, evidence, actions);
  const node = { root, body, note, evidence, actions, text: "", passages: [], panel: null };
  // Citation buttons in the answer and the panel's "Open passage" buttons both name an
  // evidence rank; one handler, attached once, so the panel works while the answer streams.
  root.addEventListener("click", (event) => {
    const target = event.target.closest("button.cite, button.evidence-open");
    if (!target) return;
    const source = node.passages.find((p) => rankOf(p) === target.dataset.marker);
    if (source && !source.status) openPassage(source, target);
    else toast("This passage is no longer available to you.");
  });
  return node;
}

function showEvidence(node, passages) {
  node.passages = passages;
  node.panel = evidencePanel(passages);
  clear(node.evidence);
  if (node.panel) node.evidence.append(node.panel);
}

function unsupportedNote(n) {
  return n === 1 ? "1 sentence was not found in your documents." : `${n} sentences were not found in your documents.`;
}

function finishAnswer(node, { html, text, id, feedback, unsupported }) {
  node.text = text;
  node.body.classList.remove("streaming");
  // html is rendered and sanitised by the server (appliance/chat/render.py): markdown-it
  // with raw HTML escaped, links inert, images dropped, then nh3 with a short allow-list.
  if (typeof html === "string") node.body.innerHTML = html;
  else node.body.textContent = text;
  const flags = node.body.querySelectorAll(".unsupported");
  for (const flag of flags) {
    // A name for assistive technology: the label alone does not say what it refers to.
    flag.setAttribute("role", "note");
    flag.setAttribute("aria-label", "Warning: the sentence before this was not found in your documents");
  }
  const count = unsupported ?? flags.length;
  node.note.hidden = !count;
  node.note.textContent = count ? unsupportedNote(count) : "";
  markCited(node.panel, new Set([...node.body.querySelectorAll("button.cite")].map((b) => b.dataset.marker)));
  clear(node.actions);
  const copy = el("button", { type: "button", onclick: async () => {
    toast((await copyText(node.text)) ? "Answer copied." : "Copy failed: select the text by hand.");
  } }, "Copy");
  node.actions.append(copy);
  if (id) node.actions.append(...feedbackButtons(id, feedback));
}

function feedbackButtons(id, initial) {
  const helpful = el("button", { type: "button", class: "feedback", "aria-pressed": String(initial === "helpful") }, "Helpful");
  const notHelpful = el("button", { type: "button", class: "feedback", "aria-pressed": String(initial === "not_helpful") }, "Not helpful");
  const set = async (rating, button) => {
    const pressed = button.getAttribute("aria-pressed") === "true";
    const value = pressed ? null : rating;
    try {
      await api("PUT", `/api/chat/messages/${id}/feedback`, { rating: value });
      helpful.setAttribute("aria-pressed", String(value === "helpful"));
      notHelpful.setAttribute("aria-pressed", String(value === "not_helpful"));
      toast(value ? "Thank you for the feedback." : "Feedback removed.");
    } catch (error) {
      toast(error.message);
    }
  };
  helpful.addEventListener("click", () => set("helpful", helpful));
  notHelpful.addEventListener("click", () => set("not_helpful", notHelpful));
  return [helpful, notHelpful];
}

let returnFocus = null;
let opening = 0; // the passage last asked for: a slower earlier fetch must not replace it

function passageUrl(source) {
  // The evidence names its own JSON endpoint; anything else is built from the ids.
  if (typeof source.url === "string" && source.url.startsWith("/api/documents/")) return source.url;
  return `/api/documents/${encodeURIComponent(source.doc_id)}/chunks/${encodeURIComponent(source.chunk_no)}`;
}

async function openPassage(source, opener) {
  const mine = ++opening;
  returnFocus = opener;
  document.getElementById("passage-title").textContent = `[${rankOf(source)}] ${documentName(source)}`;
  document.getElementById("passage-meta").textContent = whereIn(source);
  const text = document.getElementById("passage-text");
  const hint = document.getElementById("passage-hint");
  hint.hidden = markedPassage(text, previewText(source), source) === 0;
  passage.showModal();
  try {
    const full = await api("GET", passageUrl(source));
    if (mine !== opening) return;
    hint.hidden = markedPassage(text, full.text, source) === 0;
  } catch (error) {
    if (mine !== opening) return;
    hint.hidden = true;
    text.textContent = error.status === 404
      ? "This passage is no longer available to you (the document was removed or its access changed)."
      : error.message;
  }
}

document.getElementById("passage-close").addEventListener("click", () => passage.close());
passage.addEventListener("close", () => returnFocus?.focus());
passage.addEventListener("click", (event) => {
  if (event.target === passage) passage.close(); // a click on the backdrop
});

// -- asking -----------------------------------------------------------------------------

async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield { kind, data: data ? JSON.parse(data) : {} };
    }
  }
}

function busy(on) {
  sendButton.hidden = on;
  stopButton.hidden = !on;
  messages.setAttribute("aria-busy", String(on));
  if (on) stopButton.focus();
}

async function ask(text) {
  errorBox.hidden = true;
  listEmpty.hidden = true;
  emptyState.hidden = true;
  if (emptyState.parentElement) emptyState.remove();
  const asked = questionNode(text);
  messages.append(asked);
  const node = answerNode();
  node.body.textContent = "";
  messages.append(node.root);
  node.root.scrollIntoView({ block: "end" });
  status.textContent = "Searching your documents…";
  controller = new AbortController();
  const mine = controller;
  busy(true);
  let sources = [];
  let sawStatus = false;
  let finished = false;
  const wasNew = current === null;
  try {
    const response = await fetch("/api/chat", {
      method: "POST",
      credentials: "same-origin",
      headers: headers("POST", { "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify({ question: text, conversation_id: current }),
      signal: mine.signal,
    });
    if (!response.ok) throw await errorFrom(response);
    for await (const { kind, data } of readEvents(response)) {
      if (kind === "conversation") {
        current = data.id;
        history.replaceState(null, "", `/?c=${encodeURIComponent(current)}`);
        if (wasNew) {
          titleEl.textContent = text.slice(0, 80);
          loadConversations(); // the new conversation shows in the list while it streams
        }
      } else if (kind === "evidence") {
        showEvidence(node, data.passages || []);
      } else if (kind === "status") {
        sawStatus = true;
        status.textContent = data.message;
      } else if (kind === "queue" && !sawStatus) {
        // Servers before the status event only said the place in the queue.
        status.textContent = data.position === 1
          ? "Waiting for the model: you are next in line."
          : `Waiting for the model: you are number ${data.position} in line.`;
      } else if (kind === "token") {
        status.textContent = "Writing the answer…";
        node.text += data.text;
        node.body.textContent = node.text; // plain text while streaming
      } else if (kind === "sources") {
        sources = data.sources;
      } else if (kind === "done") {
        finished = true;
        if (!node.passages.length && sources.length) showEvidence(node, sources);
        finishAnswer(node, {
          html: data.html,
          text: typeof data.text === "string" ? data.text : node.text,
          id: data.message_id,
          feedback: null,
          // When it abstains the answer says so instead; its unchecked sentences are not shown.
          unsupported: data.abstained ? 0 : data.unsupported,
        });
        status.textContent = data.stopped ? "Stopped." : "";
      } else if (kind === "error") {
        throw new ApiError(500, data.message || "The answer failed. Try again in a moment.");
      }
    }
  } catch (error) {
    if (error.name === "AbortError") {
      status.textContent = "Stopped. The part written so far is kept in the conversation.";
      finishAnswer(node, { text: node.text + " …", id: null });
    } else {
      node.root.remove();
      if (!node.text) {
        // Nothing was answered: take the question back so it can be sent again.
        asked.remove();
        if (!question.value) question.value = text;
      }
      showError(errorBox, error);
      status.textContent = "";
    }
  } finally {
    if (controller === mine) controller = null;
    busy(false);
    fitQuestion();
    countQuestion();
    if (!finished && status.textContent.startsWith("Writing")) status.textContent = "";
    loadConversations();
  }
}

// -- the question box: grows with its text, counts near the limit, refuses past it ---------

function fitQuestion() {
  question.style.height = "auto";
  const most = Math.round(window.innerHeight * 0.4);
  question.style.height = `${Math.min(question.scrollHeight + 2, most)}px`;
  question.style.overflowY = question.scrollHeight + 2 > most ? "auto" : "hidden";
}

function countQuestion() {
  const n = question.value.length;
  const over = n > MAX_QUESTION;
  counter.hidden = n < COUNT_FROM;
  counter.classList.toggle("over", over);
  counter.textContent = over
    ? `${n.toLocaleString()} / ${MAX_QUESTION.toLocaleString()} characters: ${(n - MAX_QUESTION).toLocaleString()} too many. Shorten it before sending; keep the question itself.`
    : `${n.toLocaleString()} / ${MAX_QUESTION.toLocaleString()} characters`;
  question.setAttribute("aria-invalid", String(over));
}

question.addEventListener("input", () => {
  fitQuestion();
  countQuestion();
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = question.value.trim();
  if (!text || controller) return;
  if (text.length > MAX_QUESTION) {
    showError(errorBox, `Your question has ${text.length.toLocaleString()} characters; at most ${MAX_QUESTION.toLocaleString()} can be sent. Nothing was sent: shorten it (the question itself is often at the end of a paste) and send it again.`);
    countQuestion();
    question.focus();
    return;
  }
  question.value = "";
  fitQuestion();
  countQuestion();
  ask(text);
});

question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

stopButton.addEventListener("click", () => {
  if (controller) controller.abort();
  question.focus();
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && openMenu) {
    closeMenu(true);
    return;
  }
  if (event.key === "Escape" && controller && !passage.open) controller.abort();
  if (event.altKey && (event.key === "n" || event.key === "N")) {
    event.preventDefault();
    newConversation();
  }
});

document.getElementById("new-conversation").addEventListener("click", newConversation);

function closeSidebar() {
  sidebar.classList.remove("open");
  toggle.setAttribute("aria-expanded", "false");
}

toggle.addEventListener("click", () => {
  const open = sidebar.classList.toggle("open");
  toggle.setAttribute("aria-expanded", String(open));
});

await loadConversations();
const wanted = new URLSearchParams(location.search).get("c");
if (wanted) await openConversation(wanted);
else question.focus();
