// Admin: audit log search (filters, paging) and export (direct, or after a second admin's approval).
import { api, clear, el, errorFrom, headers, showError, when } from "./api.js";

const form = document.getElementById("audit-filters");
const tbody = document.getElementById("audit-entries");
const more = document.getElementById("audit-more");
const errorBox = document.getElementById("audit-error");
const me = document.body.dataset.username;
let cursor = null;

function filters() {
  const out = {};
  for (const [key, value] of new FormData(form)) {
    if (!value) continue;
    out[key] = key === "from" || key === "to" ? new Date(value).toISOString() : value.trim();
  }
  return out;
}

function details(entry) {
  const d = entry.details || {};
  const parts = [];
  for (const [key, value] of Object.entries(d)) {
    const text = typeof value === "object" ? JSON.stringify(value) : String(value);
    parts.push(`${key}: ${text.length > 160 ? `${text.slice(0, 160)}…` : text}`);
  }
  return parts.join("; ");
}

async function search(append = false) {
  errorBox.hidden = true;
  const params = new URLSearchParams({ ...filters(), limit: "100" });
  if (append && cursor !== null) params.set("cursor", String(cursor));
  let page;
  try {
    page = await api("GET", `/api/admin/audit?${params}`);
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  if (!append) clear(tbody);
  for (const e of page.entries) {
    tbody.append(el("tr", { dataset: { action: e.action } },
      el("td", {}, when(e.ts)),
      el("td", {}, e.actor_name || e.actor, e.client ? el("span", { class: "hint" }, ` from ${e.client}`) : null),
      el("td", {}, el("code", {}, e.action)),
      el("td", {}, e.target_name || e.target || ""),
      el("td", {}, e.outcome),
      el("td", { class: "details" }, details(e))));
  }
  cursor = page.next_cursor;
  more.hidden = cursor === null || cursor === undefined;
  document.getElementById("audit-empty").hidden = tbody.children.length > 0;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
form.addEventListener("reset", () => setTimeout(() => search(), 0));
more.addEventListener("click", () => search(true));

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
    const item = el("li", {}, `Export (${(r.params && r.params.format) || "jsonl"}) asked ${when(r.created_at)}: ${r.status}${r.executed_at ? ", downloaded" : ""}`);
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
    await api("POST", "/api/admin/audit/export-requests", body);
    exportNotice.textContent = "Exports need a second admin's approval: your request is in the approvals inbox. Download it here once approved.";
    exportNotice.hidden = false;
    loadRequests();
  } catch (error) {
    showError(exportError, error);
  }
});

search();
loadRequests();
