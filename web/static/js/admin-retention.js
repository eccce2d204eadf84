// Admin: retention policies (override or reset) and legal hold on a document.
import { api, clear, el, showError, timeEl, toast } from "./api.js";

const LABELS = {
  public_days: "Public documents",
  internal_days: "Internal documents",
  confidential_days: "Confidential documents",
  personal_days: "Personal documents",
  chat_history_days: "Chat history",
  session_days: "Expired sign-in sessions",
  audit_log_days: "Audit log",
};
const policyError = document.getElementById("policy-error");
const tbody = document.getElementById("policies");
let current = null;

function label(key) {
  return LABELS[key] || key.replace(/_/g, " ");
}

function render(policy) {
  current = policy;
  clear(tbody);
  const overridden = new Map(policy.overrides.map((o) => [o.key, o]));
  for (const [key, value] of Object.entries(policy.effective)) {
    const input = el("input", { type: "number", min: 0, step: 1, name: key, id: `p-${key}`, class: "days" });
    input.value = value === null ? "" : String(value);
    const o = overridden.get(key);
    const reset = o
      ? el("button", { type: "button", onclick: () => save({ reset: [key] }) }, "Reset to settings file")
      : null;
    tbody.append(el("tr", {},
      el("td", {}, el("label", { for: `p-${key}` }, label(key)),
        o ? el("p", { class: "hint" }, `Set by ${o.updated_by_name || o.updated_by}, `, timeEl(o.updated_at)) : null),
      el("td", { dataset: { label: "Days in force" } }, input),
      el("td", { dataset: { label: "Settings file" } }, policy.settings[key] === null ? "forever" : String(policy.settings[key])),
      el("td", {}, reset)));
  }
}

async function save(body) {
  policyError.hidden = true;
  try {
    const result = await api("PUT", "/api/admin/retention", body);
    if (result.status === "approval_required") {
      toast("Keeping things for less time needs a second admin: the change is in the approvals inbox.");
      render(await api("GET", "/api/admin/retention"));
      return;
    }
    render(result);
    toast("Retention policies saved; the retention job applies them at its next run.");
  } catch (error) {
    showError(policyError, error);
  }
}

document.getElementById("policy-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const set = {};
  for (const input of tbody.querySelectorAll("input.days")) {
    const value = input.value.trim() === "" ? null : Number(input.value);
    if (value !== current.effective[input.name]) set[input.name] = value;
  }
  if (Object.keys(set).length === 0) {
    toast("Nothing changed.");
    return;
  }
  save({ set });
});

// -- legal hold -------------------------------------------------------------------------

const holdError = document.getElementById("hold-error");
const picker = document.getElementById("hold-doc");
const finder = document.getElementById("hold-filter");
let docId = null;
let candidates = [];

function labelOf(id) {
  const c = candidates.find((d) => d.id === id);
  return c ? c.label : "This document";
}

function showHold(state) {
  document.getElementById("hold-state").hidden = false;
  const summary = clear(document.getElementById("hold-summary"));
  const name = labelOf(state.doc_id);
  summary.append(el("strong", {}, name.charAt(0).toUpperCase() + name.slice(1)), ": ");
  if (state.legal_hold) {
    summary.append("under legal hold since ", timeEl(state.held_since), state.held_by ? ` (by ${state.held_by_name || state.held_by})` : "", ".");
  } else {
    summary.append("not under legal hold.");
  }
  if (state.retain_until) summary.append(" Kept until ", timeEl(state.retain_until), " at least.");
  else summary.append(" Kept for its classification's period.");
  document.getElementById("hold-place").hidden = state.legal_hold;
  document.getElementById("hold-lift").hidden = !state.legal_hold;
  const c = candidates.find((d) => d.id === state.doc_id);
  if (c && c.legal_hold !== state.legal_hold) {
    c.legal_hold = state.legal_hold;
    fillPicker();
  }
}

function fillPicker() {
  const needle = finder.value.trim().toLowerCase();
  const shown = candidates.filter((d) => !needle || d.label.toLowerCase().includes(needle)
    || d.owner.toLowerCase().includes(needle) || d.classification.includes(needle));
  clear(picker);
  const none = candidates.length ? "No document matches" : "No documents on the appliance yet";
  picker.append(el("option", { value: "" }, shown.length ? `Choose one of ${shown.length} documents` : none));
  for (const d of shown) {
    picker.append(el("option", { value: d.id, selected: d.id === docId }, `${d.label}${d.legal_hold ? " (on hold)" : ""}`));
  }
}

async function pick(id) {
  holdError.hidden = true;
  docId = id || null;
  if (!docId) {
    document.getElementById("hold-state").hidden = true;
    return;
  }
  try {
    showHold(await api("GET", `/api/documents/${encodeURIComponent(docId)}/retention`));
  } catch (error) {
    document.getElementById("hold-state").hidden = true;
    showError(holdError, error);
  }
}

async function loadCandidates() {
  try {
    candidates = await api("GET", "/api/admin/retention/documents");
  } catch (error) {
    showError(holdError, error);
    return;
  }
  const wanted = new URLSearchParams(location.search).get("doc");
  if (wanted && candidates.some((d) => d.id === wanted)) docId = wanted;
  fillPicker();
  if (docId) pick(docId);
}

picker.addEventListener("change", () => pick(picker.value));
finder.addEventListener("input", fillPicker);
document.getElementById("hold-lookup").addEventListener("submit", (event) => event.preventDefault());

document.getElementById("hold-place").addEventListener("submit", async (event) => {
  event.preventDefault();
  holdError.hidden = true;
  try {
    const reason = document.getElementById("hold-reason").value.trim();
    showHold(await api("POST", `/api/admin/documents/${encodeURIComponent(docId)}/legal-hold`, { reason: reason || null }));
    toast("Legal hold placed.");
  } catch (error) {
    showError(holdError, error);
  }
});

document.getElementById("hold-lift").addEventListener("click", async () => {
  holdError.hidden = true;
  try {
    const result = await api("DELETE", `/api/admin/documents/${encodeURIComponent(docId)}/legal-hold`);
    if (result.status === "approval_required") {
      toast("Lifting the hold needs a second admin: it is in the approvals inbox.");
    } else {
      showHold(result);
      toast("Legal hold lifted.");
    }
  } catch (error) {
    showError(holdError, error);
  }
});

loadCandidates();

try {
  render(await api("GET", "/api/admin/retention"));
} catch (error) {
  showError(policyError, error);
}
