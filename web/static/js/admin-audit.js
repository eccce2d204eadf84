// Admin: audit log search (filters, paging) and export (direct, or after a second admin's approval).
import { api, clear, el, errorFrom, headers, labelEl, showError, ticksEl, timeEl } from "./api.js";

const PAGE = 25;
const form = document.getElementById("audit-filters");
const tbody = document.getElementById("audit-entries");
const older = document.getElementById("audit-more");
const newer = document.getElementById("audit-newer");
const range = document.getElementById("audit-range");
const errorBox = document.getElementById("audit-error");
const me = document.body.dataset.username;
// Keyset paging: the cursor of each page shown so far (null: the newest page).
let cursors = [null];
let nextCursor = null;

function filters() {
  const out = {};
  for (const [key, value] of new FormData(form)) {
    if (!value) continue;
    out[key] = key === "from" || key === "to" ? new Date(value).toISOString() : value.trim();
  }
  return out;
}

// Details as labelled fields, ids already replaced by names the server lets this admin see.
function details(entry) {
  const fields = entry.fields || [];
  if (!fields.length) return null;
  return el("dl", { class: "fields" }, fields.flatMap((f) => [
    el("dt", {}, f.label),
    el("dd", {}, f.value.length > 200 ? `${f.value.slice(0, 200)}…` : f.value),
  ]));
}

function onWhat(e) {
  if (!e.target) return "";
  const name = e.target_name || e.target;
  const label = labelEl({ text: name, href: e.target_href });
  const only = el("button", { type: "button", class: "link-like", "aria-label": `Only entries on ${name}`, onclick: () => {
    document.getElementById("a-target").value = e.target;
    search();
  } }, "only these");
  return [label, " ", only];
}

async function search(page = 0) {
  errorBox.hidden = true;
  if (page === 0) cursors = [null];
  const params = new URLSearchParams({ ...filters(), limit: String(PAGE) });
  const cursor = cursors[page];
  if (cursor !== null && cursor !== undefined) params.set("cursor", String(cursor));
  let result;
  try {
    result = await api("GET", `/api/admin/audit?${params}`);
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  clear(tbody);
  for (const e of result.entries) {
    const who = e.actor_href ? labelEl({ text: e.actor_name || e.actor, href: e.actor_href }) : (e.actor_name || e.actor);
    tbody.append(el("tr", { dataset: { action: e.action } },
      el("td", { dataset: { label: "When" } }, timeEl(e.ts)),
      el("td", { dataset: { label: "Who" } }, who, e.client ? el("span", { class: "hint" }, ` from ${e.client}`) : null),
      el("td", { dataset: { label: "Action" } }, el("code", {}, e.action)),
      el("td", { dataset: { label: "On what" } }, onWhat(e)),
      el("td", { dataset: { label: "Outcome" } }, e.outcome),
      el("td", { class: "details", dataset: { label: "Details" } }, details(e))));
  }
  nextCursor = result.next_cursor;
  cursors = cursors.slice(0, page + 1);
  if (nextCursor !== null && nextCursor !== undefined) cursors.push(nextCursor);
  older.disabled = nextCursor === null || nextCursor === undefined;
  newer.disabled = page === 0;
  older.dataset.page = String(page + 1);
  newer.dataset.page = String(page - 1);
  const first = page * PAGE + 1;
  range.textContent = result.entries.length ? `Entries ${first}–${first + result.entries.length - 1}, newest first` : "";
  document.getElementById("audit-empty").hidden = result.entries.length > 0;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
form.addEventListener("reset", () => setTimeout(() => search(), 0));
older.addEventListener("click", () => search(Number(older.dataset.page)));
newer.addEventListener("click", () => search(Math.max(0, Number(newer.dataset.page))));

const initial = new URLSearchParams(location.search);
for (const key of ["actor", "action", "target"]) {
  if (initial.get(key)) document.getElementById(`a-${key}`).value = initial.get(key);
}

// -- export -----------------------------------------------------------------------------

const exportError = document.getElementById("export-error");
const exportNotice = document.getElementById("export-notice");

async function download(url) {
  const response = await fetch(url, { headers: headers("GET"), credentials: "same-origin" });
  if (!response.ok) throw await errorFrom(response);
  const blob = await response.blob();
  const name = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "");
  const link = el("a", { href: URL.createObjectURL(blob), download: name ? name[1] : "audit-export" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function loadRequests() {
  let rows = [];
  try {
    rows = await api("GET", "/api/admin/approvals");
  } catch {
    return;
  }
  const list = clear(document.getElementById("export-requests"));
  for (const r of rows.filter((x) => x.kind === "audit_export" && x.requester === me)) {
    const item = el("li", {}, `Export (${(r.params && r.params.format) || "jsonl"}) asked `, timeEl(r.created_at), `: ${r.status}${r.executed_at ? ", downloaded" : ""}`);
    if (r.status === "approved" && !r.executed_at) {
      item.append(" ", el("button", { type: "button", class: "primary", onclick: async () => {
        try {
          await download(`/api/admin/audit/export?approval=${encodeURIComponent(r.id)}`);
          loadRequests();
        } catch (error) {
          showError(exportError, error);
        }
      } }, "Download"));
    }
    list.append(item);
  }
}

document.getElementById("export-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  exportError.hidden = true;
  exportNotice.hidden = true;
  const format = document.getElementById("export-format").value;
  const reason = document.getElementById("export-reason").value.trim();
  const f = filters();
  try {
    await download(`/api/admin/audit/export?${new URLSearchParams({ ...f, format })}`);
    return;
  } catch (error) {
    if (error.status !== 403 || !/approval/i.test(error.message)) {
      showError(exportError, error);
      return;
    }
  }
  try {
    const body = { format, reason: reason || null, actor: f.actor || null, action: f.action || null,
      target: f.target || null, outcome: f.outcome || null, since: f.from || null, until: f.to || null };
    const held = await api("POST", "/api/admin/audit/export-requests", body);
    clear(exportNotice).append(ticksEl(`Exports need a second admin's approval: your request is in the approvals inbox. Download it here once approved.${held.waiting_note ? ` ${held.waiting_note}` : ""}`));
    exportNotice.hidden = false;
    loadRequests();
  } catch (error) {
    showError(exportError, error);
  }
});

search();
loadRequests();
