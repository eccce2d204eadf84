// Documents: the readable library (search, filters, who each is shared with), uploads in
// the order picked with progress and a final state for every row (indexed, already in the
// library, failed with Retry and Remove), and the access dialog (grants, classification,
// delete) for documents you manage. Sharing fields suggest existing users and groups.
import { api, bytes, clear, confirmDialog, el, errorFrom, headers, showError, toast, when } from "./api.js";

const STATE_LABELS = {
  queued: "Queued",
  parsing: "Reading",
  embedding: "Indexing",
  indexed: "Indexed",
  failed: "Failed",
  deleting: "Deleting",
};
const BUSY = new Set(["queued", "parsing", "embedding"]);
const POLL_MS = 1500;

const tbody = document.getElementById("documents");
const count = document.getElementById("library-count");
const empty = document.getElementById("library-empty");
const libraryError = document.getElementById("library-error");
const filters = document.getElementById("filters");
const uploads = document.getElementById("uploads");
const dropzone = document.getElementById("dropzone");
const fileInput = document.getElementById("files");
const dialog = document.getElementById("access");
const me = document.body.dataset.username || "";
let pollTimer = null;
const rows = []; // upload rows, in the order the files were picked
let sending = false; // one upload at a time, so they are stored (and indexed) in order

// -- who it is shared with ------------------------------------------------------------------

function principalLabel(name) {
  if (name === "everyone") return "Everyone";
  const [kind, ...rest] = name.split(":");
  const bare = rest.join(":");
  if (kind === "user") return bare === me ? "you" : bare;
  if (kind === "group") return `${bare} (group)`;
  return name;
}

function sharedCell(doc) {
  const others = (doc.shared_with || []).filter((n) => n !== `user:${me}`);
  const cell = el("td", { class: "shared" });
  if (!others.length) {
    cell.append(el("span", { class: "hint" }, doc.yours ? "Only you" : "you"));
    return cell;
  }
  const list = el("ul", { class: "shared-list" });
  for (const name of others) list.append(el("li", {}, principalLabel(name)));
  cell.append(list);
  return cell;
}

// The sharing fields' suggestions: names only (GET /api/principals). A name that only one
// user or group has is offered bare; the rare name both have is offered as user:/group:.
async function loadPrincipals() {
  let names = [];
  try {
    names = await api("GET", "/api/principals?limit=200");
  } catch {
    return; // suggestions are a help, typing still works
  }
  const seen = new Map();
  for (const n of names) seen.set(n.name, (seen.get(n.name) || 0) + 1);
  const options = clear(document.getElementById("principal-options"));
  options.append(el("option", { value: "everyone", label: "everyone (all signed-in people)" }));
  for (const n of names) {
    const value = seen.get(n.name) > 1 ? `${n.kind}:${n.name}` : n.name;
    options.append(el("option", { value, label: `${n.name} (${n.kind})` }));
  }
}

// -- library ----------------------------------------------------------------------------

function stateCell(doc) {
  const label = STATE_LABELS[doc.state] || doc.state;
  const cell = el("td", { class: `state state-${doc.state}` });
  cell.append(el("span", { class: "badge" }, label));
  if (doc.state === "embedding" && doc.chunks_total) {
    cell.append(" ", el("progress", { max: doc.chunks_total, value: doc.chunks_done, "aria-label": `${label}: ${doc.chunks_done} of ${doc.chunks_total} passages` }));
  }
  if (doc.state === "failed" && doc.error_reason) cell.append(el("p", { class: "reason" }, doc.error_reason));
  return cell;
}

function docName(doc) {
  return doc.title || doc.filename || "this document";
}

function row(doc) {
  const name = el("td", {},
    el("span", { class: "doc-title" }, doc.title || doc.filename),
    doc.title ? el("span", { class: "doc-file" }, doc.filename) : null);
  const actions = el("td", { class: "actions" });
  if (doc.state === "indexed") {
    actions.append(el("a", { href: `/api/documents/${encodeURIComponent(doc.id)}/download`, class: "button", download: "" }, "Download"));
  }
  if (doc.state === "failed" && doc.can_manage) {
    actions.append(
      el("button", { type: "button", "aria-label": `Retry ${docName(doc)}`, onclick: () => retryDocument(doc) }, "Retry"),
      el("button", { type: "button", class: "danger", "aria-label": `Remove ${docName(doc)}`, onclick: () => removeDocument(doc) }, "Remove"));
  }
  if (doc.can_manage) {
    actions.append(el("button", { type: "button", onclick: () => openAccess(doc) }, "Access"));
  }
  return el("tr", { dataset: { id: doc.id } }, name,
    el("td", {}, doc.classification), sharedCell(doc), stateCell(doc), el("td", {}, when(doc.created_at)), actions);
}

