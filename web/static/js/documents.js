// Documents: the readable library (search, filters), uploads with progress and ingestion
// states, and the access dialog (grants, classification, delete) for documents you manage.
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

const tbody = document.getElementById("documents");
const count = document.getElementById("library-count");
const empty = document.getElementById("library-empty");
const libraryError = document.getElementById("library-error");
const filters = document.getElementById("filters");
const uploads = document.getElementById("uploads");
const dropzone = document.getElementById("dropzone");
const fileInput = document.getElementById("files");
const dialog = document.getElementById("access");
let pollTimer = null;
let watched = new Map(); // doc id -> upload list item to update

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

function row(doc) {
  const name = el("td", {},
    el("span", { class: "doc-title" }, doc.title || doc.filename),
    doc.title ? el("span", { class: "doc-file" }, doc.filename) : null);
  const actions = el("td", { class: "actions" });
  if (doc.state === "indexed") {
    actions.append(el("a", { href: `/api/documents/${encodeURIComponent(doc.id)}/download`, class: "button", download: "" }, "Download"));
  }
  if (doc.can_manage) {
    actions.append(el("button", { type: "button", onclick: () => openAccess(doc) }, "Access"));
  }
  return el("tr", { dataset: { id: doc.id } }, name,
    el("td", {}, doc.classification), stateCell(doc), el("td", {}, when(doc.created_at)), actions);
}

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
  for (const doc of result.documents) updateUpload(doc);
  const busy = result.documents.some((d) => BUSY.has(d.state)) || [...watched.values()].some((w) => !w.done);
  clearTimeout(pollTimer);
  if (busy) pollTimer = setTimeout(loadLibrary, 1500);
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

// -- uploads ----------------------------------------------------------------------------

function updateUpload(doc) {
  const item = watched.get(doc.id);
  if (!item) return;
  const label = STATE_LABELS[doc.state] || doc.state;
  if (doc.state === "failed") {
    item.status.textContent = `Failed: ${doc.error_reason || "the file could not be read."}`;
    item.li.classList.add("failed");
    item.done = true;
  } else if (doc.state === "indexed") {
    item.status.textContent = "Indexed: ready for questions.";
    item.li.classList.add("ok");
    item.done = true;
  } else if (doc.state === "embedding" && doc.chunks_total) {
    item.status.textContent = `${label}: ${doc.chunks_done} of ${doc.chunks_total} passages`;
  } else {
    item.status.textContent = `${label}…`;
  }
  item.bar.max = doc.chunks_total || 1;
  item.bar.value = doc.state === "indexed" ? item.bar.max : doc.chunks_done || 0;
}

function uploadOne(file) {
  const bar = el("progress", { max: file.size || 1, value: 0, "aria-label": `Upload of ${file.name}` });
  const status = el("span", { class: "upload-status" }, "Uploading…");
  const li = el("li", { class: "upload-item" }, el("span", { class: "upload-name" }, file.name), bar, status);
  uploads.prepend(li);
  const form = new FormData();
  form.append("file", file, file.name);
  const classification = document.getElementById("upload-classification").value;
  if (classification) form.append("classification", classification);
  for (const g of document.getElementById("upload-grants").value.split(",")) {
    if (g.trim()) form.append("grants", g.trim());
  }
  // XMLHttpRequest, not fetch: only it reports upload progress.
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/documents");
  for (const [key, value] of Object.entries(headers("POST"))) xhr.setRequestHeader(key, value);
  xhr.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) {
      bar.max = event.total;
      bar.value = event.loaded;
      status.textContent = `Uploading: ${bytes(event.loaded)} of ${bytes(event.total)}`;
    }
  });
  xhr.addEventListener("load", async () => {
    if (xhr.status === 202 || xhr.status === 200) {
      const doc = JSON.parse(xhr.responseText);
      watched.set(doc.id, { li, bar, status, done: false });
      updateUpload(doc);
      loadLibrary();
    } else {
      const error = await errorFrom(new Response(xhr.responseText, { status: xhr.status, headers: { "Content-Type": "application/json" } }));
      status.textContent = `Not uploaded: ${error.message}`;
      li.classList.add("failed");
    }
  });
  xhr.addEventListener("error", () => {
    status.textContent = "Not uploaded: the connection failed. Check the network and try again.";
    li.classList.add("failed");
  });
  xhr.send(form);
}

function uploadAll(files) {
  for (const file of files) uploadOne(file);
}

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
