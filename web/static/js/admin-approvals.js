// Admin: the approvals inbox — approve or reject another admin's held request.
import { api, clear, el, showError, toast, when } from "./api.js";

const tbody = document.getElementById("approvals");
const errorBox = document.getElementById("approvals-error");
const filter = document.getElementById("approval-status");

function describe(r) {
  const p = r.params || {};
  if (r.kind === "grant") return `Grant ${p.level || "read"} on document ${r.doc_id} to ${p.principal}`;
  if (r.kind === "classify") return `Reclassify document ${r.doc_id} as ${p.classification}`;
  return `${r.kind} on document ${r.doc_id}`;
}

async function decide(r, verb) {
  errorBox.hidden = true;
  try {
    await api("POST", `/api/approvals/${r.id}/${verb}`);
    toast(verb === "approve" ? "Approved: the action ran." : "Rejected.");
    load();
  } catch (error) {
    showError(errorBox, error);
  }
}

async function load() {
  const status = filter.value;
  let rows;
  try {
    rows = await api("GET", `/api/approvals${status ? `?status=${status}` : ""}`);
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  clear(tbody);
  document.getElementById("approvals-empty").hidden = rows.length > 0;
  for (const r of rows) {
    const actions = el("td", { class: "actions" });
    if (r.status === "pending") {
      actions.append(
        el("button", { type: "button", class: "primary", onclick: () => decide(r, "approve") }, "Approve"),
        el("button", { type: "button", onclick: () => decide(r, "reject") }, "Reject"));
    }
    tbody.append(el("tr", {},
      el("td", {}, describe(r), r.reason ? el("p", { class: "hint" }, `Reason: ${r.reason}`) : null),
      el("td", {}, r.requester),
      el("td", {}, r.status, r.decided_by ? ` by ${r.decided_by}` : ""),
      el("td", {}, when(r.expires_at)),
      actions));
  }
}

filter.addEventListener("change", load);
load();