let libraryBusy = false;

async function loadLibrary() {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(filters)) if (value) params.set(key, value);
  let result;
  try {
    result = await api("GET", `/api/documents?${params}`);
  } catch (error) {
    showError(libraryError, error);
    return;
  }
  libraryError.hidden = true;
  clear(tbody);
  for (const doc of result.documents) tbody.append(row(doc));
  count.textContent = result.total === 1 ? "1 document" : `${result.total} documents`;
  empty.hidden = result.total > 0;
  document.getElementById("library").hidden = result.total === 0;
  libraryBusy = result.documents.some((d) => BUSY.has(d.state));
  schedulePoll();
}

let searchTimer = null;
filters.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(loadLibrary, 250);
});
filters.addEventListener("submit", (event) => {
  event.preventDefault();
  loadLibrary();
});

async function retryDocument(doc) {
  const item = rows.find((r) => r.docId === doc.id);
  if (item) return retryRow(item);
  try {
    await api("POST", `/api/documents/${encodeURIComponent(doc.id)}/retry`);
    toast(`“${docName(doc)}” is queued again.`);
  } catch (error) {
    showError(libraryError, error);
  }
  loadLibrary();
}

async function removeDocument(doc) {
  if (!(await confirmDialog(`Remove the failed upload “${docName(doc)}”?`, "Remove"))) return;
  try {
    await api("DELETE", `/api/documents/${encodeURIComponent(doc.id)}`);
    const item = rows.find((r) => r.docId === doc.id);
    if (item) dropRow(item);
    toast(`Removed “${docName(doc)}”.`);
  } catch (error) {
    showError(libraryError, error);
  }
  loadLibrary();
}

// -- uploads ----------------------------------------------------------------------------
// Every row ends in a final state: indexed, already in the library, failed (with Retry and
// Remove) or not uploaded (with Retry and Remove). Each row follows its own document
// (GET /api/documents/{id}), so a filter or a page of the library cannot hide it, and
// polling stops when no row and no listed document is still in progress.

function setStatus(item, text, kind) {
  item.status.textContent = text;
  item.li.classList.remove("failed", "ok", "duplicate", "held");
  if (kind) item.li.classList.add(kind);
}

function setActions(item, ...buttons) {
  clear(item.actions).append(...buttons);
}

function finish(item) {
  item.done = true;
  schedulePoll();
}

function showDoc(item, doc) {
  item.doc = doc;
  const label = STATE_LABELS[doc.state] || doc.state;
  if (doc.state === "failed") {
    setStatus(item, `Failed: ${doc.error_reason || "the file could not be read."}`, "failed");
    setActions(item,
      el("button", { type: "button", "aria-label": `Retry ${item.file.name}`, onclick: () => retryRow(item) }, "Retry"),
      el("button", { type: "button", class: "danger", "aria-label": `Remove ${item.file.name}`, onclick: () => removeRow(item) }, "Remove"));
    finish(item);
  } else if (doc.state === "indexed") {
    setStatus(item, "Indexed: ready for questions.", "ok");
    setActions(item);
    finish(item);
  } else if (doc.state === "embedding" && doc.chunks_total) {
    setStatus(item, `${label}: ${doc.chunks_done} of ${doc.chunks_total} passages`);
  } else {
    setStatus(item, `${label}…`);
  }
  item.bar.max = doc.chunks_total || 1;
  item.bar.value = doc.state === "indexed" ? item.bar.max : doc.chunks_done || 0;
}

function wanted(item) {
  // What this upload asked for, to offer it again on the document already there.
  return { grants: item.grants, classification: item.classification };
}

