// Admin: the approvals inbox — approve (runs once) or reject another admin's held action.
import { api, clear, el, showError, toast, when } from "./api.js";

const tbody = document.getElementById("approvals");
const errorBox = document.getElementById("approvals-error");
const filter = document.getElementById("approval-status");
const me = document.body.dataset.username;

const KINDS = {
  grant: "Grant access",
  classify: "Change classification",
  audit_export: "Export the audit log",
  lift_legal_hold: "Lift a legal hold",
  bulk_delete: "Delete documents",
  make_admin: "Make an admin",
  shorten_retention: "Keep data for less time",
};

function describe(r) {
  const details = Object.entries(r.params || {})
    .map(([key, value]) => `${key}: ${typeof value === "object" ? JSON.stringify(value) : value}`)
    .join("; ");
  return [
    el("strong", {}, KINDS[r.kind] || r.kind),
    r.target || r.doc_id ? el("span", { class: "hint" }, ` on ${r.target || `doc:${r.doc_id}`}`) : null,
    details ? el("p", { class: "hint" }, details) : null,
    r.reason ? el("p", { class: "hint" }, `Reason: ${r.reason}`) : null,
  ];
}

async function decide(r, verb) {
  errorBox.hidden = true;
  try {
    await api("POST", `/api/admin/approvals/${r.id}/${verb}`);
    toast(verb === "approve" ? "Approved: the action ran." : "Rejected: nothing ran.");
    load();
  } catch (error) {
    showError(errorBox, error);
  }
}

async function load() {
  const status = filter.value;
  let rows;
  try {
    rows = await api("GET", `/api/admin/approvals${status ? `?status=${status}` : ""}`);
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  clear(tbody);
  document.getElementById("approvals-empty").hidden = rows.length > 0;
  for (const r of rows) {
    const actions = el("td", { class: "actions" });
    if (r.status === "pending") {
      if (r.requester !== me) {
        actions.append(el("button", { type: "button", class: "primary", onclick: () => decide(r, "approve") }, "Approve"));
      }
      actions.append(el("button", { type: "button", onclick: () => decide(r, "reject") }, r.requester === me ? "Withdraw" : "Reject"));
    }
    tbody.append(el("tr", {},
      el("td", {}, describe(r)),
      el("td", {}, r.requester, el("br"), el("span", { class: "hint" }, when(r.created_at))),
      el("td", {}, r.status, r.decided_by ? ` by ${r.decided_by}` : ""),
      el("td", {}, when(r.expires_at)),
      actions));
  }
}

filter.addEventListener("change", load);
load();