function showDuplicate(item, doc) {
  item.doc = doc;
  item.bar.max = 1;
  item.bar.value = 1;
  const asked = wanted(item);
  const changes = asked.grants.length > 0 || (asked.classification && asked.classification !== doc.classification);
  const parts = [];
  if (asked.grants.length) parts.push(`share it with ${asked.grants.join(", ")}`);
  if (asked.classification && asked.classification !== doc.classification) parts.push(`make it ${asked.classification}`);
  const ask = parts.length ? ` You asked to ${parts.join(" and ")}.` : "";
  setStatus(item, `Already in your library as “${docName(doc)}”: nothing was uploaded, and its sharing and classification are unchanged.${ask}`, "duplicate");
  const buttons = [];
  if (changes && doc.can_manage) {
    buttons.push(el("button", { type: "button", class: "primary", onclick: () => applyWanted(item, doc) }, "Apply the new sharing and classification to it"));
  }
  buttons.push(el("button", { type: "button", onclick: () => send(item, { asNew: true }) }, "Upload as a new version"));
  setActions(item, ...buttons);
  finish(item);
}

// The same calls as the access dialog: each grant and the classification go through its
// checks, so a change that needs a second administrator is held, and the row says so.
async function applyWanted(item, doc) {
  const asked = wanted(item);
  const said = [];
  for (const principal of asked.grants) {
    try {
      const result = await api("POST", `/api/documents/${encodeURIComponent(doc.id)}/grants`, { principal, level: "read" });
      said.push(result.status === "approval_required"
        ? `${principal}: held for a second administrator's approval`
        : result.status === "done" ? `${principal}: may read it now` : `${principal}: had access already`);
    } catch (error) {
      said.push(`${principal}: not shared (${error.message})`);
    }
  }
  if (asked.classification && asked.classification !== doc.classification) {
    try {
      const result = await api("PATCH", `/api/documents/${encodeURIComponent(doc.id)}`, { classification: asked.classification });
      said.push(result.status === "approval_required"
        ? `classification ${asked.classification}: held for a second administrator's approval`
        : `classification is now ${asked.classification}`);
    } catch (error) {
      said.push(`classification not changed (${error.message})`);
    }
  }
  const kind = said.some((s) => s.includes("not ")) ? "failed" : said.some((s) => s.includes("held")) ? "held" : "ok";
  setStatus(item, `“${docName(doc)}”: ${said.join("; ")}.`, kind);
  setActions(item);
  loadLibrary();
}

function notUploaded(item, message) {
  setStatus(item, `Not uploaded: ${message}`, "failed");
  setActions(item,
    el("button", { type: "button", "aria-label": `Retry ${item.file.name}`, onclick: () => { item.done = false; enqueue(item); } }, "Retry"),
    el("button", { type: "button", class: "danger", "aria-label": `Remove ${item.file.name}`, onclick: () => dropRow(item) }, "Remove"));
  finish(item);
}

async function retryRow(item) {
  setActions(item);
  setStatus(item, "Retrying…");
  item.done = false;
  try {
    const doc = await api("POST", `/api/documents/${encodeURIComponent(item.docId)}/retry`);
    showDoc(item, doc);
    schedulePoll();
  } catch (error) {
    if (error.status !== 422) {
      showDoc(item, item.doc);
      setStatus(item, `Failed: ${error.message}`, "failed");
      return;
    }
    // Nothing was kept to retry (an empty file, one over the limit): this page still has
    // the file that was picked, so send it again and drop the failed record.
    try {
      await api("DELETE", `/api/documents/${encodeURIComponent(item.docId)}`);
    } catch {
      // already gone
    }
    item.docId = null;
    enqueue(item);
  }
  loadLibrary();
}

async function removeRow(item) {
  try {
    await api("DELETE", `/api/documents/${encodeURIComponent(item.docId)}`);
  } catch (error) {
    if (error.status !== 404) {
      setStatus(item, `Not removed: ${error.message}`, "failed");
      return;
    }
  }
  dropRow(item);
  toast(`Removed “${item.file.name}”.`);
  loadLibrary();
}

function dropRow(item) {
  item.li.remove();
  const at = rows.indexOf(item);
  if (at >= 0) rows.splice(at, 1);
  schedulePoll();
}

function send(item, { asNew = false } = {}) {
  return new Promise((resolve) => {
    item.done = false;
    setActions(item);
    setStatus(item, "Uploading…");
    const form = new FormData();
    form.append("file", item.file, item.file.name);
    if (item.classification) form.append("classification", item.classification);
    for (const g of item.grants) form.append("grants", g);
    if (asNew) form.append("as_new", "true");
    // XMLHttpRequest, not fetch: only it reports upload progress.
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/documents");
    for (const [key, value] of Object.entries(headers("POST"))) xhr.setRequestHeader(key, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) {
        item.bar.max = event.total;
        item.bar.value = event.loaded;
        setStatus(item, `Uploading: ${bytes(event.loaded)} of ${bytes(event.total)}`);
      }
    });
    xhr.addEventListener("load", async () => {
      if (xhr.status === 202 || xhr.status === 200) {
        const doc = JSON.parse(xhr.responseText);
        item.docId = doc.id;
        item.li.dataset.docId = doc.id;
        if (doc.duplicate) showDuplicate(item, doc);
        else showDoc(item, doc);
        loadLibrary();
      } else {
        const error = await errorFrom(new Response(xhr.responseText, { status: xhr.status, headers: { "Content-Type": "application/json" } }));
        notUploaded(item, error.message);
      }
      resolve();
    });
    xhr.addEventListener("error", () => {
      notUploaded(item, "the connection failed. Check the network and try again.");
      resolve();
    });
    xhr.send(form);
  });
}

async function pump() {
  if (sending) return;
  sending = true;
  try {
    for (let next = rows.find((r) => r.pending); next; next = rows.find((r) => r.pending)) {
      next.pending = false;
      await send(next);
    }
  } finally {
    sending = false;
  }
}

function enqueue(item) {
  item.pending = true;
  item.done = false;
  setActions(item);
  setStatus(item, "Waiting to upload…");
  pump();
}

function sharing() {
  const chips = [...document.querySelectorAll("#upload-share li")].map((li) => li.dataset.principal);
  const typed = document.getElementById("upload-grants").value.split(",").map((g) => g.trim()).filter(Boolean);
  return [...new Set([...chips, ...typed])];
}

function uploadAll(files) {
  const grants = sharing();
  const classification = document.getElementById("upload-classification").value;
  for (const file of files) {
    const bar = el("progress", { max: file.size || 1, value: 0, "aria-label": `Upload of ${file.name}` });
    const status = el("span", { class: "upload-status" }, "Waiting to upload…");
    const actions = el("span", { class: "upload-actions" });
    const li = el("li", { class: "upload-item" }, el("span", { class: "upload-name" }, file.name), bar, status, actions);
    uploads.append(li);
    const item = { file, li, bar, status, actions, grants, classification, docId: null, doc: null, done: false, pending: true };
    rows.push(item);
  }
  pump();
  schedulePoll();
}

// -- polling ----------------------------------------------------------------------------

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = null;
  const watching = rows.some((r) => !r.done);
  if (watching || libraryBusy) pollTimer = setTimeout(poll, POLL_MS);
}

async function poll() {
  pollTimer = null;
  let changed = false;
  for (const item of rows) {
    if (item.done || !item.docId) continue;
    try {
      const doc = await api("GET", `/api/documents/${encodeURIComponent(item.docId)}`);
      changed ||= !item.doc || doc.state !== item.doc.state || doc.chunks_done !== item.doc.chunks_done;
      showDoc(item, doc);
    } catch (error) {
      if (error.status === 404) {
        setStatus(item, "Removed: this document is no longer in your library.", "failed");
        setActions(item);
        finish(item);
      }
    }
  }
  if (changed || libraryBusy) await loadLibrary();
  else schedulePoll();
}

// -- picking files and sharing at upload ----------------------------------------------

function addShare() {
  const input = document.getElementById("upload-grants");
  const list = document.getElementById("upload-share");
  for (const principal of input.value.split(",").map((g) => g.trim()).filter(Boolean)) {
    if ([...list.children].some((li) => li.dataset.principal === principal)) continue;
    const li = el("li", { dataset: { principal } }, el("span", {}, principal),
      el("button", { type: "button", class: "chip-remove", "aria-label": `Do not share with ${principal}`, onclick: () => li.remove() }, "×"));
    list.append(li);
  }
  input.value = "";
  input.focus();
}

document.getElementById("upload-grants-add").addEventListener("click", addShare);
document.getElementById("upload-grants").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    addShare();
  }
});
document.getElementById("upload-form").addEventListener("submit", (event) => event.preventDefault());

fileInput.addEventListener("change", () => {
  uploadAll([...fileInput.files]);
  fileInput.value = "";
});
for (const kind of ["dragenter", "dragover"]) {
  dropzone.addEventListener(kind, (event) => {
    event.preventDefault();
    dropzone.classList.add("over");
  });
}
for (const kind of ["dragleave", "drop"]) {
  dropzone.addEventListener(kind, () => dropzone.classList.remove("over"));
}
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  uploadAll([...event.dataTransfer.files]);
});

// -- access dialog ----------------------------------------------------------------------

let current = null;

function notice(text) {
  const box = document.getElementById("access-notice");
  box.textContent = text;
  box.hidden = !text;
}

function renderGrants(grants) {
  const list = clear(document.getElementById("grants"));
  if (!grants.length) list.append(el("li", { class: "hint" }, "Only you."));
  for (const g of grants) {
    list.append(el("li", {},
      el("span", {}, `${g.name} — ${g.level === "manage" ? "can manage" : "can read"}`),
      el("button", { type: "button", "aria-label": `Remove ${g.name}`, onclick: async () => {
        try {
          const result = await api("DELETE", `/api/documents/${current.id}/grants?principal=${encodeURIComponent(g.name)}`);
          renderGrants(result.grants);
          notice(`${g.name} no longer has access.`);
        } catch (error) {
          showError(document.getElementById("access-error"), error);
        }
      } }, "Remove")));
  }
}

function renderRetention(state) {
  const text = [];
  text.push(state.retain_until
    ? `Deleted by the retention job after ${when(state.retain_until)}.`
    : "Kept for its classification's retention period.");
  if (state.legal_hold) text.push("Under legal hold: nothing deletes it until an administrator lifts the hold.");
  document.getElementById("retention-state").textContent = text.join(" ");
  document.getElementById("retain-until").value = state.retain_until ? state.retain_until.slice(0, 10) : "";
  document.getElementById("delete-doc").disabled = state.legal_hold;
}

async function setRetention(value) {
  document.getElementById("access-error").hidden = true;
  try {
    renderRetention(await api("PUT", `/api/documents/${current.id}/retention`, { retain_until: value }));
    notice(value ? "Retention date saved." : "The classification's period applies again.");
  } catch (error) {
    showError(document.getElementById("access-error"), error);
  }
}

document.getElementById("retention-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const day = document.getElementById("retain-until").value;
  if (!day) {
    showError(document.getElementById("access-error"), "Pick a date, or use the classification's period.");
    return;
  }
  setRetention(`${day}T00:00:00Z`);
});
document.getElementById("retain-default").addEventListener("click", () => setRetention(null));

async function openAccess(doc) {
  current = doc;
  document.getElementById("access-title").textContent = `Access: ${doc.title || doc.filename}`;
  document.getElementById("access-error").hidden = true;
  notice("");
  document.getElementById("classify").value = doc.classification;
  clear(document.getElementById("grants"));
  dialog.showModal();
  document.getElementById("retention-state").textContent = "";
  document.getElementById("delete-doc").disabled = false;
  try {
    const [grants, retention] = await Promise.all([
      api("GET", `/api/documents/${doc.id}/grants`),
      api("GET", `/api/documents/${doc.id}/retention`),
    ]);
    renderGrants(grants);
    renderRetention(retention);
  } catch (error) {
    showError(document.getElementById("access-error"), error);
  }
}

document.getElementById("access-close").addEventListener("click", () => dialog.close());
dialog.addEventListener("close", () => loadLibrary());

document.getElementById("grant-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const principal = document.getElementById("grant-principal");
  const level = document.getElementById("grant-level").value;
  document.getElementById("access-error").hidden = true;
  try {
    const result = await api("POST", `/api/documents/${current.id}/grants`, { principal: principal.value.trim(), level });
    if (result.status === "approval_required") {
      notice("This needs a second administrator's approval; it applies once approved (see Admin › Approvals).");
    } else {
      renderGrants(result.grants);
      notice(result.status === "done" ? `${principal.value.trim()} now has access.` : "Nothing changed.");
      principal.value = "";
    }
  } catch (error) {
    showError(document.getElementById("access-error"), error);
  }
});

document.getElementById("classify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = document.getElementById("classify").value;
  try {
    const result = await api("PATCH", `/api/documents/${current.id}`, { classification: value });
    if (result.status === "approval_required") notice("This change needs a second administrator's approval.");
    else {
      current.classification = value;
      notice(`Classification is now ${value}.`);
    }
  } catch (error) {
    showError(document.getElementById("access-error"), error);
  }
});

document.getElementById("delete-doc").addEventListener("click", async () => {
  const name = current.title || current.filename;
  if (!(await confirmDialog(`Delete “${name}”? It leaves every search at once and cannot be restored.`))) return;
  try {
    await api("DELETE", `/api/documents/${current.id}`);
    dialog.close();
    toast(`Deleted “${name}”.`);
  } catch (error) {
    showError(document.getElementById("access-error"), error);
  }
});

loadLibrary();
loadPrincipals();
